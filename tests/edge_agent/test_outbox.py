"""The durable outbox and its store: real SQLite files, real Ed25519 signatures, a fake clock."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import OutboxError
from edge_agent.outbox import Outbox, Priority, Stored, seq_ranges
from edge_agent.store import DAY_MS, Store
from protocols.cose import generate_private_key, open_uplink, private_key_to_raw, seal
from protocols.messages import (
    Ack,
    AckState,
    Event,
    EventKind,
    GapReason,
    Health,
    Reading,
    TelemetryBatch,
    UplinkMessage,
    parse_gap,
)
from protocols.topics import TopicKind, topic

DEV = "boiler-0001"
T0_MS = 1_763_683_200_000 + 3 * 3_600_000  # 2025-11-21 03:00 UTC
MIB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]
COMMAND_ID = "7d3c2a4e-9b1f-4c6d-8e2a-1f0b3c5d7e9a"


class WallClock:
    """A wall clock in ms that moves only when told to."""

    def __init__(self, ms: int = T0_MS) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


class Device:
    """One device's state directory and key; opens Store + Outbox pairs on it."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "outbox.db"
        self.key: Ed25519PrivateKey = generate_private_key()
        self.clock = WallClock()
        self.stores: list[Store] = []

    def store(self, checkpoint_bytes: int = MIB) -> Store:
        store = Store(
            self.path, wall_ms=self.clock, checkpoint_bytes=checkpoint_bytes, device_id=DEV
        )
        self.stores.append(store)
        return store

    def open(self, max_bytes: int = 16 * MIB, store: Store | None = None) -> Outbox:
        return Outbox.open(
            store or self.store(),
            device_id=DEV,
            seal=lambda message: seal(message, self.key),
            max_bytes=max_bytes,
            wall_ms=self.clock,
            clock_trusted=lambda: True,
        )

    def reopen(self, outbox: Outbox, max_bytes: int = 16 * MIB) -> Outbox:
        """Close the outbox's store the way the agent does (no flush) and open a fresh one."""
        outbox._store.close()
        return self.open(max_bytes)

    def verify(self, stored: Stored) -> UplinkMessage:
        message = open_uplink(
            stored.envelope, topic(DEV, stored.kind), {DEV: self.key.public_key()}
        )
        assert message.seq == stored.seq
        assert message.topic_kind is stored.kind
        return message

    def stored_at(self, outbox: Outbox, seq: int) -> Stored:
        kind, _priority, envelope = self.rows(outbox)[seq]
        return Stored(seq, TopicKind(kind), envelope)

    def rows(self, outbox: Outbox) -> dict[int, tuple[str, int, bytes]]:
        """seq -> (kind, priority, envelope) as the database holds them now."""
        rows = outbox._store.query("SELECT seq, kind, priority, envelope FROM outbox")
        return {seq: (kind, priority, envelope) for seq, kind, priority, envelope in rows}


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    dev = Device(tmp_path)
    yield dev
    for store in dev.stores:
        store.db.close()


def batch(n: int = 3, ts: int = T0_MS, width: int = 1) -> TelemetryBatch:
    readings = tuple(
        Reading(f"point_{i:04d}", ts, float(i) + 0.125 if i % 2 else "x" * width) for i in range(n)
    )
    return TelemetryBatch(dev=DEV, epoch=0, seq=0, ts=ts, sync=True, readings=readings)


def event(kind: EventKind = EventKind.LOCKOUT, ts: int = T0_MS) -> Event:
    return Event(dev=DEV, epoch=0, seq=0, ts=ts, sync=True, kind=kind, detail={"status": 7})


def health(ts: int = T0_MS) -> Health:
    return Health(dev=DEV, epoch=0, seq=0, ts=ts, sync=True, agent={"uptime_s": 12})


def ack(ts: int = T0_MS) -> Ack:
    return Ack(
        dev=DEV, epoch=0, seq=0, ts=ts, sync=True, command_id=COMMAND_ID, state=AckState.DELIVERED
    )


def recount(outbox: Outbox) -> tuple[int, int]:
    """(depth, bytes) of the rows not acknowledged, counted from the database."""
    rows = outbox._store.query("SELECT seq, length(envelope) FROM outbox")
    live = [size for seq, size in rows if seq not in outbox._acked]
    return len(live), sum(live)


# -- stamping and signing -------------------------------------------------------------------


def test_every_message_is_sealed_stamped_and_verifies(device: Device) -> None:
    outbox = device.open()
    sent: list[UplinkMessage] = [
        batch(),
        event(),
        health(),
        ack(),
        TelemetryBatch(dev="someone-else", epoch=99, seq=12345, ts=T0_MS, sync=False, readings=()),
    ]
    stored = [outbox.append(message) for message in sent]
    assert [s.seq for s in stored] == [1, 2, 3, 4, 5]
    assert [s.kind for s in stored] == [
        TopicKind.DATA,
        TopicKind.EVENT,
        TopicKind.HEALTH,
        TopicKind.ACK,
        TopicKind.DATA,
    ]
    for original, item in zip(sent, stored, strict=True):
        opened = device.verify(item)
        assert (opened.dev, opened.epoch, opened.seq) == (DEV, 1, item.seq)
        assert opened.ts == original.ts and opened.sync == original.sync
    assert device.rows(outbox)[4][1] == Priority.CRITICAL
    assert device.rows(outbox)[3][1] == Priority.HEALTH
    assert device.rows(outbox)[1][1] == Priority.TELEMETRY
    assert outbox.next_seq == 6
    assert outbox.figures.appended == 5 and outbox.figures.depth == 5
    assert (outbox.figures.depth, outbox.figures.bytes) == recount(outbox)
    assert outbox.changed.is_set()


# -- epoch and seq across restarts ------------------------------------------------------------


def test_epoch_increments_on_every_open_and_seq_continues(device: Device) -> None:
    outbox = device.open()
    assert outbox.epoch == 1
    assert [outbox.append(batch()).seq for _ in range(3)] == [1, 2, 3]
    outbox = device.reopen(outbox)
    assert outbox.epoch == 2
    assert outbox.figures.depth == 3
    stored = outbox.append(event())
    assert stored.seq == 4
    assert device.verify(stored).epoch == 2
    outbox = device.reopen(outbox)
    assert outbox.epoch == 3 and outbox.next_seq == 5


def test_seq_survives_every_message_being_acknowledged_and_deleted(device: Device) -> None:
    outbox = device.open()
    for _ in range(4):
        outbox.append(batch())
    for seq in (1, 2, 3, 4):
        outbox.acknowledge(seq)
    outbox.flush()
    assert device.rows(outbox) == {}
    outbox = device.reopen(outbox)
    assert outbox.figures.depth == 0
    assert outbox.next_seq == 5
    assert outbox.append(health()).seq == 5
    # deleted by an append rather than a flush: the new row carries the mark
    outbox.acknowledge(5)
    assert outbox.append(event()).seq == 6
    outbox.acknowledge(6)
    outbox.flush()
    outbox = device.reopen(outbox)
    assert outbox.next_seq == 7


CHILD = """
import sys
from pathlib import Path

from edge_agent.outbox import Outbox
from edge_agent.store import Store
from protocols.cose import private_key_from_raw, seal
from protocols.messages import Reading, TelemetryBatch

path, raw = Path(sys.argv[1]), bytes.fromhex(sys.argv[2])
key = private_key_from_raw(raw)
wall = lambda: {t0}
store = Store(path, wall_ms=wall, checkpoint_bytes=32 * 1024, device_id="{dev}")
outbox = Outbox.open(store, device_id="{dev}", seal=lambda m: seal(m, key), max_bytes=1 << 30,
                wall_ms=wall, clock_trusted=lambda: True)
readings = tuple(Reading(f"p{{i}}", {t0}, float(i)) for i in range(40))
while True:
    stored = outbox.append(
        TelemetryBatch(dev="{dev}", epoch=0, seq=0, ts={t0}, sync=True, readings=readings)
    )
    print(stored.seq, flush=True)
"""


def test_sigkill_mid_loop_loses_no_committed_seq(device: Device, tmp_path: Path) -> None:
    outbox = device.open()
    before = [outbox.append(event()).seq for _ in range(2)]
    outbox._store.close()

    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD).format(t0=T0_MS, dev=DEV))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen(
        [sys.executable, str(script), str(device.path), private_key_to_raw(device.key).hex()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
    )
    printed: list[int] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            printed.append(int(line))
            if len(printed) == 150:  # past a few checkpoints (32 KiB) too
                break
        os.kill(child.pid, signal.SIGKILL)
        rest, stderr = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, stderr
    printed += [int(line) for line in rest.split("\n")[:-1]]  # complete lines only
    assert len(printed) >= 150
    assert printed == list(range(3, 3 + len(printed)))

    with sqlite3.connect(device.path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
    outbox = device.open()
    assert outbox.epoch == 3
    present = set(device.rows(outbox))
    assert set(before) | set(printed) <= present
    assert outbox.next_seq > max(present) >= max(printed)
    for seq in sorted(present)[-3:]:
        assert device.verify(device.stored_at(outbox, seq)).epoch == 2
    assert (outbox.figures.depth, outbox.figures.bytes) == recount(outbox)


# -- pending and acknowledgement ---------------------------------------------------------


def test_pending_is_oldest_first_and_skips_in_flight_and_acknowledged(device: Device) -> None:
    outbox = device.open()
    for message in (batch(), event(), health(), ack(), batch(), event()):
        outbox.append(message)
    assert [s.seq for s in outbox.pending(10)] == [1, 2, 3, 4, 5, 6]
    assert [s.seq for s in outbox.pending(2)] == [1, 2]
    outbox.in_flight.update({1, 2})
    assert [s.seq for s in outbox.pending(2)] == [3, 4]
    outbox.acknowledge(3)
    outbox.acknowledge(1)
    assert outbox.in_flight == {2}
    assert [s.seq for s in outbox.pending(2)] == [4, 5]
    assert [s.seq for s in outbox.pending(10)] == [4, 5, 6]
    assert outbox.figures.acknowledged == 2
    assert outbox.figures.depth == 4
    assert (outbox.figures.depth, outbox.figures.bytes) == recount(outbox)
    # acknowledged twice, or something unknown: nothing changes
    outbox.acknowledge(3)
    outbox.acknowledge(999)
    assert outbox.figures.acknowledged == 2 and outbox.figures.depth == 4
    pending = outbox.pending(1)[0]
    assert pending.envelope == device.rows(outbox)[4][2]
    device.verify(pending)


def test_acknowledged_rows_are_deleted_with_the_next_commit(device: Device) -> None:
    outbox = device.open()
    for _ in range(3):
        outbox.append(batch())
    outbox.acknowledge(1)
    assert 1 in device.rows(outbox)  # still on the card: no write yet
    outbox.append(event())
    assert 1 not in device.rows(outbox)
    assert outbox._acked == set()
    outbox.acknowledge(2)
    outbox.flush()
    assert set(device.rows(outbox)) == {3, 4}
    commits = outbox._store.flash.commits
    outbox.flush()  # nothing to delete: no write
    assert outbox._store.flash.commits == commits
    assert outbox.figures.depth == 2
    assert (outbox.figures.depth, outbox.figures.bytes) == recount(outbox)


def test_acknowledged_but_not_deleted_is_resent_with_the_same_seq(device: Device) -> None:
    outbox = device.open()
    first = [outbox.append(m) for m in (batch(), event(), batch())]
    outbox.acknowledge(2)
    outbox.acknowledge(3)
    assert [s.seq for s in outbox.pending(10)] == [1]
    outbox = device.reopen(outbox)  # a power cut before any further commit
    again = outbox.pending(10)
    assert again == first
    assert outbox.figures.depth == 3
    assert outbox.append(health()).seq == 4


# -- byte cap and eviction ----------------------------------------------------------------


def test_full_outbox_evicts_oldest_telemetry_and_reports_the_gap(device: Device) -> None:
    outbox = device.open(max_bytes=MIB)
    critical = [outbox.append(m).seq for m in (event(), ack(), health())]
    telemetry: list[int] = []
    while outbox.figures.bytes + 12_000 < MIB:
        telemetry.append(outbox.append(batch(600)).seq)
    critical.append(outbox.append(event(EventKind.FAULT)).seq)
    assert outbox.figures.evictions == 0
    in_flight = {telemetry[0], telemetry[1], telemetry[5]}
    outbox.in_flight.update(in_flight)  # published, waiting for PUBACK: never evicted
    outbox.acknowledge(telemetry[2])  # acknowledged: deleted, not evicted
    before = set(device.rows(outbox))

    added: list[int] = []
    while outbox.figures.evictions == 0:
        added.append(outbox.append(batch(600)).seq)
    after = device.rows(outbox)
    gone = before - set(after) - {telemetry[2]}
    assert gone
    evictable = [seq for seq in telemetry[3:] if seq not in in_flight]
    assert gone == set(evictable[: len(gone)])  # the oldest telemetry, in-flight skipped
    assert len(gone) > 3
    assert in_flight <= set(after)
    assert set(critical) <= set(after)
    assert set(added) <= set(after)

    gap_seq = max(after)
    assert gap_seq == added[-1] + 1 == outbox.next_seq - 1
    gap_event = device.verify(device.stored_at(outbox, gap_seq))
    assert isinstance(gap_event, Event) and gap_event.kind is EventKind.GAP
    assert after[gap_seq][1] == Priority.GAP  # evicted last of all
    gap = parse_gap(gap_event)
    assert gap.reason == GapReason.OUTBOX_FULL
    assert set().union(*(range(a, b + 1) for a, b in gap.ranges)) == gone
    assert gap.ranges == tuple(seq_ranges(gone))
    assert len(gap.ranges) == 2  # split by the in-flight message
    assert gap.count == len(gone)

    figures = outbox.figures
    assert (figures.evicted, figures.evictions) == (len(gone), 1)
    assert (figures.depth, figures.bytes) == recount(outbox)
    assert figures.bytes <= MIB
    assert figures.appended == len(critical) + len(telemetry) + len(added) + 1  # + the gap

    outbox = device.reopen(outbox, max_bytes=MIB)
    assert (outbox.figures.depth, outbox.figures.bytes) == recount(outbox)


def test_eviction_order_is_telemetry_then_health_then_critical(device: Device) -> None:
    outbox = device.open(max_bytes=24_000)
    for message in (event(), batch(40), health(), ack(), batch(40), health(), event(), batch(40)):
        outbox.append(message)
    assert outbox.figures.evictions == 0
    evicted_kinds: list[str] = []
    gaps = 0
    while TopicKind.ACK not in evicted_kinds:  # until critical messages go too
        before = device.rows(outbox)
        stored = outbox.append(event(EventKind.STATE_CHANGE))
        after = device.rows(outbox)
        gone = sorted(set(before) - set(after))
        if gone:
            gaps += 1
            # exactly the least precious, oldest rows, in (priority, seq) order
            ranked = sorted(before, key=lambda seq: (before[seq][1], seq))
            assert gone == sorted(ranked[: len(gone)])
            evicted_kinds += [before[seq][0] for seq in ranked[: len(gone)]]
            gap_seq = max(after)
            assert gap_seq == stored.seq + 1
            opened = device.verify(device.stored_at(outbox, gap_seq))
            assert isinstance(opened, Event)
            assert parse_gap(opened).ranges == tuple(seq_ranges(gone))
        assert (outbox.figures.depth, outbox.figures.bytes) == recount(outbox)
        assert outbox.figures.bytes <= 24_000
    first = {kind: evicted_kinds.index(kind) for kind in ("data", "health", "event")}
    assert first["data"] < first["health"] < first["event"]
    assert evicted_kinds.count("data") == 3 and evicted_kinds.count("health") == 2
    assert outbox.figures.evicted == len(evicted_kinds)
    assert outbox.figures.evictions == gaps


def test_in_flight_messages_are_never_evicted(device: Device) -> None:
    cap = 20_000
    outbox = device.open(max_bytes=cap)
    while outbox.figures.bytes <= cap:
        outbox.in_flight.add(outbox.append(batch(40)).seq)
    everything = set(device.rows(outbox))
    stored = outbox.append(batch(40))  # over the cap, nothing may go
    assert set(device.rows(outbox)) == everything | {stored.seq}
    assert outbox.figures.bytes > cap
    assert (outbox.figures.evicted, outbox.figures.evictions) == (0, 0)
    outbox.in_flight.clear()  # the connection dropped: they are fair game again
    outbox.append(batch(40))
    assert outbox.figures.evictions == 1 and outbox.figures.bytes <= cap
    assert (outbox.figures.depth, outbox.figures.bytes) == recount(outbox)


def test_a_message_too_large_is_refused_and_changes_nothing(device: Device) -> None:
    outbox = device.open(max_bytes=64 * 1024)
    outbox.append(event())
    outbox.acknowledge(1)
    outbox.append(batch())
    state = (dict(device.rows(outbox)), outbox.next_seq, set(outbox._acked))
    figures = (outbox.figures.depth, outbox.figures.bytes, outbox.figures.appended)
    with pytest.raises(OutboxError, match="cannot fit") as info:
        outbox.append(batch(1000, width=40))  # ~45 kB: over half the cap
    assert info.value.device_id == DEV
    with pytest.raises(OutboxError, match="payload") as info:
        outbox.append(batch(1000, width=200))  # over the 64 KiB wire limit
    assert info.value.device_id == DEV
    assert (dict(device.rows(outbox)), outbox.next_seq, set(outbox._acked)) == state
    assert (outbox.figures.depth, outbox.figures.bytes, outbox.figures.appended) == figures
    assert not outbox._store._in_transaction
    assert outbox.append(health()).seq == 3
    assert (outbox.figures.depth, outbox.figures.bytes) == recount(outbox)


# -- the store ----------------------------------------------------------------------------


def test_flash_accounting_counts_commits_and_checkpoints(device: Device) -> None:
    store = device.store(checkpoint_bytes=256 * 1024)
    flash = store.flash
    assert (flash.total, flash.today, flash.day) == (0, 0, T0_MS // DAY_MS)
    totals = []
    for i in range(5):
        store.set_meta(f"k{i}", i)
        store.commit()
        totals.append(flash.total)
    assert totals == sorted(set(totals))
    assert totals[0] >= store.page_size + 24  # at least one WAL frame
    assert flash.commits == 5 and flash.checkpoints == 0
    assert flash.today == flash.total

    blob = os.urandom(300 * 1024)
    store.execute("INSERT INTO outbox VALUES (?, ?, ?, ?)", (1, "data", 0, blob))
    wal_before = flash.total
    store.commit()  # passes checkpoint_bytes: the WAL is folded in and truncated
    assert flash.checkpoints == 1
    assert flash.total >= wal_before + 2 * len(blob)  # once into the WAL, once into the db
    assert store.wal_path.stat().st_size == 0

    yesterday = flash.today
    device.clock.ms = (T0_MS // DAY_MS + 1) * DAY_MS + 5  # just past midnight UTC
    store.set_meta("k0", 100)
    store.commit()
    assert flash.day == T0_MS // DAY_MS + 1
    assert 0 < flash.today < yesterday
    assert flash.total == yesterday + flash.today

    store.checkpoint()
    assert flash.checkpoints == 2
    assert store.wal_path.stat().st_size == 0
    assert store.get_meta("k0") == 100 and store.get_meta("missing", 7) == 7


def test_outbox_appends_are_counted_and_the_wal_stays_small(device: Device) -> None:
    outbox = device.open(store=device.store(checkpoint_bytes=128 * 1024))
    store = outbox._store
    for _ in range(60):
        outbox.append(batch(300))
    assert store.flash.total >= outbox.figures.bytes
    assert store.flash.checkpoints >= 1
    assert store.wal_path.stat().st_size < 128 * 1024 + 32 * 1024


def test_rollback_drops_uncommitted_changes(device: Device) -> None:
    store = device.store()
    store.set_meta("epoch", 5)
    assert store.get_meta("epoch") == 5  # the open transaction sees its own write
    store.rollback()
    assert store.get_meta("epoch") == 0
    store.rollback()  # nothing open: harmless


@pytest.mark.parametrize("keep", [0, 100, 4096], ids=["all", "header-kept", "schema-kept"])
def test_a_damaged_database_is_refused_with_a_clear_error(device: Device, keep: int) -> None:
    outbox = device.open()
    for _ in range(200):
        outbox.append(batch(20))
    outbox._store.close()
    data = bytearray(device.path.read_bytes())
    assert len(data) > 8 * 4096
    data[keep:] = os.urandom(len(data) - keep)
    device.path.write_bytes(bytes(data))
    with pytest.raises(OutboxError) as info:
        device.open()
    message = str(info.value)
    assert str(device.path) in message
    assert any(word in message for word in ("damaged", "not a database", "malformed")), message
    assert info.value.device_id == DEV
    assert isinstance(info.value.__cause__, sqlite3.Error | None)


def test_a_missing_state_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "state" / "deeper" / "outbox.db"
    store = Store(path, wall_ms=WallClock(), device_id=DEV)
    try:
        assert path.exists()
    finally:
        store.close()
