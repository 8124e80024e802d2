"""Raw samples at fleet scale: time partitions on PostgreSQL, and the retention policy.

On PostgreSQL ``samples`` is partitioned by range of ``ts_ms`` (native declarative
partitioning; migration 0007 converts an existing table). Each partition holds
`samples_partition_days` days, counted from the Unix epoch in UTC, and is named after its
first day (``samples_p20261130``); ``samples_default`` catches whatever no partition covers
(a reading from long ago or far ahead). Housekeeping (`maintain`) keeps partitions ready for
the next two periods, so ingest never waits on DDL, and drops whole partitions older than
`samples_retention_days` (if set): dropping a partition is instant, deleting its rows is not.
A new partition takes over any rows of its range that sat in ``samples_default``.

On SQLite (the embedded default) there are no partitions: retention deletes old rows.

Retention is policy, not loss: every drop is logged with its range and row count and counted
in ``boilertwin_retention_dropped_rows_total{table}``. Rollups (`cloud.twin.rollups`) outlive
raw samples: hourly ones are kept for ever, per-minute ones for `rollups_retention_days`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, select, text
from sqlalchemy.engine import Engine

from cloud.metrics import RETENTION_DROPPED
from cloud.models import Sample, SampleRollup
from cloud.twin import rollups
from cloud.twin.rollups import MINUTE_MS

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
PARENT = "samples"
DEFAULT_PARTITION = "samples_default"
AHEAD = 2
"""Periods kept ready beyond the current one."""
MAINTENANCE_LOCK = 0x62745F70  # "bt_p": one process at a time does partition DDL
COMPACT_DAYS = 2
"""Each round merges the rollup rows of the buckets of the last two days (`rollups.compact`)."""
DELETE_BATCH = 50_000
"""SQLite retention deletes at most this many rows per statement (short write locks)."""

_NAME = re.compile(r"^samples_p(\d{8})$")
_BOUND = re.compile(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    start_ms: int
    end_ms: int


def is_partition_table(name: str) -> bool:
    """Whether `name` is one of ``samples``' partitions (tables the models do not declare)."""
    return name == DEFAULT_PARTITION or _NAME.match(name) is not None


def partition_name(start_ms: int) -> str:
    """``samples_pYYYYMMDD`` for the partition beginning at `start_ms` (UTC)."""
    return f"samples_p{datetime.fromtimestamp(start_ms / 1000, UTC):%Y%m%d}"


def period_start(ts_ms: int, days: int) -> int:
    """The start of the `days`-day period holding `ts_ms` (periods counted from the epoch)."""
    width = days * DAY_MS
    return ts_ms // width * width


def is_partitioned(connection: Connection) -> bool:
    """Whether ``samples`` is a partitioned table here (PostgreSQL after migration 0007)."""
    if connection.dialect.name != "postgresql":
        return False
    kind = connection.scalar(text("SELECT relkind FROM pg_class WHERE relname = :t"), {"t": PARENT})
    return bool(kind == "p")


def partitions(connection: Connection) -> list[Partition]:
    """The range partitions of ``samples`` (not the default one), oldest first."""
    rows = connection.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = :parent"
        ),
        {"parent": PARENT},
    ).all()
    found = []
    for name, bound in rows:
        match = _BOUND.search(bound or "")
        if match is not None:
            found.append(Partition(name, int(match.group(1)), int(match.group(2))))
    return sorted(found, key=lambda p: p.start_ms)


def create_partition(connection: Connection, start_ms: int, end_ms: int) -> Partition:
    """Attach a partition for [start, end), taking over rows of that range from the default
    partition (in the caller's transaction: all or nothing)."""
    name = partition_name(start_ms)
    bounds = {"start": start_ms, "end": end_ms}
    connection.execute(text(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS)"))
    moved = connection.execute(
        text(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} "
            "WHERE ts_ms >= :start AND ts_ms < :end RETURNING *) "
            f"INSERT INTO {name} SELECT * FROM moved"
        ),
        bounds,
    ).rowcount
    connection.execute(
        text(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {name} "
            f"FOR VALUES FROM ({int(start_ms)}) TO ({int(end_ms)})"
        )
    )
    log.info("samples partition %s created (%d rows from the default partition)", name, moved)
    return Partition(name, start_ms, end_ms)


def ensure_partitions(connection: Connection, now_ms: int, days: int) -> list[Partition]:
    """Partitions from the previous period to `AHEAD` periods after the current one, each
    starting where the newest existing one ends (a changed `days` applies from there); a
    range older than that left uncovered falls to the default partition. Returns those
    created."""
    existing = partitions(connection)
    width = days * DAY_MS
    current = period_start(now_ms, days)
    # the previous period too: a gateway back from days offline brings its backlog
    start = max(existing[-1].end_ms, current - width) if existing else current - width
    until = current + (AHEAD + 1) * width
    created = []
    while start < until:
        created.append(create_partition(connection, start, start + width))
        start += width
    return created


def drop_expired(connection: Connection, cutoff_ms: int) -> int:
    """Drop every partition wholly older than `cutoff_ms` and delete older rows from the
    default partition; returns the rows dropped."""
    dropped = 0
    for partition in partitions(connection):
        if partition.end_ms > cutoff_ms:
            break
        rows = connection.scalar(text(f"SELECT count(*) FROM {partition.name}")) or 0
        connection.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {partition.name}"))
        connection.execute(text(f"DROP TABLE {partition.name}"))
        log.info(
            "retention: dropped samples partition %s (%s to %s, %d rows)",
            partition.name,
            _day(partition.start_ms),
            _day(partition.end_ms),
            rows,
        )
        dropped += rows
    dropped += (
        connection.execute(
            text(f"DELETE FROM {DEFAULT_PARTITION} WHERE ts_ms < :cutoff"), {"cutoff": cutoff_ms}
        ).rowcount
        or 0
    )
    return dropped


def _day(ts_ms: int) -> str:
    return f"{datetime.fromtimestamp(ts_ms / 1000, UTC):%Y-%m-%d}"


@dataclass(frozen=True, slots=True)
class Retention:
    """What to keep: raw samples, and per-minute rollups (None: for ever)."""

    partition_days: int = 7
    samples_days: float | None = None
    minute_rollups_days: float | None = None


def maintain(engine: Engine, now_ms: int, retention: Retention) -> dict[str, int]:
    """One housekeeping round: partitions ready ahead and recent rollups merged (PostgreSQL),
    then retention. Returns
    rows dropped per table. On PostgreSQL one process at a time (an advisory lock; the others
    skip the round)."""
    dropped: dict[str, int] = {}
    with engine.begin() as connection:
        partitioned = is_partitioned(connection)
        if partitioned:
            locked = connection.scalar(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": MAINTENANCE_LOCK}
            )
            if not locked:
                return dropped
            ensure_partitions(connection, now_ms, retention.partition_days)
            rollups.compact(connection, now_ms - COMPACT_DAYS * DAY_MS, now_ms + DAY_MS)
        if retention.samples_days is not None:
            cutoff = now_ms - int(retention.samples_days * DAY_MS)
            if partitioned:
                dropped["samples"] = drop_expired(connection, cutoff)
            else:
                dropped["samples"] = _delete_in_batches(connection, cutoff)
        if retention.minute_rollups_days is not None:
            cutoff = now_ms - int(retention.minute_rollups_days * DAY_MS)
            dropped["sample_rollups"] = (
                connection.execute(
                    delete(SampleRollup).where(
                        SampleRollup.width_ms == MINUTE_MS, SampleRollup.bucket_ms < cutoff
                    )
                ).rowcount
                or 0
            )
    for table, rows in dropped.items():
        if rows:
            RETENTION_DROPPED.labels(table).inc(rows)
            log.info("retention: %d %s rows older than the policy removed", rows, table)
    return dropped


def _delete_in_batches(connection: Connection, cutoff_ms: int) -> int:
    total = 0
    while True:
        oldest = (
            select(Sample.id).where(Sample.ts_ms < cutoff_ms).limit(DELETE_BATCH).scalar_subquery()
        )
        rows = connection.execute(delete(Sample).where(Sample.id.in_(oldest))).rowcount or 0
        total += rows
        if rows < DELETE_BATCH:
            return total
