"""Derived figures and series of the twin: rates, availability, episodes, telemetry series."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import BigInteger, func, literal_column, or_, select
from sqlalchemy.orm import Session

from cloud.errors import InvalidInput
from cloud.models import Alarm, Device, Sample, ThreadEvent, TwinValue, Uplink
from cloud.twin import rollups
from protocols.reference import (
    BURNER_STARTS_POINT,
    OPERATING_HOURS_POINT,
)

DAY_MS = 86_400_000
WINDOW_MS = 30 * DAY_MS
"""Derived figures look back this far."""
AVAILABILITY_GUARANTEE = 0.98
EPISODE_KINDS = ("fault", "lockout")
"""Alarm kinds that are episodes of the boiler being faulty (a ``predicted`` warning is not)."""


def derived_figures(session: Session, device: Device, now_ms: int) -> dict[str, Any]:
    """Burner starts per day, faults per 1,000 operating hours and 30-day availability.

    All three look back `WINDOW_MS` (30 days) from `now_ms`.

    * ``burner_starts_per_day``: (last - first) ``burner_starts`` reading in the window over
      the days between them; null with fewer than two readings, no time between them, or a
      counter that went backwards (controller replaced).
    * ``faults_per_1000_h``: fault episodes that began in the window per 1,000 hours of
      burner operation in it (the ``operating_hours`` delta); null when there are no
      operating hours to divide by. A lockout and the fault that caused it are one episode.
    * ``availability``: see `availability`.
    """
    since = now_ms - WINDOW_MS
    alarms = list(
        session.scalars(
            select(Alarm)
            .where(
                Alarm.device_id == device.id,
                Alarm.kind.in_(EPISODE_KINDS),
                Alarm.start_ms < now_ms,
                or_(Alarm.end_ms.is_(None), Alarm.end_ms > since),
            )
            .order_by(Alarm.start_ms, Alarm.id)
        )
    )
    starts = _counter_delta(session, device.id, BURNER_STARTS_POINT, since, now_ms)
    hours = _counter_delta(session, device.id, OPERATING_HOURS_POINT, since, now_ms)
    per_day = None
    if starts is not None and starts.span_ms > 0 and starts.delta >= 0:
        per_day = starts.delta / (starts.span_ms / DAY_MS)
    per_1000_h = None
    if hours is not None and hours.delta > 0:
        episodes = count_fault_episodes([a for a in alarms if a.start_ms >= since])
        per_1000_h = episodes / hours.delta * 1000
    return {
        "window_days": WINDOW_MS // DAY_MS,
        "burner_starts_per_day": per_day,
        "faults_per_1000_h": per_1000_h,
        "availability": availability(
            alarms,
            now_ms,
            install_ms(device),
            first_seen_ms(session, device.id),
            offline_intervals(session, device.id, since, now_ms),
        ),
    }


@dataclass(frozen=True, slots=True)
class CounterDelta:
    """How much a monotonic counter moved between its first and last reading in a window."""

    delta: float
    span_ms: int


def _counter_delta(
    session: Session, device_id: str, point: str, since_ms: int, until_ms: int
) -> CounterDelta | None:
    base = select(Sample.ts_ms, Sample.num).where(
        Sample.device_id == device_id,
        Sample.point == point,
        Sample.ts_ms >= since_ms,
        Sample.ts_ms <= until_ms,
        Sample.num.is_not(None),
    )
    first = session.execute(base.order_by(Sample.ts_ms, Sample.id).limit(1)).one_or_none()
    last = session.execute(
        base.order_by(Sample.ts_ms.desc(), Sample.id.desc()).limit(1)
    ).one_or_none()
    if first is None or last is None or first.ts_ms == last.ts_ms:
        return None
    return CounterDelta(float(last.num) - float(first.num), last.ts_ms - first.ts_ms)


def count_fault_episodes(alarms: Iterable[Alarm]) -> int:
    """Fault episodes among `alarms`: a lockout overlapping a fault of the same code is one.

    The edge agent reports a lockout as a ``fault`` event (the cause) and a ``lockout`` event
    (the consequence); counting both would double the error frequency.
    """
    rows = list(alarms)
    faults = [a for a in rows if a.kind != "lockout"]
    count = len(faults)
    for lockout in (a for a in rows if a.kind == "lockout"):
        if not any(_same_episode(lockout, fault) for fault in faults):
            count += 1
    return count


def _same_episode(lockout: Alarm, fault: Alarm) -> bool:
    if lockout.code is not None and fault.code != lockout.code:
        return False
    lockout_end = lockout.end_ms if lockout.end_ms is not None else 2**63 - 1
    fault_end = fault.end_ms if fault.end_ms is not None else 2**63 - 1
    return lockout.start_ms <= fault_end and fault.start_ms <= lockout_end


def install_ms(device: Device) -> int | None:
    """Midnight UTC of the install date, if one is recorded and valid."""
    if not device.install_date:
        return None
    try:
        day = date.fromisoformat(device.install_date)
    except ValueError:
        return None
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def first_seen_ms(session: Session, device_id: str) -> int | None:
    """Device time of the earliest message the cloud holds from it."""
    return session.scalar(select(func.min(Uplink.ts_ms)).where(Uplink.device_id == device_id))


MIN_JUDGED_MS = 7 * DAY_MS
"""A verdict against the guarantee needs a window at least this long ..."""
MIN_OBSERVED_SHARE = 0.9
"""... of which at least this share was observed (the gateway online or the boiler known to
be down)."""
VERDICT_RULE = (
    "judged once the window is at least 7 days and at least 90% of it was observed "
    "(time the gateway was offline and no fault was open is unknown, not available)"
)


def availability(
    alarms: Sequence[Alarm],
    now_ms: int,
    install: int | None,
    first_seen: int | None,
    offline: Sequence[tuple[int, int]] = (),
) -> dict[str, Any]:
    """Share of the last 30 days the boiler could heat, against the 98% guarantee.

    Definition: the window runs from the latest of (now - 30 days, the install date at
    midnight UTC, the first message the cloud holds from the gateway) to now. Unavailable time
    is the union of every alarm episode in it: lockouts, and faults, which on the reference
    controller all block the burner (status ``blocking_error``) until cleared. An open episode
    runs to now. Time the gateway was offline (`offline`, from the thread's connectivity
    changes) with no episode open is **unknown**: neither available nor unavailable.
    Availability = 1 - unavailable / observed, where observed = window - unknown. The verdict
    against the guarantee (`VERDICT_RULE`) is null until the window is `MIN_JUDGED_MS` long and
    `MIN_OBSERVED_SHARE` of it observed. With no message ever received (or an empty window)
    availability is null.
    """
    start, start_source = now_ms - WINDOW_MS, "window"
    for bound, source in ((first_seen, "first_seen"), (install, "install")):
        if bound is not None and bound > start:
            start, start_source = bound, source
    window = now_ms - start
    base = {
        "until": now_ms,
        "guarantee": AVAILABILITY_GUARANTEE,
        "verdict_rule": VERDICT_RULE,
    }
    if first_seen is None or window <= 0:
        return base | {
            "value": None,
            "since": None,
            "window_ms": 0,
            "window_from": None,
            "unavailable_ms": 0,
            "unknown_ms": 0,
            "observed_ms": 0,
            "meets_guarantee": None,
        }
    episodes = [(a.start_ms, a.end_ms if a.end_ms is not None else now_ms) for a in alarms]
    down = _union_ms(episodes, start, now_ms)
    unknown = _union_ms([*episodes, *offline], start, now_ms) - down
    observed = window - unknown
    value = 1 - down / observed if observed > 0 else None
    judged = window >= MIN_JUDGED_MS and observed >= MIN_OBSERVED_SHARE * window
    verdict = value >= AVAILABILITY_GUARANTEE if judged and value is not None else None
    return base | {
        "value": value,
        "since": start,
        "window_ms": window,
        "window_from": start_source,
        "unavailable_ms": down,
        "unknown_ms": unknown,
        "observed_ms": observed,
        "meets_guarantee": verdict,
    }


def offline_intervals(
    session: Session, device_id: str, since_ms: int, until_ms: int
) -> list[tuple[int, int]]:
    """When the gateway was not online in [since_ms, until_ms), from the thread's
    connectivity changes (the state before the window: the last change before it). A boiler
    with no recorded change has none: its time counts as observed, as before this history
    was kept."""
    before = session.scalars(
        select(ThreadEvent)
        .where(
            ThreadEvent.device_id == device_id,
            ThreadEvent.kind == "connectivity",
            ThreadEvent.ts_ms < since_ms,
        )
        .order_by(ThreadEvent.ts_ms.desc(), ThreadEvent.id.desc())
        .limit(1)
    ).first()
    changes = session.scalars(
        select(ThreadEvent)
        .where(
            ThreadEvent.device_id == device_id,
            ThreadEvent.kind == "connectivity",
            ThreadEvent.ts_ms >= since_ms,
            ThreadEvent.ts_ms < until_ms,
        )
        .order_by(ThreadEvent.ts_ms, ThreadEvent.id)
    ).all()
    state = (before.data or {}).get("to") if before is not None else None
    if state is None and changes:
        state = (changes[0].data or {}).get("from")
    out: list[tuple[int, int]] = []
    at = since_ms
    for change in changes:
        if state is not None and state != "online":
            out.append((at, change.ts_ms))
        state, at = (change.data or {}).get("to"), change.ts_ms
    if state is not None and state != "online":
        out.append((at, until_ms))
    return out


def _union_ms(intervals: Iterable[tuple[int, int]], lo: int, hi: int) -> int:
    """Total length of the union of `intervals`, clipped to [lo, hi)."""
    clipped = sorted((max(a, lo), min(b, hi)) for a, b in intervals if min(b, hi) > max(a, lo))
    total = 0
    current_start, current_end = None, None
    for a, b in clipped:
        if current_end is None or a > current_end:
            if current_start is not None and current_end is not None:
                total += current_end - current_start
            current_start, current_end = a, b
        else:
            current_end = max(current_end, b)
    if current_start is not None and current_end is not None:
        total += current_end - current_start
    return total


# --- time series -------------------------------------------------------------------------


def known_points(session: Session, device_id: str) -> list[str]:
    """Every point the boiler has reported (from its latest values)."""
    return list(
        session.scalars(
            select(TwinValue.point)
            .where(TwinValue.device_id == device_id)
            .order_by(TwinValue.point)
        )
    )


def auto_step(since_ms: int, until_ms: int, max_points: int) -> int:
    """The smallest 'round' bucket width giving at most `max_points` buckets."""
    needed = -(-(until_ms - since_ms) // max_points)
    for step in _NICE_STEPS:
        if step >= needed:
            return step
    return -(-needed // DAY_MS) * DAY_MS


_NICE_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)
_NICE_STEPS = tuple(seconds * 1000 for seconds in (*_NICE_STEPS_S, 43200, 86400))


def timeseries(
    session: Session,
    device_id: str,
    points: Sequence[str] | None,
    since_ms: int,
    until_ms: int,
    step_ms: int | None,
    max_points: int,
) -> dict[str, Any]:
    """Readings of `points` (all known ones if None) in ``[since_ms, until_ms)``.

    With `step_ms`, readings are averaged in buckets of that width, aligned on `since_ms`
    (each bucket has ``ts`` = its start, ``avg``, ``min``, ``max``, ``count``; text readings
    are left out). Without it, raw readings are returned when no point has more than
    `max_points` of them in the range; otherwise a round step giving at most `max_points`
    buckets is chosen; a step that would give more than `max_points` buckets is widened the
    same way. An empty or inverted range answers with no readings.
    """
    if max_points < 1:
        raise InvalidInput("max_points must be at least 1", max_points=max_points)
    if step_ms is not None and step_ms < 1:
        raise InvalidInput("step must be a positive number of milliseconds", step=step_ms)
    if until_ms <= since_ms:
        return _series(since_ms, until_ms, step_ms, {})  # an empty range holds nothing
    names = list(points) if points else known_points(session, device_id)
    if step_ms is not None:
        buckets = -(-(until_ms - since_ms) // step_ms)
        if buckets > max_points:
            step_ms = max(step_ms, auto_step(since_ms, until_ms, max_points))
    elif names:
        raw = _raw(session, device_id, names, since_ms, until_ms, max_points + 1)
        if all(len(rows) <= max_points for rows in raw.values()):
            return _series(since_ms, until_ms, None, raw)
        step_ms = auto_step(since_ms, until_ms, max_points)
    if step_ms is None or not names:
        return _series(since_ms, until_ms, step_ms, {})
    return _series(
        since_ms,
        until_ms,
        step_ms,
        _buckets(session, device_id, names, since_ms, until_ms, step_ms),
    )


def _series(
    since_ms: int, until_ms: int, step_ms: int | None, data: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    return {
        "since": since_ms,
        "until": until_ms,
        "mode": "raw" if step_ms is None else "buckets",
        "step": step_ms,
        "points": data,
    }


def _raw(
    session: Session, device_id: str, names: list[str], since_ms: int, until_ms: int, limit: int
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        rows = session.execute(
            select(Sample.ts_ms, Sample.device_ts_ms, Sample.num, Sample.text, Sample.quality)
            .where(
                Sample.device_id == device_id,
                Sample.point == name,
                Sample.ts_ms >= since_ms,
                Sample.ts_ms < until_ms,
            )
            .order_by(Sample.ts_ms, Sample.id)
            .limit(limit)
        )
        out[name] = [
            {
                "ts": row.ts_ms,
                "value": row.num if row.num is not None else row.text,
                "quality": row.quality,
            }
            | ({"device_ts": row.device_ts_ms} if row.device_ts_ms is not None else {})
            for row in rows
        ]
    return out


def _buckets(
    session: Session, device_id: str, names: list[str], since_ms: int, until_ms: int, step_ms: int
) -> dict[str, list[dict[str, Any]]]:
    """Buckets of `step_ms` from `since_ms`: from the rollups where they tile the buckets
    (`cloud.twin.rollups`), the rest (or everything, on SQLite) from raw samples."""
    raw_since = since_ms
    found: dict[tuple[str, int], rollups.Aggregate] = {}
    width = rollups.width_for(since_ms, step_ms) if rollups.enabled(session) else None
    if width is not None:
        raw_since = max(since_ms, until_ms // width * width)  # the newest part-bucket: raw
        found = rollups.bucket_rows(session, device_id, names, since_ms, raw_since, step_ms, width)
    if raw_since < until_ms:
        for key, aggregate in _raw_buckets(
            session, device_id, names, since_ms, raw_since, until_ms, step_ms
        ).items():
            held = found.get(key)
            found[key] = aggregate if held is None else _merged(held, aggregate)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for (point, index), (n, total, low, high) in sorted(found.items()):
        out[point].append(
            {
                "ts": since_ms + index * step_ms,
                "avg": total / n,
                "min": float(low),
                "max": float(high),
                "count": int(n),
            }
        )
    return out


def _merged(a: rollups.Aggregate, b: rollups.Aggregate) -> rollups.Aggregate:
    return [a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3])]


def _raw_buckets(
    session: Session,
    device_id: str,
    names: list[str],
    origin_ms: int,
    since_ms: int,
    until_ms: int,
    step_ms: int,
) -> dict[tuple[str, int], rollups.Aggregate]:
    """{(point, bucket index from `origin_ms`): [n, total, min, max]} of raw samples in
    [since, until)."""
    # The offsets are rendered inline (they are ints we computed): PostgreSQL only accepts a
    # GROUP BY expression that is textually the selected one, and two bind parameters with
    # equal values are not. Integer / integer truncates on both backends, and the operand is
    # never negative, so truncation is floor.
    origin = literal_column(str(int(origin_ms)), BigInteger())
    width = literal_column(str(int(step_ms)), BigInteger())
    bucket = ((Sample.ts_ms - origin) // width).label("bucket")
    query = (
        select(
            Sample.point,
            bucket,
            func.count(Sample.num).label("n"),
            func.sum(Sample.num).label("total"),
            func.min(Sample.num).label("min"),
            func.max(Sample.num).label("max"),
        )
        .where(
            Sample.device_id == device_id,
            Sample.point.in_(names),
            Sample.ts_ms >= since_ms,
            Sample.ts_ms < until_ms,
            Sample.num.is_not(None),
        )
        .group_by(Sample.point, bucket)
    )
    return {
        (row.point, int(row.bucket)): [int(row.n), float(row.total), row.min, row.max]
        for row in session.execute(query)
    }
