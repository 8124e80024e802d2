"""Alarm episodes (``alarms`` rows) from device events, robust to events out of order.

An episode of kind ``lockout`` opens on a ``lockout`` event and closes on a ``state_change``
with ``change = lockout_cleared``; one of kind ``fault`` opens on a ``fault`` event and closes
on ``fault_cleared`` or when a different fault code is reported. Every event is also appended
to the digital thread (``ThreadKind.ALARM``) with its seq and detail.

Two workers, or a redelivery, can apply one device's events in any order, so:

* a re-report of an open episode (the agent reports what it sees after every restart) opens
  nothing, and one that arrives before the original moves the episode's start back;
* a close that arrives before its open is found in the thread when the open comes
  (`ALARM_LOOKBACK` recent events), and the new episode is closed at once;
* a close is matched to the latest episode opened before it (by seq), and an earlier close
  wins over a later one.

A newer reading showing the boiler out of lockout or fault closes episodes whose closing
event never came (`close_open`): the agent only reports changes it saw itself, so a fault
cleared while it was down has no ``fault_cleared``. Runs inside the ingest transaction with
the twin locked (which serialises all of this per device).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud import thread
from cloud.limits import code as fault_code
from cloud.models import Alarm, Device, ThreadEvent
from cloud.notify import NotificationKind, end_user, notify
from protocols.messages import DetailValue, Event, EventKind
from protocols.reference import FAULT_POINT, FaultCode, fault_text

log = logging.getLogger(__name__)

ALARM_LOOKBACK = 200
"""Recent alarm thread events searched for a close that arrived before its open."""
NAME_MAX = 16
"""Width of ``alarms.name``."""


def plain(value: DetailValue) -> Any:
    """An event detail value as JSON (read-only mappings and tuples become dicts and lists)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value


def apply_event(
    session: Session, event: Event, now: int, evidence: Mapping[str, Any] | None = None
) -> None:
    """Record a (non-gap) device event in the thread and open or close its episode.

    `evidence` (the device's own time when the cloud re-timed the event) joins the thread
    event's data."""
    thread.record(
        session,
        device_id=event.dev,
        kind=thread.ThreadKind.ALARM,
        ts_ms=event.ts,
        recorded_ms=now,
        actor=f"device:{event.dev}",
        data={
            "event": event.kind.value,
            "seq": event.seq,
            "detail": plain(event.detail),
            **(evidence or {}),
        },
    )
    opened = None
    if event.kind is EventKind.LOCKOUT:
        opened = _open_alarm(session, event, "lockout")
    elif event.kind is EventKind.FAULT:
        opened = _open_alarm(session, event, "fault")
    elif event.kind is EventKind.FAULT_CLEARED:
        _close_alarm(session, event, "fault")
    elif event.kind is EventKind.STATE_CHANGE and event.detail.get("change") == "lockout_cleared":
        _close_alarm(session, event, "lockout")
    if opened is not None and opened.end_ms is None and not _told_by_lockout(opened):
        _tell_end_user(session, opened, now)


def _told_by_lockout(alarm: Alarm) -> bool:
    """A lockout fault's own episode: its lockout episode tells the people (once)."""
    if alarm.kind != "fault" or alarm.code is None:
        return False
    try:
        return FaultCode(alarm.code).is_lockout
    except ValueError:
        return False


def _tell_end_user(session: Session, alarm: Alarm, now: int) -> None:
    """The boiler's twin tells its end user's twin first (then the owner): a new episode."""
    device = session.get(Device, alarm.device_id)
    if device is None:
        return
    what = "is locked out and needs a reset" if alarm.kind == "lockout" else "reports a fault"
    text = (fault_text(alarm.code) or "") if alarm.code else ""
    notify(
        session,
        [end_user(device), device.owner_id],
        NotificationKind.BOILER_ALARM,
        f"Your boiler {what}" + (f" ({alarm.name}: {text})" if alarm.name else ""),
        "You can request a repair from the boiler's page.",
        now_ms=now,
        device_id=device.id,
        data={"kind": alarm.kind, "fault": alarm.name, "since": alarm.start_ms},
    )


def _closes(data: Mapping[str, Any], kind: str) -> bool:
    """Whether a recorded ALARM thread event closes an episode of `kind`."""
    event, detail = data.get("event"), data.get("detail") or {}
    if kind == "fault":
        return event == EventKind.FAULT_CLEARED.value
    return event == EventKind.STATE_CHANGE.value and detail.get("change") == "lockout_cleared"


def _open_alarm(session: Session, event: Event, kind: str) -> Alarm | None:
    """Open an episode at this event, robust to the episode's events arriving out of order
    (two workers, redelivery): a re-report of an open episode opens nothing; a close that
    arrived before its open ends the new episode at once. Returns a new episode."""
    code = fault_code(event.detail.get(FAULT_POINT))
    name = event.detail.get("fault")
    name = name[:NAME_MAX] if isinstance(name, str) else None
    same = Alarm.device_id == event.dev, Alarm.kind == kind
    before = session.scalars(
        select(Alarm).where(*same, Alarm.seq < event.seq).order_by(Alarm.seq.desc()).limit(1)
    ).first()
    if before is not None and before.end_ms is None:
        if kind == "lockout" or before.code == code:
            return None  # still the same episode (re-reported, e.g. after an agent restart)
        before.end_ms = max(event.ts, before.start_ms)  # the fault changed
    after = session.scalars(
        select(Alarm).where(*same, Alarm.seq > event.seq).order_by(Alarm.seq).limit(1)
    ).first()
    close = _later_close(session, event, kind, after.seq if after is not None else None)
    if close is None and after is not None and (kind == "lockout" or after.code == code):
        # This episode was already opened by a later re-report: it began earlier.
        after.start_ms = min(after.start_ms, event.ts)
        after.seq = event.seq
        return None
    end = close
    if end is None and after is not None and kind == "fault":
        end = after.start_ms  # a different fault followed
    alarm = Alarm(
        device_id=event.dev,
        kind=kind,
        code=code,
        name=name,
        start_ms=event.ts,
        end_ms=max(end, event.ts) if end is not None else None,
        seq=event.seq,
    )
    session.add(alarm)
    return alarm


def _later_close(session: Session, event: Event, kind: str, before_seq: int | None) -> int | None:
    """Device time of the first already-received close of `kind` after this event (and
    before `before_seq`), if one arrived before this event did."""
    recent = session.scalars(
        select(ThreadEvent)
        .where(ThreadEvent.device_id == event.dev, ThreadEvent.kind == thread.ThreadKind.ALARM)
        .order_by(ThreadEvent.id.desc())
        .limit(ALARM_LOOKBACK)
    )
    best: tuple[int, int] | None = None
    for row in recent:
        seq = row.data.get("seq")
        if type(seq) is not int or seq <= event.seq:
            continue
        if before_seq is not None and seq >= before_seq:
            continue
        if _closes(row.data, kind) and (best is None or seq < best[0]):
            best = (seq, row.ts_ms)
    return best[1] if best is not None else None


def _close_alarm(session: Session, event: Event, kind: str) -> None:
    alarm = session.scalars(
        select(Alarm)
        .where(Alarm.device_id == event.dev, Alarm.kind == kind, Alarm.seq < event.seq)
        .order_by(Alarm.seq.desc())
        .limit(1)
    ).first()
    if alarm is None:
        return  # its open has not arrived (yet): `_later_close` finds this close then
    end = max(event.ts, alarm.start_ms)
    if alarm.end_ms is None or end < alarm.end_ms:
        alarm.end_ms = end


def open_kinds(session: Session, devices: Collection[str]) -> dict[str, set[str]]:
    """Kinds of the open episodes of each of `devices` (devices with none left out)."""
    found: dict[str, set[str]] = {}
    if not devices:
        return found
    rows = session.execute(
        select(Alarm.device_id, Alarm.kind)
        .where(Alarm.device_id.in_(devices), Alarm.end_ms.is_(None))
        .distinct()
    )
    for device_id, kind in rows:
        found.setdefault(device_id, set()).add(kind)
    return found


def close_open(session: Session, device_id: str, kind: str, ts: int, seq: int) -> None:
    """Close open episodes of `kind` begun before a reading (at `ts`, `seq`) that shows the
    boiler out of that state."""
    for alarm in session.scalars(
        select(Alarm).where(
            Alarm.device_id == device_id,
            Alarm.kind == kind,
            Alarm.end_ms.is_(None),
            Alarm.start_ms <= ts,
            Alarm.seq < seq,
        )
    ):
        alarm.end_ms = ts
        log.info("%s: %s %s closed by a reading at seq %d", device_id, kind, alarm.name, seq)
