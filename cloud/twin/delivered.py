"""What the cloud has durably stored of a device's seqs, as a `Watermark` for the device.

The watermark is end-to-end delivery's other half (`edge_agent.delivery`): the device deletes
what it covers and sends again what it lists as missing. It must never cover a seq the cloud
does not hold:

* ``upto`` is the highest seq stored (`Twin.max_seq`), lowered to the end of the scanned
  window when the stored seqs above ``contiguous_seq`` are too many to read at once, or to
  the last range that fits when more than `MAX_MISSING_RANGES` are missing;
* missing are: the seqs before the first one the cloud ever stored (``contiguous_seq`` starts
  past them, but the device may still hold them), unresolved unexplained gaps, and the holes
  above ``contiguous_seq`` that no stored row or device-reported (accounted) gap fills.

Accounted gaps are not listed: the device reported it no longer has them.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.models import Gap, Twin, Uplink
from cloud.twin.gaps import ACCOUNTED, UNEXPLAINED, WINDOW
from protocols.messages import MAX_MISSING_RANGES, Watermark


def watermark_for(
    session: Session, device_id: str, now_ms: int, *, window: int = WINDOW
) -> Watermark | None:
    """The device's watermark now, or None if the cloud has stored nothing of it."""
    twin = session.get(Twin, device_id)
    if twin is None or twin.max_seq is None or twin.contiguous_seq is None:
        return None
    c, top = twin.contiguous_seq, twin.max_seq
    missing: list[tuple[int, int]] = []
    lowest = session.scalar(select(func.min(Uplink.seq)).where(Uplink.device_id == device_id))
    if lowest is None:
        return None
    if lowest > 1:
        missing.append((1, lowest - 1))
    missing += [
        (first, min(last, c))
        for first, last in session.execute(
            select(Gap.first_seq, Gap.last_seq)
            .where(
                Gap.device_id == device_id,
                Gap.kind == UNEXPLAINED,
                Gap.resolved_ms.is_(None),
                Gap.first_seq <= c,
            )
            .order_by(Gap.first_seq)
        )
    ]
    stored = list(
        session.scalars(
            select(Uplink.seq)
            .where(Uplink.device_id == device_id, Uplink.seq > c, Uplink.seq <= top)
            .order_by(Uplink.seq)
            .limit(window)
        )
    )
    upto = top if len(stored) < window else stored[-1]
    accounted = [
        (first, last)
        for first, last in session.execute(
            select(Gap.first_seq, Gap.last_seq)
            .where(
                Gap.device_id == device_id,
                Gap.kind == ACCOUNTED,
                Gap.last_seq > c,
                Gap.first_seq <= upto,
            )
            .order_by(Gap.first_seq)
        )
    ]
    previous = c
    for seq in [*stored, upto + 1]:
        if seq > previous + 1:
            missing += _subtract(previous + 1, min(seq - 1, upto), accounted)
        previous = max(previous, seq)
    missing = _merged(missing)
    if len(missing) > MAX_MISSING_RANGES:
        upto = missing[MAX_MISSING_RANGES][0] - 1
        missing = missing[:MAX_MISSING_RANGES]
    return Watermark(dev=device_id, upto=upto, missing=tuple(missing), iat=now_ms)


def _subtract(first: int, last: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[first, last] less the `covered` ranges (ascending)."""
    out: list[tuple[int, int]] = []
    start = first
    for lo, hi in covered:
        if hi < start or lo > last:
            continue
        if lo > start:
            out.append((start, lo - 1))
        start = max(start, hi + 1)
    if start <= last:
        out.append((start, last))
    return out


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ascending, with overlapping or touching ranges joined."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out
