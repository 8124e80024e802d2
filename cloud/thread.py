"""The digital thread: an append-only, queryable log of typed events per boiler, each event
chained to the one before it by hash (`cloud.evidence`, `protocols.proof`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud import evidence
from cloud.models import ThreadEvent


class ThreadKind:
    """Event kinds written by the cloud core (the service platform adds its own)."""

    ALARM = "alarm"
    """A device event: lockout, fault, fault cleared, state change, comms lost/restored."""
    CONNECTIVITY = "connectivity"
    BIRTH = "birth"
    GAP = "gap"
    """Loss: reported by the device (accounted) or detected by the cloud (unexplained)."""
    COMMAND = "command"
    """A command was requested (who, why)."""
    COMMAND_STATE = "command_state"
    """A command changed state (who/what moved it, with the device's evidence)."""
    DEVICE = "device"
    """Registry changes: registered, key rotated, revoked, attributes changed."""
    PREDICTION = "prediction"
    """A predictive-maintenance warning raised, cleared or fulfilled (`cloud.predict`)."""


BOILER_KINDS = [
    ThreadKind.ALARM,
    ThreadKind.CONNECTIVITY,
    ThreadKind.BIRTH,
    ThreadKind.GAP,
    ThreadKind.COMMAND,
    ThreadKind.COMMAND_STATE,
    ThreadKind.DEVICE,
    ThreadKind.PREDICTION,
]
"""The boiler's own events (what engineers see of a thread); the rest are service jobs'."""


def record(
    session: Session,
    *,
    device_id: str | None,
    kind: str,
    ts_ms: int,
    recorded_ms: int,
    actor: str | None = None,
    subject: str | None = None,
    data: dict[str, Any] | None = None,
) -> ThreadEvent:
    """Append one event in the caller's transaction."""
    event = ThreadEvent(
        device_id=device_id,
        kind=kind,
        ts_ms=ts_ms,
        recorded_ms=recorded_ms,
        actor=actor,
        subject=subject,
        data=data or {},
    )
    evidence.link(session, event)
    session.add(event)
    return event


@dataclass(frozen=True, slots=True)
class ThreadPage:
    """One page of a thread, oldest first; `next_after` continues it (None at the end)."""

    events: list[ThreadEvent]
    next_after: int | None


def page(
    session: Session,
    device_id: str,
    *,
    after: int = 0,
    limit: int = 100,
    kinds: list[str] | None = None,
    subject: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> ThreadPage:
    """Events of one boiler with id > `after` (keyset pagination, stable under appends)."""
    query = select(ThreadEvent).where(ThreadEvent.device_id == device_id, ThreadEvent.id > after)
    if kinds:
        query = query.where(ThreadEvent.kind.in_(kinds))
    if subject is not None:
        query = query.where(ThreadEvent.subject == subject)
    if since_ms is not None:
        query = query.where(ThreadEvent.ts_ms >= since_ms)
    if until_ms is not None:
        query = query.where(ThreadEvent.ts_ms < until_ms)
    rows = list(session.scalars(query.order_by(ThreadEvent.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return ThreadPage(rows, rows[-1].id if more and rows else None)


def event_json(event: ThreadEvent) -> dict[str, Any]:
    """API form of one thread event."""
    return {
        "id": event.id,
        "device_id": event.device_id,
        "kind": event.kind,
        "ts": event.ts_ms,
        "recorded": event.recorded_ms,
        "actor": event.actor,
        "subject": event.subject,
        "data": event.data,
    }
