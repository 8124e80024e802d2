"""Quarantine: input that made the cloud fail is kept, counted and set aside.

A bug (or a value nobody foresaw) must cost one device's input, never the process, and never
again on the next start. Two stages use it:

* ``ingest``: a message whose handling raised something unexpected. Its topic and payload are
  kept whole; ingest answers ``rejected/internal_error`` and the broker's copy is acknowledged,
  so nothing is lost and nothing is retried in a loop. Once the bug is fixed,
  ``boilertwin cloud quarantine release ID`` replays it through ingest (exactly once: ingest
  is idempotent on ``(device, seq)``).
* ``gaps``: a device whose seq accounting raised. The gap detector skips the device while it
  is held, so a poisoned row cannot fail every housekeeping round (or every restart); its
  messages are still ingested. Releasing it lets the detector try again.

Each hold is logged with its traceback where it happens, counted in
``boilertwin_quarantined_total{stage}``, and listed by ``boilertwin cloud quarantine list``.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import transaction
from cloud.errors import Conflict, NotFound
from cloud.metrics import QUARANTINED
from cloud.models import Quarantine

log = logging.getLogger(__name__)

ERROR_MAX = 500
"""Width of ``quarantine.error``."""


class Stage(StrEnum):
    """Where the failure happened."""

    INGEST = "ingest"
    GAPS = "gaps"


def describe(error: BaseException) -> str:
    """An exception as ``Type: message``, cut to the column's width."""
    return f"{type(error).__name__}: {error}"[:ERROR_MAX]


def hold(
    sessions: sessionmaker[Session],
    stage: Stage,
    error: BaseException,
    *,
    now_ms: int,
    device_id: str | None = None,
    topic: str | None = None,
    payload: bytes | None = None,
) -> int:
    """Set input aside in its own transaction; returns the quarantine id.

    Raises what the database raises if it cannot be written: the caller must then not
    acknowledge or forget the input.
    """
    with transaction(sessions) as session:
        row = Quarantine(
            stage=stage.value,
            device_id=device_id,
            topic=topic[:200] if topic is not None else None,
            payload=payload,
            error=describe(error),
            created_ms=now_ms,
        )
        session.add(row)
        session.flush()
        held = row.id
    QUARANTINED.labels(stage.value).inc()
    log.error(
        "%s: %s input quarantined as #%d (%s)", device_id or "?", stage.value, held, describe(error)
    )
    return held


def held_devices(stage: Stage) -> Select[Any]:
    """Ids of the devices with an unreleased hold at `stage` (a subquery)."""
    return select(Quarantine.device_id).where(
        Quarantine.stage == stage.value,
        Quarantine.released_ms.is_(None),
        Quarantine.device_id.is_not(None),
    )


def listing(session: Session, *, include_released: bool = False) -> list[Quarantine]:
    """Holds, oldest first (only unreleased ones unless asked)."""
    query = select(Quarantine).order_by(Quarantine.id)
    if not include_released:
        query = query.where(Quarantine.released_ms.is_(None))
    return list(session.scalars(query))


def get(session: Session, quarantine_id: int) -> Quarantine:
    """One hold; `NotFound` if there is none, `Conflict` if it was released already."""
    row = session.get(Quarantine, quarantine_id)
    if row is None:
        raise NotFound(f"no quarantine entry #{quarantine_id}", quarantine_id=quarantine_id)
    if row.released_ms is not None:
        raise Conflict(
            f"quarantine entry #{quarantine_id} was released already",
            quarantine_id=quarantine_id,
        )
    return row


def mark_released(session: Session, row: Quarantine, *, now_ms: int, outcome: str) -> None:
    """Record that `row` was dealt with, and how."""
    row.released_ms = now_ms
    row.outcome = outcome[:64]
    log.info("%s: quarantine #%d released (%s)", row.device_id or "?", row.id, outcome)
