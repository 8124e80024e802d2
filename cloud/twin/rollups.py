"""Per-minute and per-hour rollups of numeric readings (count, sum, min, max), PostgreSQL only.

Ingest appends each transaction's readings to their minute and hour rows (`add`), summed per
(device, point, width, bucket) in Python first and written with ``COPY``: no upsert, no row
locks, in the transaction that stores the samples (a message is stored once, by ``uplinks``'
key, so it is counted once). Housekeeping merges the rows of each bucket into one
(`compact`); rows combine (sum n and total, min of min, max of max), so readers aggregate
whatever rows there are and never depend on compaction having run. Charts whose buckets start
on a whole minute or hour and are a whole number of them wide read rollups (`bucket_rows`):
a 30-day chart reads 720 hourly rows per point instead of every reading, whatever the
reporting rate. SQLite keeps the simple path: charts aggregate raw samples there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import BigInteger, Connection, func, literal_column, select, text
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
        raw = session.connection().connection.driver_connection
        statement = f"COPY {SampleRollup.__tablename__} ({', '.join(COLUMNS)}) FROM STDIN"
        with raw.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            for (d, p, w, b), a in rows.items():
                copy.write_row((d, p, w, b, int(a[0]), a[1], a[2], a[3]))


COLUMNS = ("device_id", "point", "width_ms", "bucket_ms", "n", "total", "min", "max")

_COMPACT = text(
    """
    WITH split AS (
        SELECT device_id, point, width_ms, bucket_ms FROM sample_rollups
        WHERE bucket_ms >= :since AND bucket_ms < :until
        GROUP BY device_id, point, width_ms, bucket_ms HAVING count(*) > 1
    ), merged AS (
        DELETE FROM sample_rollups r USING split s
        WHERE r.device_id = s.device_id AND r.point = s.point AND r.width_ms = s.width_ms
          AND r.bucket_ms = s.bucket_ms
        RETURNING r.device_id, r.point, r.width_ms, r.bucket_ms, r.n, r.total, r.min, r.max
    )
    INSERT INTO sample_rollups (device_id, point, width_ms, bucket_ms, n, total, min, max)
    SELECT device_id, point, width_ms, bucket_ms, sum(n), sum(total), min(min), max(max)
    FROM merged GROUP BY device_id, point, width_ms, bucket_ms
    """
)


def compact(connection: Connection, since_ms: int, until_ms: int) -> int:
    """Merge the rows of each bucket starting in [since, until) that has several into one,
    atomically (rows appended meanwhile are merged next time); returns the buckets merged.
    Buckets outside the range keep their rows: still exact, only less compact."""
    if connection.dialect.name != "postgresql":
        return 0
    merged = connection.execute(_COMPACT, {"since": since_ms, "until": until_ms}).rowcount
    return int(merged or 0)


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
