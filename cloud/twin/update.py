"""The twin's write model: every change to a device's twin rows goes through here.

Callers hold the twin's row lock (`cloud.twin.rows.locked_twin`) for the transaction; every
change bumps `Twin.version` (the ETag). Invariants:

* Out-of-order data never overwrites newer data: a live value, status, birth or health only
  replaces the stored one when its device timestamp is newer (ties: the higher seq wins).
* ``Twin.status`` / ``fault_code`` mirror the newest stored values of those points; a newer
  reading showing the boiler out of lockout or fault closes alarm episodes whose closing event
  never came.
* Seq accounting (``max_seq``, ``contiguous_seq``, gaps) is described in `cloud.twin.gaps`.

`apply_uplink` is the one entry for a verified, first-seen uplink (ingest's only call into
the twin); `set_connection` is the broker's retained state; `add_duplicates` the counters;
`change_attributes` the API's PATCH; `cloud.twin.rows.new_twin` the registry's.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, Table, and_, case, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cloud import alarms, thread
from cloud.commands import apply_ack
from cloud.errors import PreconditionFailed
from cloud.limits import code
from cloud.models import Device, Gap, Sample, Twin, TwinValue
from cloud.timing import Timing
from cloud.twin import rollups
from cloud.twin.gaps import ACCOUNTED, advance_contiguous, resolve_gaps
from cloud.twin.rows import dialect_insert
from protocols.messages import (
    Birth,
    Event,
    EventKind,
    Health,
    Reading,
    TelemetryBatch,
    parse_gap,
)
from protocols.reference import FAULT_POINT, STATUS_POINT, BoilerStatus

log = logging.getLogger(__name__)

TEXT_MAX = 200
"""Width of a text value: a longer one is cut."""


def apply_uplink(session: Session, twin: Twin, timing: Timing, now: int) -> str:
    """Apply a stored uplink's effects to its (locked) twin; returns the counted reason
    (``data``, ``event``, ``birth``, ``health``, ``ack`` or ``ack_<result>``).

    Alarm events go to `cloud.alarms` and acks to `cloud.commands`: the twin is where they
    enter, so a reading of a message's walk starts here.
    """
    reason, accounted = _apply(session, twin, timing, now)
    account(session, twin, timing.message.seq, accounted, now)
    return reason


def account(
    session: Session, twin: Twin, seq: int, accounted: list[tuple[int, int]], now: int
) -> None:
    """What every stored uplink does to its twin: seq accounting, last seen, counters."""
    record_seq(session, twin, seq, accounted, now)
    twin.last_seen_ms = max(twin.last_seen_ms or 0, now)
    twin.received += 1
    twin.version += 1


def _apply(
    session: Session, twin: Twin, timing: Timing, now: int
) -> tuple[str, list[tuple[int, int]]]:
    """One message's effects; returns (reason, seq ranges newly accounted for)."""
    message, evidence = timing.message, timing.evidence
    if isinstance(message, TelemetryBatch):
        apply_telemetry(session, twin, message, timing.reading_ts)
        return "data", []
    if isinstance(message, Event):
        if message.kind is EventKind.GAP:
            return "event", apply_gap_report(session, twin, message, now, evidence)
        alarms.apply_event(session, message, now, evidence)
        return "event", []
    if isinstance(message, Birth):
        apply_birth(session, twin, message, now, evidence)
        return "birth", []
    if isinstance(message, Health):
        apply_health(twin, message)
        return "health", []
    result = apply_ack(session, message, now, evidence)
    log.debug("%s: ack for %s: %s", message.dev, message.command_id, result)
    return ("ack" if result == "applied" else f"ack_{result}"), []


def set_connection(
    session: Session, twin: Twin, connection: str, now: int, *, retained: bool
) -> bool:
    """The broker's retained ``online``/``offline``; False (and nothing written) if unchanged."""
    if twin.connection == connection:
        return False
    previous = twin.connection
    twin.connection, twin.connection_ms = connection, now
    twin.version += 1
    thread.record(
        session,
        device_id=twin.device_id,
        kind=thread.ThreadKind.CONNECTIVITY,
        ts_ms=now,
        recorded_ms=now,
        actor=f"device:{twin.device_id}",
        data={"from": previous, "to": connection, "retained": retained},
    )
    log.info("%s: %s (was %s)", twin.device_id, connection, previous)
    return True


def apply_health(twin: Twin, health: Health) -> None:
    """The gateway's modem and agent figures, unless newer ones are stored."""
    if twin.health_ms is None or health.ts >= twin.health_ms:
        twin.health = {"modem": dict(health.modem), "agent": dict(health.agent)}
        twin.health_ms = health.ts


def add_duplicates(session: Session, duplicates: Mapping[str, int], now_ms: int) -> None:
    """Add counted duplicate deliveries to each device's twin (in id order: no deadlocks). A
    duplicate is the device speaking (resending what it was not told is stored), so it is
    seen: `last_seen_ms` moves to `now_ms` if older."""
    seen = case(
        (or_(Twin.last_seen_ms.is_(None), Twin.last_seen_ms < now_ms), now_ms),
        else_=Twin.last_seen_ms,
    )
    for device_id, n in sorted(duplicates.items()):
        session.execute(
            update(Twin)
            .where(Twin.device_id == device_id)
            .values(duplicates=Twin.duplicates + n, last_seen_ms=seen)
            .execution_options(synchronize_session=False)
        )


def change_attributes(
    session: Session,
    device: Device,
    wanted: Mapping[str, Any],
    *,
    version: int,
    actor: str,
    role: str,
    now: int,
) -> dict[str, dict[str, Any]]:
    """Set registry attributes (device columns) to `wanted` if the twin is still at `version`
    (compare-and-set: `PreconditionFailed` if a concurrent writer moved it); records who
    changed what in the thread. Returns ``{field: {from, to}}`` of what changed."""
    changes: dict[str, dict[str, Any]] = {}
    for column, value in wanted.items():
        old = getattr(device, column)
        if old != value:
            changes[column.removesuffix("_id")] = {"from": old, "to": value}
            setattr(device, column, value)
    if not changes:
        return changes
    _bump(session, device.id, version)
    thread.record(
        session,
        device_id=device.id,
        kind=thread.ThreadKind.DEVICE,
        ts_ms=now,
        recorded_ms=now,
        actor=actor,
        data={"change": "attributes", "role": role, "changes": changes},
    )
    return changes


def _bump(session: Session, device_id: str, version: int) -> None:
    """Compare-and-set on the version, so a concurrent writer (ingest, another PATCH) wins
    or loses cleanly instead of being overwritten."""
    if version == 0:
        session.add(Twin(device_id=device_id, version=1, connection="unknown"))
        session.flush()
        return
    result = session.execute(
        update(Twin)
        .where(Twin.device_id == device_id, Twin.version == version)
        .values(version=Twin.version + 1)
    )
    if not getattr(result, "rowcount", 0):
        session.rollback()
        raise PreconditionFailed(
            "the boiler changed while this request ran; fetch it again", device_id=device_id
        )


# -- effects of an uplink (inside its transaction, twin locked) -------------------------------


def num_text(value: object) -> tuple[float | None, str | None]:
    if isinstance(value, bool):
        return (1.0 if value else 0.0), None
    if isinstance(value, int | float):
        return float(value), None
    if isinstance(value, str):
        return None, value[:TEXT_MAX]
    return None, None


def record_seq(
    session: Session, twin: Twin, seq: int, accounted: list[tuple[int, int]], now: int
) -> None:
    """Advance max_seq / contiguous_seq for a stored `seq` (see `cloud.twin.gaps`)."""
    if twin.contiguous_seq is None:
        twin.contiguous_seq = seq - 1  # the first seq the cloud sees starts the count
    late = seq <= twin.contiguous_seq
    twin.max_seq = seq if twin.max_seq is None else max(twin.max_seq, seq)
    moved = seq == twin.contiguous_seq + 1
    if moved:
        twin.contiguous_seq = seq
    if (moved or accounted) and twin.contiguous_seq < twin.max_seq:
        advance_contiguous(session, twin)
    if late:
        resolve_gaps(session, twin.device_id, seq, seq, now)
    for first, last in accounted:
        resolve_gaps(session, twin.device_id, first, last, now)


def apply_telemetry(
    session: Session, twin: Twin, batch: TelemetryBatch, device_ts: tuple[int | None, ...]
) -> None:
    """Samples and latest values; `device_ts` holds each reading's own ts where the cloud
    re-timed it (`cloud.timing`), kept beside the time it is ordered by."""
    if not batch.readings:
        return
    rows = []
    latest: dict[str, tuple[Reading, int | None]] = {}
    for i, reading in enumerate(batch.readings):
        num, text = num_text(reading.value)
        own = device_ts[i] if device_ts else None
        rows.append(
            {
                "device_id": batch.dev,
                "point": reading.point,
                "ts_ms": reading.ts,
                "device_ts_ms": own,
                "num": num,
                "text": text,
                "quality": reading.quality.value,
                "seq": batch.seq,
            }
        )
        if reading.point not in latest or reading.ts >= latest[reading.point][0].ts:
            latest[reading.point] = (reading, own)
    # Core executemany with one constant statement each: compiled once, cached thereafter
    # (a multi-row VALUES would be compiled anew for every batch size).
    session.execute(_SAMPLE_INSERT, rows)
    rollups.add(session, ((batch.dev, r.point, r.ts, num_text(r.value)[0]) for r in batch.readings))
    values = [
        {
            "device_id": batch.dev,
            "point": reading.point,
            "ts_ms": reading.ts,
            "device_ts_ms": own,
            "num": num_text(reading.value)[0],
            "text": num_text(reading.value)[1],
            "quality": reading.quality.value,
            "seq": batch.seq,
        }
        for reading, own in latest.values()
    ]
    session.execute(twin_value_upsert(session.get_bind().dialect.name), values)
    if STATUS_POINT in latest or FAULT_POINT in latest:
        _mirror_status(session, twin)


_SAMPLE_INSERT = cast(Table, Sample.__table__).insert()
_UPSERTS: dict[str, Any] = {}


def twin_value_upsert(dialect: str) -> Any:
    """INSERT .. ON CONFLICT that keeps the newest value per point (by ts, then seq)."""
    if dialect not in _UPSERTS:
        upsert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        statement = upsert(cast(Table, TwinValue.__table__))
        new = statement.excluded
        table = TwinValue.__table__.c
        _UPSERTS[dialect] = statement.on_conflict_do_update(
            index_elements=["device_id", "point"],
            set_={
                c: getattr(new, c)
                for c in ("ts_ms", "device_ts_ms", "num", "text", "quality", "seq")
            },
            where=or_(new.ts_ms > table.ts_ms, and_(new.ts_ms == table.ts_ms, new.seq > table.seq)),
        )
    return _UPSERTS[dialect]


def _mirror_status(session: Session, twin: Twin) -> None:
    """Twin.status / fault_code follow the newest stored values of those points (see
    `mirror`)."""
    session.flush()
    values = {
        v.point: v
        for v in session.scalars(
            select(TwinValue)
            .where(
                TwinValue.device_id == twin.device_id,
                TwinValue.point.in_((STATUS_POINT, FAULT_POINT)),
            )
            .execution_options(populate_existing=True)
        )
    }
    mirror(session, twin, values.get(STATUS_POINT), values.get(FAULT_POINT))


class StoredValue(Protocol):
    """The newest stored value of a point: a `TwinValue` row, or its image in memory."""

    @property
    def num(self) -> float | None: ...
    @property
    def ts_ms(self) -> int: ...
    @property
    def seq(self) -> int: ...


def mirror(
    session: Session,
    twin: Twin,
    status: StoredValue | None,
    fault: StoredValue | None,
    open_kinds: Collection[str] = ("lockout", "fault"),
) -> None:
    """Set Twin.status / fault_code from the newest stored values of those points; a newer
    reading showing the boiler out of lockout or fault closes episodes whose closing event
    never came (e.g. cleared while the agent was down: it only reports changes it saw).
    `open_kinds`: the episode kinds that may be open (a caller that knows none is open saves
    the lookups)."""
    # Episodes can only need closing when the value changes (or was unknown): skipping the
    # lookup otherwise keeps the common batch cheap.
    if status is not None:
        old_status = twin.status
        twin.status = code(status.num)
        changed = old_status is None or old_status != twin.status
        out = twin.status is not None and twin.status != BoilerStatus.LOCKOUT
        if changed and out and "lockout" in open_kinds:
            alarms.close_open(session, twin.device_id, "lockout", status.ts_ms, status.seq)
    if fault is not None:
        old_fault = twin.fault_code
        twin.fault_code = code(fault.num)
        changed = old_fault is None or old_fault != twin.fault_code
        if changed and twin.fault_code == 0 and "fault" in open_kinds:
            alarms.close_open(session, twin.device_id, "fault", fault.ts_ms, fault.seq)


def apply_birth(
    session: Session, twin: Twin, birth: Birth, now: int, evidence: dict[str, Any]
) -> None:
    """The agent's birth: its map and capabilities, unless a newer birth is stored."""
    if twin.epoch is None or (birth.epoch, birth.ts) >= (twin.epoch, twin.birth_ms or 0):
        twin.epoch = birth.epoch
        twin.birth_ms = birth.ts
        twin.agent_version = birth.agent_version[:64]
        twin.map_id = birth.map_id[:64]
        twin.map_hash = birth.map_hash[:128]
        twin.capabilities = list(birth.capabilities)
    thread.record(
        session,
        device_id=birth.dev,
        kind=thread.ThreadKind.BIRTH,
        ts_ms=birth.ts,
        recorded_ms=now,
        actor=f"device:{birth.dev}",
        data={
            "seq": birth.seq,
            "epoch": birth.epoch,
            "agent_version": birth.agent_version,
            "map_id": birth.map_id,
            "map_hash": birth.map_hash,
            "capabilities": list(birth.capabilities),
            **evidence,
        },
    )


def apply_gap_report(
    session: Session, twin: Twin, event: Event, now: int, evidence: dict[str, Any]
) -> list[tuple[int, int]]:
    """Accounted gaps from a device's ``gap`` event; returns the ranges newly recorded."""
    gap = parse_gap(event)  # checked by _unfit before the transaction
    upsert = dialect_insert(session)
    added: list[tuple[int, int]] = []
    for first, last in gap.ranges:
        result = session.execute(
            upsert(Gap)
            .values(
                device_id=event.dev,
                first_seq=first,
                last_seq=last,
                kind=ACCOUNTED,
                reason=gap.reason[:64],
                detected_ms=now,
            )
            .on_conflict_do_nothing(index_elements=["device_id", "first_seq", "kind"])
        )
        if cast("CursorResult[Any]", result).rowcount:
            added.append((first, last))
    twin.lost_accounted += sum(last - first + 1 for first, last in added)
    thread.record(
        session,
        device_id=event.dev,
        kind=thread.ThreadKind.GAP,
        ts_ms=event.ts,
        recorded_ms=now,
        actor=f"device:{event.dev}",
        data={
            "kind": ACCOUNTED,
            "seq": event.seq,
            "reason": gap.reason,
            "ranges": [list(r) for r in gap.ranges],
            "count": gap.count,
            **evidence,
        },
    )
    log.warning("%s: device reports %d message(s) dropped (%s)", event.dev, gap.count, gap.reason)
    return added
