"""Seq accounting: how far every seq of a device is known, and unexplained gaps.

Invariants, per device (all kept under the twin's row lock, `lock_twin`):

* ``Twin.contiguous_seq``: every seq from the first one the cloud saw up to it is *answered
  for*: stored (an ``uplinks`` row), reported dropped by the device (``accounted`` gap) or
  declared missing by the cloud (``unexplained`` gap). It never goes down. Unresolved
  unexplained gaps are what an operator looks at; the twin does not stall behind them, so the
  work here stays bounded by what arrived since.
* The first seq the cloud ever sees from a device starts the count: ``contiguous_seq`` becomes
  ``first_seq - 1``, because a device registered late (or whose early history was dropped
  before it was ours) has not lost 1..first_seq-1. The price: if the very first messages
  arrive out of order and an earlier one is then lost, that loss is not flagged.
* An ``unexplained`` gap (reason ``missing``) is declared once per range, when a later seq
  arrived more than the grace period ago and the range is still neither stored nor accounted.
  If its seqs arrive after all (or a ``gap`` event accounts for them) it gets ``resolved_ms``.
  A partly filled gap stays unresolved with its original range.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cloud import quarantine, thread
from cloud.db import transaction
from cloud.models import Gap, Twin, Uplink
from cloud.quarantine import Stage
from cloud.twin.rows import lock_twin

log = logging.getLogger(__name__)

ACCOUNTED = "accounted"
UNEXPLAINED = "unexplained"
MISSING = "missing"
"""Reason of an unexplained gap."""

WINDOW = 5_000
"""Rows read per step when walking or scanning a device's seqs."""
MAX_WINDOWS = 20
"""Steps per walk: bounds the work of one call; the next call carries on."""
MAX_DEVICES = 200
"""Devices examined per `detect_gaps` call."""


def _walk(session: Session, device_id: str, start: int, top: int, kinds: Sequence[str]) -> int:
    """The highest seq c >= start such that every seq in (start, c] is stored or in a gap of
    one of `kinds`; looks no further than `top` (plus the end of a gap reaching past it)."""
    c = start
    for _ in range(MAX_WINDOWS):
        if c >= top:
            break
        hi = c + WINDOW
        seqs = list(
            session.scalars(
                select(Uplink.seq)
                .where(Uplink.device_id == device_id, Uplink.seq > c, Uplink.seq <= hi)
                .order_by(Uplink.seq)
            )
        )
        gaps = session.execute(
            select(Gap.first_seq, Gap.last_seq)
            .where(
                Gap.device_id == device_id,
                Gap.kind.in_(kinds),
                Gap.last_seq > c,
                Gap.first_seq <= hi + 1,
            )
            .order_by(Gap.first_seq)
        ).all()
        i = j = 0
        while True:
            if i < len(seqs) and seqs[i] <= c:
                i += 1
            elif i < len(seqs) and seqs[i] == c + 1:
                c += 1
                i += 1
            elif j < len(gaps) and gaps[j].first_seq <= c + 1:
                c = max(c, gaps[j].last_seq)
                j += 1
            else:
                break
        if c < hi:
            break  # stopped at a hole inside this window
    return c


def advance_contiguous(session: Session, twin: Twin) -> bool:
    """Move ``contiguous_seq`` over stored seqs and gaps of either kind; True if it moved.

    The twin must be locked (`lock_twin`). Bounded per call (`MAX_WINDOWS` x `WINDOW` seqs).
    """
    if twin.contiguous_seq is None or twin.max_seq is None:
        return False
    if twin.contiguous_seq >= twin.max_seq:
        return False
    c = _walk(session, twin.device_id, twin.contiguous_seq, twin.max_seq, (ACCOUNTED, UNEXPLAINED))
    if c == twin.contiguous_seq:
        return False
    twin.contiguous_seq = c
    return True


def resolve_gaps(session: Session, device_id: str, first: int, last: int, now_ms: int) -> list[Gap]:
    """Mark unresolved unexplained gaps overlapping [first, last] resolved if every seq of
    theirs is now stored or accounted for; returns those resolved. Twin must be locked."""
    candidates = session.scalars(
        select(Gap).where(
            Gap.device_id == device_id,
            Gap.kind == UNEXPLAINED,
            Gap.resolved_ms.is_(None),
            Gap.first_seq <= last,
            Gap.last_seq >= first,
        )
    ).all()
    resolved = []
    for gap in candidates:
        if _walk(session, device_id, gap.first_seq - 1, gap.last_seq, (ACCOUNTED,)) < gap.last_seq:
            continue
        gap.resolved_ms = now_ms
        resolved.append(gap)
        thread.record(
            session,
            device_id=device_id,
            kind=thread.ThreadKind.GAP,
            ts_ms=now_ms,
            recorded_ms=now_ms,
            actor="cloud",
            data={
                "kind": "resolved",
                "first_seq": gap.first_seq,
                "last_seq": gap.last_seq,
                "count": gap.last_seq - gap.first_seq + 1,
            },
        )
    return resolved


def _subtract(first: int, last: int, covered: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """[first, last] minus the (sorted) inclusive ranges in `covered`."""
    pieces = []
    at = first
    for lo, hi in covered:
        if hi < at or lo > last:
            continue
        if lo > at:
            pieces.append((at, lo - 1))
        at = max(at, hi + 1)
        if at > last:
            break
    if at <= last:
        pieces.append((at, last))
    return pieces


def _missing(session: Session, device_id: str, after: int) -> list[tuple[int, int, int]]:
    """Holes among the next `WINDOW` stored seqs above `after`: (first, last, later_ms),
    ascending, where later_ms is the earliest receipt of any stored seq after the hole (within
    the window, so it never makes a hole look older than it is)."""
    rows = (
        select(Uplink.seq, Uplink.received_ms)
        .where(Uplink.device_id == device_id, Uplink.seq > after)
        .order_by(Uplink.seq)
        .limit(WINDOW)
        .subquery()
    )
    windowed = select(
        rows.c.seq,
        func.lag(rows.c.seq).over(order_by=rows.c.seq).label("prev"),
        func.min(rows.c.received_ms)
        .over(order_by=rows.c.seq.desc(), rows=(None, 0))
        .label("later_ms"),
    ).subquery()
    starts = session.execute(
        select(windowed.c.seq, windowed.c.prev, windowed.c.later_ms)
        .where(or_(windowed.c.prev.is_(None), windowed.c.seq - windowed.c.prev > 1))
        .order_by(windowed.c.seq)
    ).all()
    holes = []
    for seq, prev, later_ms in starts:
        first = after + 1 if prev is None else prev + 1
        if first <= seq - 1:
            holes.append((first, seq - 1, int(later_ms)))
    return holes


def _detect_device(session: Session, twin: Twin, now_ms: int, grace_ms: int) -> list[Gap]:
    moved = advance_contiguous(session, twin)
    c, top = twin.contiguous_seq, twin.max_seq
    created: list[Gap] = []
    if c is None or top is None or c >= top:
        if moved:
            twin.version += 1
        return created
    holes = _missing(session, twin.device_id, c)
    covered: list[tuple[int, int]] = []
    if holes:
        covered = [
            (g.first_seq, g.last_seq)
            for g in session.execute(
                select(Gap.first_seq, Gap.last_seq)
                .where(
                    Gap.device_id == twin.device_id,
                    Gap.last_seq >= holes[0][0],
                    Gap.first_seq <= holes[-1][1],
                )
                .order_by(Gap.first_seq)
            )
        ]
    for first, last, later_ms in holes:
        if now_ms - later_ms <= grace_ms:
            break  # later_ms only grows with seq: no later hole is old enough either
        for lo, hi in _subtract(first, last, covered):
            gap = Gap(
                device_id=twin.device_id,
                first_seq=lo,
                last_seq=hi,
                kind=UNEXPLAINED,
                reason=MISSING,
                detected_ms=now_ms,
            )
            session.add(gap)
            created.append(gap)
            thread.record(
                session,
                device_id=twin.device_id,
                kind=thread.ThreadKind.GAP,
                ts_ms=now_ms,
                recorded_ms=now_ms,
                actor="cloud",
                data={
                    "kind": UNEXPLAINED,
                    "reason": MISSING,
                    "first_seq": lo,
                    "last_seq": hi,
                    "count": hi - lo + 1,
                },
            )
    if created:
        session.flush()
        moved = advance_contiguous(session, twin) or moved
    if moved:
        twin.version += 1
    return created


def detect_gaps(
    sessions: sessionmaker[Session],
    now_ms: int,
    grace_ms: int,
    *,
    max_devices: int = MAX_DEVICES,
) -> list[Gap]:
    """Declare unexplained gaps (reason ``missing``) older than `grace_ms`; returns them.

    Looks at up to `max_devices` devices whose ``max_seq`` is past ``contiguous_seq`` (a
    random sample when there are more, so none starves), each in its own short transaction
    with its twin locked, and advances ``contiguous_seq`` over what it declared. Safe to run
    in every worker at once (the twin lock serialises them per device).

    One device's failure is contained: anything but a database outage rolls back that device
    only, quarantines it (`cloud.quarantine`, stage ``gaps``: skipped from then on, across
    restarts, until released) and the sweep goes on with the others. A database outage
    (`OperationalError`, `InterfaceError`) is raised: it is nobody's data.
    """
    with sessions() as session:
        candidates = sorted(
            session.scalars(
                select(Twin.device_id)
                .where(
                    Twin.max_seq > Twin.contiguous_seq,
                    Twin.device_id.not_in(quarantine.held_devices(Stage.GAPS)),
                )
                .order_by(func.random())
                .limit(max_devices)
            )
        )
    created: list[Gap] = []
    for device_id in candidates:
        try:
            with transaction(sessions) as session:
                twin = lock_twin(session, device_id)
                if twin is not None:
                    created.extend(_detect_device(session, twin, now_ms, grace_ms))
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:  # one device's data must not stop the others' accounting
            log.exception("%s: gap detection failed", device_id)
            quarantine.hold(sessions, Stage.GAPS, exc, now_ms=now_ms, device_id=device_id)
    return created
