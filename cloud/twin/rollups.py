"""Per-minute and per-hour rollups of numeric readings (count, sum, min, max), PostgreSQL only.

Ingest adds each stored sample to its minute and hour rows (`add`) in the transaction that
stores the sample: a message is stored once (``uplinks``' key), so it is counted once, and
a batch's readings are summed per row in Python first, so a batch costs one upsert per row it
touches. The twin row of the device is locked first (`cloud.twin.rows`), so two workers never
update one device's rollups at once. Charts whose buckets start on a whole minute or hour and
are a whole number of them wide read rollups (`bucket_rows`): a 30-day chart reads 720 hourly
rows per point instead of every reading, whatever the reporting rate. SQLite keeps the simple
path: charts aggregate raw samples there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import BigInteger, Table, func, literal_column, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from cloud.models import SampleRollup

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
WIDTHS_MS = (MINUTE_MS, HOUR_MS)

Aggregate = list[float]
"""[n, total, min, max]."""


def enabled(session: Session) -> bool:
    """Whether this database keeps rollups (PostgreSQL)."""
    return session.get_bind().dialect.name == "postgresql"


def add(session: Session, readings: Iterable[tuple[str, str, int, float | None]]) -> None:
    """Add (device, point, ts_ms, num) readings to their rollups; text readings (num None)
    are not summed. Does nothing where rollups are not kept."""
    if not enabled(session):
        return
    rows: dict[tuple[str, str, int, int], Aggregate] = {}
    for device_id, point, ts_ms, num in readings:
        if num is None:
            continue
        for width in WIDTHS_MS:
            key = (device_id, point, width, ts_ms // width * width)
            held = rows.get(key)
            if held is None:
                rows[key] = [1, num, num, num]
            else:
                held[0] += 1
                held[1] += num
                held[2] = min(held[2], num)
                held[3] = max(held[3], num)
    if rows:
        session.execute(
            _UPSERT,
            [
                {
                    "device_id": d,
                    "point": p,
                    "width_ms": w,
                    "bucket_ms": b,
                    "n": int(a[0]),
                    "total": a[1],
                    "min": a[2],
                    "max": a[3],
                }
                for (d, p, w, b), a in sorted(rows.items())
            ],
        )


def _upsert() -> Any:
    statement = postgresql.insert(cast(Table, SampleRollup.__table__))
    new, held = statement.excluded, SampleRollup.__table__.c
    return statement.on_conflict_do_update(
        index_elements=["device_id", "point", "width_ms", "bucket_ms"],
        set_={
            "n": held.n + new.n,
            "total": held.total + new.total,
            "min": func.least(held.min, new.min),
            "max": func.greatest(held.max, new.max),
        },
    )


_UPSERT = _upsert()


def width_for(since_ms: int, step_ms: int) -> int | None:
    """The widest rollup that tiles buckets of `step_ms` starting at `since_ms`, or None."""
    for width in reversed(WIDTHS_MS):
        if since_ms % width == 0 and step_ms % width == 0:
            return width
    return None


def bucket_rows(
    session: Session,
    device_id: str,
    names: Sequence[str],
    since_ms: int,
    until_ms: int,
    step_ms: int,
    width: int,
) -> dict[tuple[str, int], Aggregate]:
    """{(point, bucket index): [n, total, min, max]} from the rollups of `width` covering
    [since, until); the caller reads any part of the last `width` beyond them raw."""
    origin = literal_column(str(int(since_ms)), BigInteger())
    step = literal_column(str(int(step_ms)), BigInteger())
    bucket = ((SampleRollup.bucket_ms - origin) // step).label("bucket")
    query = (
        select(
            SampleRollup.point,
            bucket,
            func.sum(SampleRollup.n).label("n"),
            func.sum(SampleRollup.total).label("total"),
            func.min(SampleRollup.min).label("min"),
            func.max(SampleRollup.max).label("max"),
        )
        .where(
            SampleRollup.device_id == device_id,
            SampleRollup.point.in_(names),
            SampleRollup.width_ms == width,
            SampleRollup.bucket_ms >= since_ms,
            SampleRollup.bucket_ms < until_ms,
        )
        .group_by(SampleRollup.point, bucket)
    )
    return {
        (row.point, int(row.bucket)): [int(row.n), float(row.total), row.min, row.max]
        for row in session.execute(query)
    }
