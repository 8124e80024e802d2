"""Values the wire allows but the cloud cannot keep are refused at the door; whatever still
makes the cloud fail costs one device's input, is kept in quarantine, and can be replayed.

Runs on SQLite and PostgreSQL. The poisoned-row test is SQLite's own: there a seq near 2**63
overflowed the gap detector's arithmetic (PostgreSQL widens it to numeric instead).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

import boilertwin
from cloud import quarantine
from cloud.db import transaction
from cloud.ingest import Outcome
from cloud.models import IngestCounter, Quarantine, Sample, Twin, Uplink
from cloud.twin import gaps
from cloud.twin.gaps import detect_gaps
from protocols.messages import EventKind, Reading, TelemetryBatch
from tests.cloud.helpers import T0
from tests.cloud.ingest_world import DEV, OTHER, World, open_world

NEAR_2_63 = 2**63 - 100
"""The attack's seq: legal under the uint64 contract, past what SQL can add to."""


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    with open_world(db_url) as w:
        yield w


def counted(world: World, outcome: str, reason: str) -> int:
    world.ingest.flush_counters()
    with world.sessions() as session:
        row = session.get(IngestCounter, (outcome, reason))
    return row.count if row else 0


def holds(world: World) -> list[Quarantine]:
    with world.sessions() as session:
        return quarantine.listing(session)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", NEAR_2_63),
        ("seq", 2**64 - 1),
        ("seq", 2**53),
        ("ts", 2**63),
        ("epoch", 2**63 + 1),
    ],
)
def test_header_values_past_the_storable_range_are_refused(
    world: World, field: str, value: int
) -> None:
    header = world.dev.next() | {field: value}
    outcome = world.send(TelemetryBatch(**header, readings=(Reading("flow_temp", T0, 60.0),)))
    assert outcome.outcome == "rejected" and outcome.reason == "out_of_range"
    assert world.count(Uplink) == 0 and world.twin() is None
    # Everyone else is still served.
    assert world.send(world.other.data([("flow_temp", T0, 50.0)])).outcome == "accepted"
    assert counted(world, "rejected", "out_of_range") == 1
    assert holds(world) == []


def test_the_largest_storable_seq_is_accepted(world: World) -> None:
    header = world.dev.next(seq=2**53 - 1) | {"epoch": 2**53 - 1, "ts": T0}
    outcome = world.send(TelemetryBatch(**header, readings=(Reading("flow_temp", T0, 60.0),)))
    assert outcome == Outcome("accepted", "data", DEV, 2**53 - 1)


def test_a_reading_timestamp_past_the_range_is_refused(world: World) -> None:
    batch = world.dev.data([("flow_temp", T0, 60.0), ("return_temp", 2**63, 40.0)])
    assert world.send(batch).reason == "out_of_range"
    assert world.count(Sample) == 0


def test_text_with_a_nul_character_is_malformed_not_an_internal_error(world: World) -> None:
    outcome = world.send(world.dev.data([("mode", T0, "eco\x00")]))
    assert (outcome.outcome, outcome.reason) == ("rejected", "malformed")
    event = world.dev.event(EventKind.FAULT, {"fault": "F\x0028", "fault_code": 28})
    assert world.send(event).reason == "malformed"
    assert holds(world) == [] and world.count(Uplink) == 0


def test_status_values_that_are_not_codes_do_not_reach_the_twin(world: World) -> None:
    outcome = world.send(world.dev.data([("status", T0, 1e300), ("fault_code", T0, -4)]))
    assert outcome.outcome == "accepted"
    twin = world.twin()
    assert twin is not None and twin.status is None and twin.fault_code is None
    assert world.count(Sample) == 2  # the readings themselves are kept as they came


def test_an_unexpected_failure_quarantines_the_message_and_replays_once_fixed(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def bug(*_: Any) -> None:
        raise KeyError("a bug nobody foresaw")

    monkeypatch.setattr("cloud.twin.update.alarms.apply_event", bug)
    event = world.dev.event(EventKind.LOCKOUT, {"fault": "F28", "fault_code": 28})
    payload = world.dev.seal(event)
    outcome = world.ingest.handle(f"bt/v1/{DEV}/event", payload)
    assert (outcome.outcome, outcome.reason, outcome.device_id) == (
        "rejected",
        "internal_error",
        DEV,
    )
    assert world.count(Uplink) == 0  # rolled back: nothing half-applied
    assert world.send(world.other.data([("flow_temp", T0, 50.0)])).outcome == "accepted"
    (held,) = holds(world)
    assert (held.stage, held.device_id, held.topic, held.payload) == (
        "ingest",
        DEV,
        f"bt/v1/{DEV}/event",
        payload,
    )
    assert held.error == "KeyError: 'a bug nobody foresaw'"

    monkeypatch.undo()  # the fix is deployed
    url = str(world.sessions.kw["bind"].url.render_as_string(hide_password=False))
    run = CliRunner().invoke(
        boilertwin.app, ["cloud", "quarantine", "release", str(held.id), "--db", url]
    )
    assert run.exit_code == 0, run.output
    assert f"#{held.id} replayed: accepted/event" in run.output
    assert world.count(Uplink) == 1
    again = CliRunner().invoke(
        boilertwin.app, ["cloud", "quarantine", "release", str(held.id), "--db", url]
    )
    assert again.exit_code == 1 and "released already" in again.output
    assert holds(world) == []


@pytest.fixture
def poisoned(world: World, db_url: str) -> Iterator[World]:
    """DEV has seqs 1..3 and, stored before ingest bounded seqs, one near 2**63."""
    for _ in range(3):
        assert world.send(world.dev.data([("flow_temp", T0, 60.0)])).outcome == "accepted"
    with transaction(world.sessions) as session:
        session.add(
            Uplink(device_id=DEV, seq=NEAR_2_63, epoch=1, kind="data", ts_ms=T0, received_ms=T0)
        )
        twin = session.get(Twin, DEV)
        assert twin is not None
        twin.max_seq = NEAR_2_63
    yield world


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_poisoned_device_is_quarantined_and_the_others_still_get_their_gaps(
    poisoned: World,
) -> None:
    world = poisoned
    world.send(world.other.data([("flow_temp", T0, 50.0)]))
    world.send(world.other.data([("flow_temp", T0, 50.0)], seq=5))  # 2..4 missing
    later = T0 + 3_600_000
    found = detect_gaps(world.sessions, later, 0)
    assert [(g.device_id, g.first_seq, g.last_seq) for g in found] == [(OTHER, 2, 4)]
    (held,) = holds(world)
    assert (held.stage, held.device_id) == ("gaps", DEV)
    assert held.error.startswith("OverflowError")
    # Held devices are skipped: the next rounds (and the next process) do not fail again.
    assert detect_gaps(world.sessions, later + 1, 0) == []
    assert len(holds(world)) == 1


def test_one_device_failing_gap_detection_does_not_stop_the_sweep(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = gaps._detect_device

    def fails_for_dev(session: Any, twin: Twin, now_ms: int, grace_ms: int) -> Any:
        if twin.device_id == DEV:
            raise ArithmeticError("boom")
        return real(session, twin, now_ms, grace_ms)

    monkeypatch.setattr(gaps, "_detect_device", fails_for_dev)
    for device in (world.dev, world.other):
        world.send(device.data([("flow_temp", T0, 50.0)]))
        world.send(device.data([("flow_temp", T0, 50.0)], seq=4))
    found = detect_gaps(world.sessions, T0 + 3_600_000, 0)
    assert [(g.device_id, g.first_seq, g.last_seq) for g in found] == [(OTHER, 2, 3)]
    with world.sessions() as session:
        rows = session.scalar(select(func.count()).select_from(Quarantine))
        twin = session.get(Twin, DEV)
    assert rows == 1
    assert twin is not None and twin.contiguous_seq == 1  # DEV's round was rolled back
