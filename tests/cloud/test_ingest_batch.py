"""Batched ingest (group commit) on a real database: a batch stores exactly what storing its
messages one by one would, duplicates and all, and a bug costs only its own message."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloud.ingest import Message, Outcome
from cloud.models import Alarm, Sample, ThreadEvent, TwinValue, Uplink
from protocols.messages import Ack, AckState, EventKind, UplinkMessage
from protocols.reference import BoilerStatus
from tests.cloud.conftest import _admin_url
from tests.cloud.helpers import T0, TestDevice, topic_of
from tests.cloud.ingest_world import DEV, OTHER, World, open_world

LOCKOUT = {"status": 7, "fault_code": 28, "fault": "F28"}
CLEARED = {"status": 1, "fault_code": 28, "previous": 7, "change": "lockout_cleared"}
STATUSES = (int(BoilerStatus.RUNNING), int(BoilerStatus.LOCKOUT), int(BoilerStatus.STANDBY))


@pytest.fixture
def worlds(db_url: str, db_templates: Any, tmp_path: Path) -> Iterator[tuple[World, World]]:
    """Two worlds with the same devices (same keys) on two empty databases."""
    if db_url.startswith("sqlite"):
        second, name = db_templates.sqlite(tmp_path / "second.db"), None
    else:
        second, name = db_templates.postgresql(_admin_url())
    try:
        with open_world(db_url) as one, open_world(second) as two:
            two.dev.key, two.other.key = one.dev.key, one.other.key
            _register_same_keys(one, two)
            yield one, two
    finally:
        if name is not None:
            db_templates.drop(_admin_url(), name)


def _register_same_keys(one: World, two: World) -> None:
    from cloud.models import DeviceKey

    with one.sessions() as source, two.sessions() as target, target.begin():
        for key in source.scalars(select(DeviceKey)):
            row = target.scalars(select(DeviceKey).where(DeviceKey.device_id == key.device_id))
            row.one().public_key = key.public_key
    two.ingest.forget_keys()


def _stream(rng: random.Random, dev: TestDevice, other: TestDevice) -> list[tuple[str, bytes]]:
    """A mixed stream from two devices: telemetry with status and fault changes (in and out
    of order), alarm events, births, health, and copies of messages already sent."""
    sent: list[tuple[str, bytes]] = []
    for _ in range(160):
        device = rng.choice((dev, other))
        roll = rng.random()
        message: UplinkMessage
        if roll < 0.88:
            ts = device.ts + device.seq + rng.randint(-40, 40)  # some readings older
            readings = [("flow_temp", ts, rng.uniform(30, 80)), ("dhw_temp", ts - 1, 48.5)]
            if rng.random() < 0.5:
                readings.append(("status", ts, rng.choice(STATUSES)))
            if rng.random() < 0.3:
                readings.append(("fault_code", ts, rng.choice((0, 28))))
            message = device.data(readings)
        elif roll < 0.93:
            message = device.event(EventKind.LOCKOUT, LOCKOUT)
        elif roll < 0.96:
            message = device.event(EventKind.STATE_CHANGE, CLEARED)
        elif roll < 0.98:
            message = device.birth()
        else:
            message = device.health()
        sent.append((topic_of(message), device.seal(message)))
        if sent and rng.random() < 0.15:
            sent.append(rng.choice(sent))  # a copy: redelivery or a device resend
    rng.shuffle(sent[40:80])  # a stretch out of order, as after a reconnect
    return sent


def _state(world: World) -> dict[str, Any]:
    with world.sessions() as session:
        alarms = [
            (a.device_id, a.kind, a.code, a.start_ms, a.end_ms, a.seq)
            for a in session.scalars(select(Alarm).order_by(Alarm.device_id, Alarm.start_ms))
        ]
        values = sorted(
            (v.device_id, v.point, v.ts_ms, v.num, v.seq)
            for v in session.scalars(select(TwinValue))
        )
        samples = sorted(
            (s.device_id, s.point, s.ts_ms, s.num, s.seq) for s in session.scalars(select(Sample))
        )
        thread = sorted(
            (e.device_id, e.kind, e.ts_ms, str(e.data))
            for e in session.scalars(select(ThreadEvent))
        )
    return {
        "twins": [world.snapshot(DEV), world.snapshot(OTHER)],
        "alarms": alarms,
        "values": values,
        "samples": samples,
        "thread": thread,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_batch_stores_what_one_by_one_would(worlds: tuple[World, World], seed: int) -> None:
    one, batched = worlds
    rng = random.Random(seed)
    stream = _stream(rng, one.dev, one.other)
    singly = [one.ingest.handle(topic, payload) for topic, payload in stream]
    together: list[Outcome] = []
    i = 0
    while i < len(stream):
        size = rng.randint(1, 12)
        chunk = [Message(topic, payload) for topic, payload in stream[i : i + size]]
        together += batched.ingest.handle_many(chunk)
        i += size
    assert together == singly
    assert {o.outcome for o in singly} == {"accepted", "duplicate"}
    assert _state(batched) == _state(one)
    assert one.ingest.counts() == batched.ingest.counts()


def test_copies_within_one_batch_are_duplicates(world: World) -> None:
    d = world.dev
    data = d.data([("flow_temp", T0, 50.0)])
    payload = d.seal(data)
    outcomes = world.ingest.handle_many([Message(topic_of(data), payload)] * 3)
    assert [o.outcome for o in outcomes] == ["accepted", "duplicate", "duplicate"]
    assert world.count(Uplink) == 1 and world.count(Sample) == 1
    world.ingest.flush_counters()
    twin = world.twin()
    assert twin is not None and twin.duplicates == 2 and twin.received == 1


def test_a_bug_costs_only_its_own_message(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> str:
        raise RuntimeError("bug")

    monkeypatch.setattr("cloud.twin.update.apply_ack", broken)
    d = world.dev
    first = d.data([("flow_temp", T0, 50.0)])
    ack = Ack(
        **d.next(), command_id="00000000-0000-4000-8000-000000000001", state=AckState.DELIVERED
    )
    batch: list[UplinkMessage] = [first, ack, d.data([("flow_temp", T0 + 5, 51.0)])]
    outcomes = world.ingest.handle_many([Message(topic_of(m), d.seal(m)) for m in batch])
    assert [(o.outcome, o.reason) for o in outcomes] == [
        ("accepted", "data"),
        ("rejected", "internal_error"),
        ("accepted", "data"),
    ]
    with world.sessions() as session:
        assert sorted(session.scalars(select(Uplink.seq))) == [1, 3]


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    with open_world(db_url) as w:
        yield w
