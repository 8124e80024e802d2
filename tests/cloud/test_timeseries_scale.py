"""Time series at fleet scale on real databases: rollups kept by ingest give exactly the
buckets raw samples would; on PostgreSQL samples are partitioned by time, partitions are made
ahead and take over rows from the default partition, and retention drops whole partitions
(SQLite deletes rows)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import func, select, text

from cloud.db import _alembic_config
from cloud.ingest import Message
from cloud.models import Sample, SampleRollup
from cloud.partitions import (
    DAY_MS,
    Retention,
    ensure_partitions,
    is_partitioned,
    maintain,
    partition_name,
    partitions,
    period_start,
)
from cloud.twin.figures import timeseries
from cloud.twin.rollups import HOUR_MS, MINUTE_MS
from tests.cloud.helpers import topic_of
from tests.cloud.ingest_world import DEV, World, open_world

NOW = 1_790_000_000_000
SINCE = NOW // HOUR_MS * HOUR_MS - 30 * HOUR_MS  # a whole hour, 30 hours back


def at_now(url: str) -> Iterator[World]:
    with open_world(url) as w:
        w.clock.now = NOW
        yield w


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    yield from at_now(db_url)


@pytest.fixture
def pg_world(pg_url: str) -> Iterator[World]:
    yield from at_now(pg_url)


@pytest.fixture
def sqlite_world(sqlite_url: str) -> Iterator[World]:
    yield from at_now(sqlite_url)


def readings(rng: random.Random, count: int) -> list[tuple[str, int, float]]:
    """(point, ts, value) readings over the 30 hours, unordered, some on bucket edges."""
    out = []
    for _ in range(count):
        ts = rng.randrange(SINCE, NOW)
        if rng.random() < 0.1:
            ts = ts // MINUTE_MS * MINUTE_MS
        out.append((rng.choice(("flow_temp", "ch_pressure")), ts, round(rng.uniform(0, 80), 2)))
    return out


def expected(rows: list[tuple[str, int, float]], since: int, until: int, step: int) -> dict:
    held: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for point, ts, value in rows:
        if since <= ts < until:
            held[point][(ts - since) // step].append(value)
    return {
        point: [
            {
                "ts": since + i * step,
                "min": min(v),
                "max": max(v),
                "count": len(v),
                "avg": sum(v) / len(v),
            }
            for i, v in sorted(buckets.items())
        ]
        for point, buckets in held.items()
    }


def stored(world: World, rows: list[tuple[str, int, float]]) -> None:
    """Through ingest: half one message at a time, half as one batch (group commit)."""
    chunks = [rows[i : i + 5] for i in range(0, len(rows), 5)]
    batch = []
    for i, chunk in enumerate(chunks):
        message = world.dev.data(chunk, seq=i + 1)
        if i % 2:
            assert world.send(message).outcome == "accepted"
        else:
            batch.append(Message(topic_of(message), world.dev.seal(message)))
    assert {o.outcome for o in world.ingest.handle_many(batch)} == {"accepted"}


def same(got: dict, want: dict) -> None:
    assert set(got) >= set(want)
    for point, buckets in want.items():
        assert len(got[point]) == len(buckets), point
        for g, w in zip(got[point], buckets, strict=True):
            assert (g["ts"], g["count"], g["min"], g["max"]) == (
                w["ts"],
                w["count"],
                w["min"],
                w["max"],
            )
            assert g["avg"] == pytest.approx(w["avg"])


@pytest.mark.parametrize("step", [HOUR_MS, 3 * HOUR_MS, 5 * MINUTE_MS])
def test_charts_read_the_same_buckets_from_rollups_as_from_raw_samples(
    world: World, step: int
) -> None:
    rows = readings(random.Random(step), 600)
    stored(world, rows)
    with world.sessions() as session:
        # `until` inside an hour: the newest part-bucket is read raw
        until = NOW - 7 * MINUTE_MS - 1234
        world.queries.clear()
        got = timeseries(session, DEV, ["flow_temp", "ch_pressure"], SINCE, until, step, 10_000)
        rollups = session.scalar(select(func.count()).select_from(SampleRollup))
    assert got["mode"] == "buckets"
    same(got["points"], expected(rows, SINCE, until, step))
    if world.sessions.kw["bind"].dialect.name == "postgresql":
        assert rollups, "PostgreSQL keeps rollups"
        assert any("FROM sample_rollups" in q for q in world.queries), "and charts read them"
    else:
        assert rollups == 0, "SQLite keeps the simple path"


def hourly(world: World) -> tuple[int, dict[tuple[str, int], tuple[int, float, float]]]:
    """(rows, {(point, hour): (n, min, max)}) of the hourly rollups, rows combined."""
    held: dict[tuple[str, int], list[float]] = {}
    rows = 0
    with world.sessions() as session:
        for r in session.scalars(select(SampleRollup).where(SampleRollup.width_ms == HOUR_MS)):
            rows += 1
            a = held.setdefault((r.point, r.bucket_ms), [0, r.min, r.max])
            a[0] += r.n
            a[1], a[2] = min(a[1], r.min), max(a[2], r.max)
    return rows, {k: (int(n), low, high) for k, (n, low, high) in held.items()}


def test_rollups_hold_exactly_the_stored_readings_once(pg_world: World) -> None:
    rows = readings(random.Random(7), 300)
    stored(pg_world, rows)
    copy = pg_world.dev.data(rows[:5], seq=1)  # a duplicate of the first message changes nothing
    assert pg_world.send(copy).outcome == "duplicate"
    want: dict[tuple[str, int], list[float]] = defaultdict(list)
    for point, ts, value in rows:
        want[(point, ts // HOUR_MS * HOUR_MS)].append(value)
    expected_hours = {k: (len(v), min(v), max(v)) for k, v in want.items()}
    appended, hours = hourly(pg_world)
    assert hours == expected_hours
    assert appended > len(expected_hours), "ingest appends a row per bucket and transaction"
    engine = pg_world.sessions.kw["bind"]
    maintain(engine, NOW, Retention())  # merges the rows of each recent bucket into one
    compacted, hours = hourly(pg_world)
    assert hours == expected_hours
    assert compacted == len(expected_hours)


def test_samples_are_partitioned_and_partitions_are_made_ahead(pg_world: World) -> None:
    engine = pg_world.sessions.kw["bind"]
    maintain(engine, NOW, Retention(partition_days=7))
    with engine.connect() as connection:
        assert is_partitioned(connection)
        made = partitions(connection)
    week = 7 * DAY_MS
    current = period_start(NOW, 7)
    assert [p.start_ms for p in made][-4:] == [
        current - week,
        current,
        current + week,
        current + 2 * week,
    ]
    assert made[-1].name == partition_name(current + 2 * week)
    maintain(engine, NOW, Retention(partition_days=7))  # idempotent
    with engine.connect() as connection:
        assert partitions(connection) == made


def test_a_new_partition_takes_over_its_rows_from_the_default_one(pg_world: World) -> None:
    engine = pg_world.sessions.kw["bind"]
    old = NOW - 60 * DAY_MS  # no partition covers it yet: the default partition holds it
    assert pg_world.send(pg_world.dev.data([("flow_temp", old, 1.5)], seq=1)).outcome == "accepted"
    with engine.begin() as connection:
        assert connection.scalar(text("SELECT count(*) FROM samples_default")) == 1
        start = period_start(old, 7)
        ensure_partitions(connection, old, 7)
        assert connection.scalar(text("SELECT count(*) FROM samples_default")) == 0
        assert connection.scalar(text(f"SELECT count(*) FROM {partition_name(start)}")) == 1
    with pg_world.sessions() as session:
        assert session.scalar(select(Sample.num).where(Sample.ts_ms == old)) == 1.5


def test_retention_drops_whole_old_partitions_and_keeps_hourly_rollups(pg_world: World) -> None:
    engine = pg_world.sessions.kw["bind"]
    old, recent = NOW - 100 * DAY_MS, NOW - DAY_MS
    with engine.begin() as connection:
        ensure_partitions(connection, old, 7)
    maintain(engine, NOW, Retention(partition_days=7))
    rows = [("flow_temp", old, 1.0), ("flow_temp", old + 1, 2.0), ("flow_temp", recent, 3.0)]
    assert pg_world.send(pg_world.dev.data(rows, seq=1)).outcome == "accepted"
    dropped = maintain(
        engine, NOW, Retention(partition_days=7, samples_days=30, minute_rollups_days=30)
    )
    assert dropped == {"samples": 2, "sample_rollups": 1}
    with engine.connect() as connection:
        names = {p.name for p in partitions(connection)}
    assert partition_name(period_start(old, 7)) not in names
    with pg_world.sessions() as session:
        assert session.scalars(select(Sample.num)).all() == [3.0]
        hourly = session.scalars(
            select(SampleRollup.bucket_ms).where(SampleRollup.width_ms == HOUR_MS)
        ).all()
    assert old // HOUR_MS * HOUR_MS in hourly, "the hour of the dropped readings is kept"


def test_sqlite_retention_deletes_old_rows(sqlite_world: World) -> None:
    world = sqlite_world
    engine = world.sessions.kw["bind"]
    rows = [("flow_temp", NOW - 40 * DAY_MS, 1.0), ("flow_temp", NOW - DAY_MS, 2.0)]
    assert world.send(world.dev.data(rows, seq=1)).outcome == "accepted"
    assert maintain(engine, NOW, Retention(samples_days=30)) == {"samples": 1}
    with world.sessions() as session:
        assert session.scalars(select(Sample.num)).all() == [2.0]


def test_the_migration_partitions_an_existing_table_and_rolls_up_its_readings(
    pg_world: World,
) -> None:
    engine = pg_world.sessions.kw["bind"]
    config = _alembic_config(engine)
    command.downgrade(config, "0006")
    with engine.connect() as connection:
        assert not is_partitioned(connection)
    rows = [("flow_temp", NOW - 20 * DAY_MS, 1.0), ("flow_temp", NOW - 20 * DAY_MS + 1, 3.0)]
    rows.append(("flow_temp", NOW, 5.0))
    with engine.begin() as connection:
        for i, (point, ts, value) in enumerate(rows):
            connection.execute(
                text(
                    "INSERT INTO samples (device_id, point, ts_ms, num, quality, seq) "
                    "VALUES (:d, :p, :t, :v, 'good', :s)"
                ),
                {"d": DEV, "p": point, "t": ts, "v": value, "s": i + 1},
            )
    command.upgrade(config, "head")
    with engine.connect() as connection:
        assert is_partitioned(connection)
        assert len(partitions(connection)) == 2, "one per week that holds readings"
        assert connection.scalar(text("SELECT count(*) FROM samples_default")) == 0
        assert connection.scalar(select(func.count()).select_from(Sample)) == 3
        hour = connection.execute(
            select(SampleRollup.n, SampleRollup.total).where(
                SampleRollup.width_ms == HOUR_MS,
                SampleRollup.bucket_ms == (NOW - 20 * DAY_MS) // HOUR_MS * HOUR_MS,
            )
        ).one()
    assert tuple(hour) == (2, 4.0)
    # new rows get new ids from the same sequence
    assert pg_world.send(pg_world.dev.data([("flow_temp", NOW, 6.0)], seq=9)).outcome == "accepted"
