"""Many verified uplinks in one transaction: the group commit behind `cloud.ingest.Ingest`.

The effects are those of storing each message with `cloud.twin.update.apply_uplink` in
arrival order; what changes is the number of statements (a few per batch instead of about
nine per message):

* one INSERT of every ``uplinks`` row, ON CONFLICT DO NOTHING RETURNING: what comes back is
  first seen, the rest are duplicates (also within the batch: the first copy wins). Rows go
  in sorted by (device, seq), so two workers inserting the same rows cannot deadlock;
* one ``SELECT ... FOR UPDATE`` of the batch's twins, in device order (missing twins are
  created first, in one INSERT);
* a device whose messages in the batch are all telemetry takes the fast path: the samples
  of the whole batch in one statement (``COPY`` on PostgreSQL), the newest value per point in
  one upsert, and ``Twin.status`` mirrored in memory exactly as message-by-message would
  (`update.mirror` after each message carrying status or fault);
* any other device's messages (births, events, acks, health: a small share) go through
  `update.apply_uplink` one by one, in arrival order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from cloud import alarms
from cloud.models import Sample, Twin, TwinValue, Uplink
from cloud.timing import Timing, order_time
from cloud.twin import rollups, update
from cloud.twin.rows import dialect_insert
from protocols.messages import TelemetryBatch, UplinkMessage
from protocols.reference import FAULT_POINT, STATUS_POINT
from protocols.topics import TopicKind

MIRRORED = (STATUS_POINT, FAULT_POINT)
SAMPLE_COLUMNS = ("device_id", "point", "ts_ms", "device_ts_ms", "num", "text", "quality", "seq")


@dataclass(frozen=True, slots=True)
class Stored:
    """What storing one message did: its counted reason, or None for a duplicate."""

    reason: str | None
    timing: Timing | None = None


@dataclass(frozen=True, slots=True)
class _Value:
    """A point's newest value as `update.mirror` reads it (a `TwinValue` row in memory)."""

    num: float | None
    ts_ms: int
    seq: int

    def older_than(self, other: _Value) -> bool:
        """The stored row's rule: a newer ts wins, on a tie the higher seq."""
        return other.ts_ms > self.ts_ms or (other.ts_ms == self.ts_ms and other.seq > self.seq)


def store_batch(
    session: Session,
    messages: Sequence[tuple[UplinkMessage, TopicKind]],
    now: int,
    max_ahead_ms: int,
    envelopes: Sequence[bytes] | None = None,
) -> list[Stored]:
    """Store `messages` (verified, in arrival order) in the caller's transaction, with the
    signed `envelopes` they came in (the same order) as evidence."""
    first = _insert_uplinks(session, messages, now, envelopes)
    fresh = [i for i, (message, _) in enumerate(messages) if first.get(_key(message)) == i]
    if not fresh:
        return [Stored(None)] * len(messages)
    by_device: dict[str, list[int]] = defaultdict(list)
    for i in fresh:
        by_device[messages[i][0].dev].append(i)
    twins = _locked_twins(session, sorted(by_device))
    results: dict[int, Stored] = {}
    telemetry = _Telemetry(session)
    fast = {
        device: indices
        for device, indices in by_device.items()
        if all(isinstance(messages[i][0], TelemetryBatch) for i in indices)
    }
    telemetry.load_mirrored(
        [d for d, ix in fast.items() if any(_mirrored(messages[i][0]) for i in ix)]
    )
    for device in sorted(by_device):
        twin = twins[device]
        for i in by_device[device]:
            timing = order_time(messages[i][0], now, max_ahead_ms)
            if device in fast:
                telemetry.add(twin, timing)
                update.account(session, twin, timing.message.seq, [], now)
                reason = "data"
            else:
                reason = update.apply_uplink(session, twin, timing, now)
            results[i] = Stored(reason, timing)
    telemetry.write()
    return [results.get(i, Stored(None)) for i in range(len(messages))]


def _key(message: UplinkMessage) -> tuple[str, int]:
    return message.dev, message.seq


def _mirrored(message: UplinkMessage) -> bool:
    return isinstance(message, TelemetryBatch) and any(
        r.point in MIRRORED for r in message.readings
    )


def _insert_uplinks(
    session: Session,
    messages: Sequence[tuple[UplinkMessage, TopicKind]],
    now: int,
    envelopes: Sequence[bytes] | None,
) -> dict[tuple[str, int], int]:
    """Insert the batch's ``uplinks`` rows; returns {(device, seq): index} of the rows this
    transaction inserted (the first copy's index in `messages`)."""
    first: dict[tuple[str, int], int] = {}
    for i, (message, _) in enumerate(messages):
        first.setdefault(_key(message), i)
    rows = [
        {
            "device_id": message.dev,
            "seq": message.seq,
            "epoch": message.epoch,
            "kind": kind.value,
            "ts_ms": message.ts,
            "received_ms": now,
            "envelope": envelopes[i] if envelopes else None,
        }
        for key, i in sorted(first.items())
        for message, kind in (messages[i],)
    ]
    statement = (
        dialect_insert(session)(Uplink)
        .on_conflict_do_nothing(index_elements=["device_id", "seq"])
        .returning(Uplink.device_id, Uplink.seq)
    )
    inserted = {(device, seq) for device, seq in session.execute(statement, rows)}
    return {key: i for key, i in first.items() if key in inserted}


def _locked_twins(session: Session, devices: list[str]) -> dict[str, Twin]:
    """The twins of `devices` (sorted), locked in that order; missing ones created first."""
    twins = _lock(session, devices)
    missing = [d for d in devices if d not in twins]
    if missing:
        session.execute(
            dialect_insert(session)(Twin)
            .values(
                [
                    {
                        "device_id": device,
                        "version": 1,
                        "connection": "unknown",
                        "capabilities": [],
                        "health": {},
                        "received": 0,
                        "duplicates": 0,
                        "lost_accounted": 0,
                    }
                    for device in missing
                ]
            )
            .on_conflict_do_nothing(index_elements=["device_id"])
        )
        twins.update(_lock(session, missing))
    assert len(twins) == len(devices), "every twin exists: just inserted"
    return twins


def _lock(session: Session, devices: list[str]) -> dict[str, Twin]:
    return {
        twin.device_id: twin
        for twin in session.scalars(
            select(Twin)
            .where(Twin.device_id.in_(devices))
            .order_by(Twin.device_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }


class _Telemetry:
    """Telemetry of fast-path devices: samples and newest values gathered, written once."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.samples: list[tuple[Any, ...]] = []
        self.newest: dict[tuple[str, str], tuple[_Value, dict[str, Any]]] = {}
        self.mirrored: dict[tuple[str, str], _Value] = {}
        self.open_kinds: dict[str, set[str]] = {}

    def load_mirrored(self, devices: list[str]) -> None:
        """The stored status and fault values of `devices`, for the in-memory mirror."""
        if not devices:
            return
        rows = self.session.execute(
            select(
                TwinValue.device_id, TwinValue.point, TwinValue.num, TwinValue.ts_ms, TwinValue.seq
            ).where(
                TwinValue.device_id.in_(devices),
                TwinValue.point.in_(MIRRORED),
            )
        )
        for device, point, num, ts_ms, seq in rows:
            self.mirrored[(device, point)] = _Value(num, ts_ms, seq)
        # Only telemetry of these devices is in the batch: no episode opens meanwhile.
        self.open_kinds = alarms.open_kinds(self.session, devices)

    def add(self, twin: Twin, timing: Timing) -> None:
        """One telemetry message (as `update.apply_telemetry` would store it)."""
        batch = cast(TelemetryBatch, timing.message)
        latest: dict[str, tuple[Any, ...]] = {}
        for i, reading in enumerate(batch.readings):
            own = timing.reading_ts[i] if timing.reading_ts else None
            num, text = update.num_text(reading.value)
            row = (batch.dev, reading.point, reading.ts, own, num, text, reading.quality.value)
            self.samples.append((*row, batch.seq))
            if reading.point not in latest or reading.ts >= latest[reading.point][2]:
                latest[reading.point] = (*row, batch.seq)
        for point, row in latest.items():
            value = _Value(row[4], row[2], batch.seq)
            key = (batch.dev, point)
            held = self.newest.get(key)
            if held is None or held[0].older_than(value):
                self.newest[key] = (value, dict(zip(SAMPLE_COLUMNS, row, strict=True)))
            stored = self.mirrored.get(key)
            if point in MIRRORED and (stored is None or stored.older_than(value)):
                self.mirrored[key] = value
        if any(point in latest for point in MIRRORED):
            update.mirror(
                self.session,
                twin,
                self.mirrored.get((batch.dev, STATUS_POINT)),
                self.mirrored.get((batch.dev, FAULT_POINT)),
                self.open_kinds.get(batch.dev, ()),
            )

    def write(self) -> None:
        """Samples in one statement (COPY on PostgreSQL) and their rollups, newest values in
        one upsert."""
        if self.samples:
            _insert_samples(self.session, self.samples)
            rollups.add(self.session, ((r[0], r[1], r[2], r[4]) for r in self.samples))
        if self.newest:
            self.session.execute(
                update.twin_value_upsert(self.session.get_bind().dialect.name),
                [row for _, row in self.newest.values()],
            )


def _insert_samples(session: Session, samples: list[tuple[Any, ...]]) -> None:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        raw = connection.connection.driver_connection
        columns = ", ".join(SAMPLE_COLUMNS)
        statement = f"COPY {Sample.__tablename__} ({columns}) FROM STDIN"
        with raw.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            for row in samples:
                copy.write_row(row)
        return
    session.execute(
        cast(Table, Sample.__table__).insert(),
        [dict(zip(SAMPLE_COLUMNS, row, strict=True)) for row in samples],
    )
