"""Ingest on a real database (SQLite and PostgreSQL): verify, de-duplicate, apply, account."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from cloud.db import make_engine, session_factory, transaction
from cloud.ingest import Ingest, IngestUnavailable, Outcome
from cloud.models import (
    Alarm,
    DeviceKey,
    Gap,
    IngestCounter,
    Sample,
    ThreadEvent,
    Twin,
    TwinValue,
    Uplink,
)
from cloud.settings import CloudSettings
from cloud.twin.gaps import detect_gaps
from protocols.cose import MAX_ENVELOPE_BYTES, generate_private_key, seal
from protocols.messages import Ack, AckState, EventKind, TelemetryBatch
from protocols.reference import BoilerStatus
from tests.clocks import FakeMsClock as FakeClock
from tests.cloud.helpers import T0, add_key, revoke, state_topic, topic_of
from tests.cloud.ingest_world import DEV, OTHER, World, open_world

GRACE_MS = 60_000


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    with open_world(db_url) as w:
        yield w


def test_accepted_telemetry_updates_the_twin(world: World) -> None:
    batch = world.dev.data(
        [("flow_temp", T0 + 1, 61.5), ("status", T0 + 1, 4), ("mode", T0, "eco")]
    )
    world.clock.advance(500)
    outcome = world.send(batch)
    assert outcome == Outcome("accepted", "data", DEV, 1)
    twin = world.twin()
    assert twin is not None
    assert (twin.received, twin.max_seq, twin.contiguous_seq) == (1, 1, 1)
    assert twin.last_seen_ms == T0 + 500 and twin.status == 4 and twin.version == 2
    with world.sessions() as session:
        values = {v.point: (v.num, v.text, v.ts_ms) for v in session.scalars(select(TwinValue))}
        uplink = session.get(Uplink, (DEV, 1))
    assert values == {
        "flow_temp": (61.5, None, T0 + 1),
        "status": (4.0, None, T0 + 1),
        "mode": (None, "eco", T0),
    }
    assert uplink is not None and uplink.kind == "data" and uplink.received_ms == T0 + 500
    assert world.count(Sample) == 3


def test_duplicate_changes_nothing_and_is_counted(world: World) -> None:
    batch = world.dev.data([("flow_temp", T0, 60.0)])
    envelope = world.dev.seal(batch)
    assert world.ingest.handle(topic_of(batch), envelope).outcome == "accepted"
    before = world.snapshot()
    for _ in range(3):
        assert world.ingest.handle(topic_of(batch), envelope) == Outcome(
            "duplicate", "data", DEV, 1
        )
    assert world.snapshot() == before
    assert world.ingest.flush_counters()
    twin = world.twin()
    assert twin is not None and twin.duplicates == 3 and twin.received == 1
    with world.sessions() as session:
        counters = {(c.outcome, c.reason): c.count for c in session.scalars(select(IngestCounter))}
    assert counters == {("accepted", "data"): 1, ("duplicate", "data"): 3}


def _rejections(w: World) -> list[tuple[str, str, bytes]]:
    """(expected reason, topic, payload) for every way a message is refused."""
    batch = w.dev.data([("flow_temp", T0, 60.0)], seq=7)
    good = w.dev.seal(batch)
    other_batch = w.other.data([("flow_temp", T0, 60.0)], seq=7)
    lying = TelemetryBatch(dev=OTHER, epoch=1, seq=8, ts=T0, sync=True, readings=())
    return [
        ("bad_signature", topic_of(batch), w.dev.seal(batch, generate_private_key())),
        # Device B's genuine envelope replayed on A's topic (kid names B).
        ("wrong_device", topic_of(batch), w.other.seal(other_batch)),
        # Signed by A with A's kid, but the payload claims to be B's.
        ("wrong_device", topic_of(batch), seal(lying, w.dev.key, kid=DEV)),
        ("malformed", topic_of(batch), b"\xd2\x84garbage"),
        ("malformed", topic_of(batch), good[:-5]),
        ("malformed", "bt/v1/BAD ID/data", good),
        ("malformed", "not/a/topic", good),
        ("malformed", state_topic(DEV), b"maybe"),
        ("oversized", topic_of(batch), good + b"\0" * MAX_ENVELOPE_BYTES),
        ("unknown_device", "bt/v1/boiler-9999/data", good),
        ("unknown_device", state_topic("boiler-9999"), b"online"),
    ]


def test_every_rejection_reason_leaves_the_twin_unchanged(world: World) -> None:
    world.send(world.dev.data([("flow_temp", T0, 60.0)]))
    before = world.snapshot(), world.snapshot(OTHER)
    cases = _rejections(world)
    for reason, topic, payload in cases:
        outcome = world.ingest.handle(topic, payload)
        assert (outcome.outcome, outcome.reason) == ("rejected", reason), (reason, topic)
    assert (world.snapshot(), world.snapshot(OTHER)) == before
    # The honest device carries on.
    assert world.send(world.dev.data([("flow_temp", T0, 61.0)])).outcome == "accepted"
    counts = world.ingest.counts()
    assert counts[("rejected", "wrong_device")] == 2
    assert sum(n for (o, _), n in counts.items() if o == "rejected") == len(cases)


def test_revoked_device_is_rejected_within_the_key_cache_ttl(world: World) -> None:
    assert world.send(world.dev.data()).outcome == "accepted"
    revoke(world.sessions, DEV)
    world.clock.advance(world.ingest.key_ttl_ms + 1)
    before = world.snapshot()
    assert world.send(world.dev.data()).reason == "revoked_device"
    assert world.ingest.handle(state_topic(DEV), b"offline").reason == "revoked_device"
    assert world.snapshot() == before


def test_key_cache_spares_the_database_a_flood_of_forgeries(world: World) -> None:
    forger = generate_private_key()
    world.send(world.dev.data())
    world.queries.clear()
    for _ in range(50):
        assert world.send(world.dev.data(), key=forger).reason == "bad_signature"
    for _ in range(50):
        assert world.ingest.handle("bt/v1/boiler-9999/data", b"x").reason == "unknown_device"
    assert len(world.queries) <= 3, world.queries  # one key lookup for the unknown device


def test_key_rotation_grace_period(world: World) -> None:
    old = world.dev.key
    new = add_key(world.sessions, world.dev, now_ms=T0, old_valid_until_ms=T0 + 10_000)
    world.ingest.forget_keys(DEV)
    assert world.send(world.dev.data(), key=old).outcome == "accepted"
    assert world.send(world.dev.data(), key=new).outcome == "accepted"
    # The grace period ends on the clock, even while the keys are cached.
    world.clock.advance(10_000)
    assert world.send(world.dev.data(), key=old).reason == "bad_signature"
    assert world.send(world.dev.data(), key=new).outcome == "accepted"


def test_expired_keys_only(world: World) -> None:
    add_key(world.sessions, world.dev, now_ms=T0, old_valid_until_ms=T0 + 10)
    with transaction(world.sessions) as session:
        for row in session.scalars(select(DeviceKey).where(DeviceKey.device_id == DEV)):
            row.valid_until_ms = T0 + 10
    world.ingest.forget_keys()
    world.clock.advance(11)
    assert world.send(world.dev.data()).reason == "expired_key"


def test_late_telemetry_never_overwrites_newer_values(world: World) -> None:
    newer = world.dev.data([("flow_temp", T0 + 2_000, 70.0), ("status", T0 + 2_000, 4)], seq=2)
    older = world.dev.data([("flow_temp", T0 + 1_000, 50.0), ("status", T0 + 1_000, 7)], seq=1)
    assert world.send(newer).outcome == "accepted"
    assert world.send(older).outcome == "accepted"
    with world.sessions() as session:
        value = session.get(TwinValue, (DEV, "flow_temp"))
        twin = session.get(Twin, DEV)
    assert value is not None and (value.num, value.ts_ms, value.seq) == (70.0, T0 + 2_000, 2)
    assert twin is not None and twin.status == 4
    assert (twin.max_seq, twin.contiguous_seq, twin.received) == (2, 2, 2)
    assert world.count(Sample) == 4, "the late readings are still history"


def test_state_topic_tracks_connectivity(world: World) -> None:
    world.clock.advance(5)
    assert world.ingest.handle(state_topic(DEV), b"online", True) == Outcome(
        "accepted", "state", DEV
    )
    assert world.ingest.handle(state_topic(DEV), b"online").outcome == "accepted"
    twin = world.twin()
    assert twin is not None and twin.connection == "online" and twin.connection_ms == T0 + 5
    version = twin.version
    world.clock.advance(5)
    world.ingest.handle(state_topic(DEV), b"offline")
    twin = world.twin()
    assert twin is not None and twin.connection == "offline" and twin.version == version + 1
    assert twin.last_seen_ms is None, "an unsigned state is not a verified message"
    with world.sessions() as session:
        changes = [
            (e.data["from"], e.data["to"])
            for e in session.scalars(select(ThreadEvent).where(ThreadEvent.kind == "connectivity"))
        ]
    assert changes == [("unknown", "online"), ("online", "offline")]
    assert world.ingest.handle(state_topic(DEV), b"").outcome == "ignored"


def test_birth_and_health(world: World) -> None:
    world.dev.epoch = 3
    assert world.send(world.dev.birth()).reason == "birth"
    world.dev.epoch = 2
    world.send(world.dev.birth())  # an older agent start, delivered late
    assert world.send(world.dev.health()).reason == "health"
    twin = world.twin()
    assert twin is not None
    assert (twin.epoch, twin.agent_version, twin.map_id, twin.map_hash) == (
        3,
        "1.2.3",
        "reference-v1",
        "abc123",
    )
    assert twin.capabilities == ["restart"] and twin.birth_ms == T0 + 1
    assert twin.health == {"modem": {"csq": 17}, "agent": {"outbox_depth": 0}}
    with world.sessions() as session:
        births = session.scalars(select(ThreadEvent).where(ThreadEvent.kind == "birth")).all()
    assert [b.data["epoch"] for b in births] == [3, 2]


def test_ack_is_routed_to_the_command_lifecycle(world: World) -> None:
    ack = Ack(
        **world.dev.next(),
        command_id="00000000-0000-4000-8000-000000000001",
        state=AckState.DELIVERED,
    )
    outcome = world.send(ack)
    assert (outcome.outcome, outcome.reason) == ("accepted", "ack_unknown_command")
    twin = world.twin()
    assert twin is not None and twin.received == 1


def _alarms(world: World) -> list[tuple[str, int | None, int, int | None]]:
    with world.sessions() as session:
        rows = session.scalars(select(Alarm).order_by(Alarm.start_ms, Alarm.id))
        return [(a.kind, a.code, a.start_ms, a.end_ms) for a in rows]


LOCKOUT = {"status": 7, "fault_code": 28, "fault": "F28"}
CLEARED = {"status": 1, "fault_code": 28, "previous": 7, "change": "lockout_cleared"}


def test_lockout_and_fault_episodes(world: World) -> None:
    d = world.dev
    world.send(d.event(EventKind.FAULT, {"fault_code": 28, "fault": "F28", "previous": 0}))
    world.send(d.event(EventKind.LOCKOUT, LOCKOUT))
    world.send(d.event(EventKind.LOCKOUT, LOCKOUT))  # re-reported after an agent restart
    assert _alarms(world) == [("fault", 28, T0 + 1, None), ("lockout", 28, T0 + 2, None)]
    world.send(d.event(EventKind.STATE_CHANGE, CLEARED))
    world.send(d.event(EventKind.FAULT, {"fault_code": 29, "fault": "F29", "previous": 28}))
    world.send(d.event(EventKind.FAULT_CLEARED, {"fault_code": 0, "previous": 29}))
    world.send(d.event(EventKind.COMMS_LOST))
    assert _alarms(world) == [
        ("fault", 28, T0 + 1, T0 + 5),
        ("lockout", 28, T0 + 2, T0 + 4),
        ("fault", 29, T0 + 5, T0 + 6),
    ]
    with world.sessions() as session:
        events = [
            e.data["event"]
            for e in session.scalars(select(ThreadEvent).where(ThreadEvent.kind == "alarm"))
        ]
    assert events == [
        "fault",
        "lockout",
        "lockout",
        "state_change",
        "fault",
        "fault_cleared",
        "comms_lost",
    ]


def test_episode_events_out_of_order(world: World) -> None:
    d = world.dev
    lockout, cleared = d.event(EventKind.LOCKOUT, LOCKOUT), d.event(EventKind.STATE_CHANGE, CLEARED)
    again = d.event(EventKind.LOCKOUT, LOCKOUT)
    world.send(cleared)  # seq 2 overtakes seq 1
    world.send(again)
    world.send(lockout)
    assert _alarms(world) == [("lockout", 28, T0 + 1, T0 + 2), ("lockout", 28, T0 + 3, None)]


def test_reading_closes_an_episode_whose_close_was_never_seen(world: World) -> None:
    d = world.dev
    world.send(d.event(EventKind.LOCKOUT, LOCKOUT))
    world.send(d.data([("status", T0 + 100, int(BoilerStatus.RUNNING)), ("fault_code", T0, 0)]))
    assert _alarms(world) == [("lockout", 28, T0 + 1, T0 + 100)]
    twin = world.twin()
    assert twin is not None and twin.status == BoilerStatus.RUNNING and twin.fault_code == 0


def test_gap_event_is_accounted(world: World) -> None:
    d = world.dev
    world.send(d.data(seq=1))
    world.send(d.data(seq=2))
    assert world.send(d.gap(((3, 4), (6, 8)), seq=9)).outcome == "accepted"
    twin = world.twin()
    assert twin is not None
    assert (twin.max_seq, twin.contiguous_seq, twin.lost_accounted) == (9, 4, 5)
    world.send(d.data(seq=5))
    twin = world.twin()
    assert twin is not None and twin.contiguous_seq == 9
    with world.sessions() as session:
        gaps = [(g.first_seq, g.last_seq, g.kind, g.reason) for g in session.scalars(select(Gap))]
        thread_gaps = session.scalars(select(ThreadEvent).where(ThreadEvent.kind == "gap")).all()
    assert gaps == [(3, 4, "accounted", "outbox_full"), (6, 8, "accounted", "outbox_full")]
    assert [t.data["count"] for t in thread_gaps] == [5]
    assert detect_in_tx(world, T0 + 10 * GRACE_MS) == []


def test_malformed_gap_event_is_rejected(world: World) -> None:
    bad = world.dev.event(EventKind.GAP, {"ranges": [[5, 3]], "reason": "x"})
    assert world.send(bad).reason == "malformed"
    assert world.twin() is None


def detect_in_tx(world: World, now_ms: int) -> list[tuple[int, int]]:
    return [(g.first_seq, g.last_seq) for g in detect_gaps(world.sessions, now_ms, GRACE_MS)]


def test_unexplained_gap_detected_after_grace_and_resolved_when_late_seqs_come(
    world: World,
) -> None:
    d = world.dev
    for seq in (1, 2, 5, 6, 9):
        world.send(d.data(seq=seq))
    twin = world.twin()
    assert twin is not None and (twin.max_seq, twin.contiguous_seq) == (9, 2)
    assert detect_in_tx(world, T0 + GRACE_MS) == [], "still within the grace period"
    world.clock.advance(GRACE_MS)
    world.send(d.data(seq=12))  # arrives later: its hole is not old enough yet
    assert detect_in_tx(world, T0 + GRACE_MS + 1) == [(3, 4), (7, 8)]
    assert detect_in_tx(world, T0 + GRACE_MS + 2) == [], "declared once per range"
    twin = world.twin()
    assert twin is not None and twin.contiguous_seq == 9
    world.send(d.data(seq=3))
    world.send(d.data(seq=4))
    with world.sessions() as session:
        gaps = {
            (g.first_seq, g.last_seq): g.resolved_ms
            for g in session.scalars(select(Gap).where(Gap.kind == "unexplained"))
        }
        kinds = [
            e.data["kind"]
            for e in session.scalars(select(ThreadEvent).where(ThreadEvent.kind == "gap"))
        ]
    assert gaps == {(3, 4): world.clock.now, (7, 8): None}
    assert kinds == ["unexplained", "unexplained", "resolved"]
    world.clock.advance(GRACE_MS + 1)
    assert detect_in_tx(world, world.clock.now) == [(10, 11)]
    twin = world.twin()
    assert twin is not None and twin.contiguous_seq == 12


def test_first_seq_seen_starts_the_count(world: World) -> None:
    world.send(world.dev.data(seq=500))
    twin = world.twin()
    assert twin is not None and (twin.max_seq, twin.contiguous_seq) == (500, 500)
    assert detect_in_tx(world, T0 + 10 * GRACE_MS) == []


def test_counters_are_flushed_as_deltas(world: World) -> None:
    world.send(world.dev.data())
    world.ingest.handle("bt/v1/boiler-9999/data", b"x")
    assert world.ingest.flush_counters()
    assert world.ingest.counts() == {}
    world.ingest.handle("bt/v1/boiler-9999/data", b"x")
    assert world.ingest.flush_counters()
    with world.sessions() as session:
        counters = {(c.outcome, c.reason): c.count for c in session.scalars(select(IngestCounter))}
    assert counters == {("accepted", "data"): 1, ("rejected", "unknown_device"): 2}


def test_internal_error_is_contained(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> str:
        raise RuntimeError("bug")

    monkeypatch.setattr("cloud.twin.update.apply_ack", broken)
    ack = Ack(
        **world.dev.next(),
        command_id="00000000-0000-4000-8000-000000000001",
        state=AckState.DELIVERED,
    )
    assert world.send(ack).reason == "internal_error"
    assert world.count(Uplink) == 0, "rolled back: the seq will show as an unexplained gap"


def test_concurrent_workers_lose_nothing(world: World, db_url: str) -> None:
    """Two workers (own engines, as two processes would have) on one device's stream."""
    engines = [make_engine(db_url) for _ in range(2)]
    workers = [
        Ingest(session_factory(e), world.clock, CloudSettings(db_url=db_url)) for e in engines
    ]
    messages = [
        (topic_of(m), world.dev.seal(m))
        for m in (world.dev.data([("flow_temp", T0 + i, float(i))]) for i in range(60))
    ]
    jobs = [(workers[i % 2], t, p) for i, (t, p) in enumerate(messages)]
    jobs += [(workers[(i + 1) % 2], t, p) for i, (t, p) in enumerate(messages[::3])]
    lock = threading.Lock()
    outcomes: list[str] = []

    def run(job: tuple[Ingest, str, bytes]) -> None:
        outcome = job[0].handle(job[1], job[2])
        with lock:
            outcomes.append(outcome.outcome)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, jobs))
    for worker in workers:
        worker.flush_counters()
    for engine in engines:
        engine.dispose()
    assert outcomes.count("accepted") == 60 and outcomes.count("duplicate") == 20
    twin = world.twin()
    assert twin is not None
    assert (twin.received, twin.duplicates, twin.max_seq) == (60, 20, 60)
    assert twin.contiguous_seq == 60 and twin.version == 61
    with world.sessions() as session:
        value = session.get(TwinValue, (DEV, "flow_temp"))
    assert value is not None and value.num == 59.0
    assert world.count(Sample) == 60


def test_database_down_raises_ingest_unavailable() -> None:
    engine = make_engine("postgresql://nobody@127.0.0.1:1/none")
    ingest = Ingest(session_factory(engine), FakeClock(), CloudSettings(), sleep=lambda _: None)
    with pytest.raises(IngestUnavailable):
        ingest.handle("bt/v1/boiler-0001/data", b"x")
    engine.dispose()
