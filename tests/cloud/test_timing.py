"""A device clock that is not trusted, or runs ahead, never decides what the twin shows.

The finding: one reading stamped in the year 2100 with ``sync=false`` was accepted as the
newest status, so later honest lockout readings were ignored and the twin said "running"
during a lockout. `order_time` is tested pure; the rest on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from cloud.models import Sample, ThreadEvent, TwinValue, Uplink
from cloud.timing import AHEAD, UNTRUSTED, order_time
from protocols.messages import Event, EventKind, Reading, TelemetryBatch
from protocols.reference import BoilerStatus
from tests.cloud.helpers import T0
from tests.cloud.ingest_world import DEV, World, open_world

YEAR_2100 = 4_102_444_800_000
FIVE_MIN = 300_000
NOW = T0 + 60_000


def batch(*readings: tuple[str, int, float], ts: int, sync: bool, seq: int = 1) -> TelemetryBatch:
    return TelemetryBatch(
        dev=DEV,
        epoch=1,
        seq=seq,
        ts=ts,
        sync=sync,
        readings=tuple(Reading(point, at, value) for point, at, value in readings),
    )


# -- order_time (pure) -------------------------------------------------------------------------


def test_a_synchronised_clock_within_the_allowance_is_trusted_as_it_is() -> None:
    message = batch(("flow_temp", NOW - 5_000, 60.0), ts=NOW + FIVE_MIN, sync=True)
    timing = order_time(message, NOW, FIVE_MIN)
    assert timing.message is message and timing.reason is None and timing.evidence == {}


def test_an_unsynchronised_batch_is_placed_before_receipt_keeping_its_shape() -> None:
    built = 1_000_000  # a Pi without a real-time clock, just booted: 1970
    message = batch(
        ("flow_temp", built - 20_000, 60.0),
        ("flow_temp", built - 10_000, 61.0),
        ("flow_temp", built + 5, 62.0),  # later than the header: placed at receipt
        ts=built,
        sync=False,
    )
    timing = order_time(message, NOW, FIVE_MIN)
    assert timing.reason == UNTRUSTED and timing.device_ts == built
    assert timing.message.ts == NOW
    assert isinstance(timing.message, TelemetryBatch)
    assert [r.ts for r in timing.message.readings] == [NOW - 20_000, NOW - 10_000, NOW]
    assert timing.reading_ts == (built - 20_000, built - 10_000, built + 5)
    assert timing.evidence == {"clock": UNTRUSTED, "device_ts": built}


def test_a_clock_far_ahead_is_ordered_by_receipt_even_when_it_says_it_is_synchronised() -> None:
    message = batch(("status", YEAR_2100, 4), ts=YEAR_2100, sync=True)
    timing = order_time(message, NOW, FIVE_MIN)
    assert timing.reason == AHEAD and timing.message.ts == NOW
    assert isinstance(timing.message, TelemetryBatch)
    assert timing.message.readings[0].ts == NOW


def test_a_single_reading_ahead_in_a_trusted_batch_alone_is_re_timed() -> None:
    message = batch(("status", NOW - 1, 4), ("fault_code", YEAR_2100, 0), ts=NOW, sync=True)
    timing = order_time(message, NOW, FIVE_MIN)
    assert timing.reason is None
    assert isinstance(timing.message, TelemetryBatch)
    assert [r.ts for r in timing.message.readings] == [NOW - 1, NOW]
    assert timing.reading_ts == (None, YEAR_2100)


def test_an_event_keeps_its_body_and_gets_the_receipt_time() -> None:
    event = Event(dev=DEV, epoch=1, seq=3, ts=YEAR_2100, sync=False, kind=EventKind.LOCKOUT)
    timing = order_time(event, NOW, FIVE_MIN)
    assert timing.message == Event(
        dev=DEV, epoch=1, seq=3, ts=NOW, sync=False, kind=EventKind.LOCKOUT
    )
    assert timing.evidence == {"clock": UNTRUSTED, "device_ts": YEAR_2100}


def test_readings_are_never_placed_before_1970() -> None:
    message = batch(("flow_temp", 0, 60.0), ts=YEAR_2100, sync=False)
    timing = order_time(message, 10_000, FIVE_MIN)
    assert isinstance(timing.message, TelemetryBatch) and timing.message.readings[0].ts == 0


# -- ingest ----------------------------------------------------------------------------------


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    with open_world(db_url) as w:
        w.clock.now = NOW
        yield w


def retimed(reason: str) -> float:
    return REGISTRY.get_sample_value("boilertwin_ingest_retimed_total", {"reason": reason}) or 0.0


@pytest.mark.parametrize("sync", [False, True], ids=["sync-false", "sync-true"])
def test_a_reading_from_2100_never_shadows_a_later_honest_lockout(world: World, sync: bool) -> None:
    """The exact case: 'running' stamped 2100, then an honest lockout a minute later."""
    reason = UNTRUSTED if not sync else AHEAD
    before = retimed(reason)
    future = batch(("status", YEAR_2100, int(BoilerStatus.RUNNING)), ts=YEAR_2100, sync=sync, seq=1)
    assert world.send(future).outcome == "accepted"
    assert retimed(reason) - before == 1
    twin = world.twin()
    assert twin is not None and twin.status == BoilerStatus.RUNNING

    world.clock.advance(60_000)
    honest = batch(
        ("status", world.clock.now, int(BoilerStatus.LOCKOUT)), ts=world.clock.now, sync=True, seq=2
    )
    assert world.send(honest).outcome == "accepted"
    twin = world.twin()
    assert twin is not None and twin.status == BoilerStatus.LOCKOUT
    with world.sessions() as session:
        samples = session.execute(
            select(Sample.seq, Sample.ts_ms, Sample.device_ts_ms).order_by(Sample.seq)
        ).all()
        latest = session.get(TwinValue, (DEV, "status"))
        uplink = session.get(Uplink, (DEV, 1))
    # Ordered by receipt, the device's own time kept beside it.
    assert [tuple(row) for row in samples] == [
        (1, NOW, YEAR_2100),
        (2, NOW + 60_000, None),
    ]
    assert latest is not None and (latest.ts_ms, latest.device_ts_ms) == (NOW + 60_000, None)
    assert uplink is not None and uplink.ts_ms == YEAR_2100  # the message as signed


def test_the_twin_shows_a_re_timed_value_with_the_device_s_own_time(world: World) -> None:
    future = batch(("flow_temp", YEAR_2100, 61.0), ts=YEAR_2100, sync=False)
    world.send(future)
    with world.sessions() as session:
        value = session.get(TwinValue, (DEV, "flow_temp"))
    assert value is not None and (value.ts_ms, value.device_ts_ms) == (NOW, YEAR_2100)


def test_a_future_lockout_event_is_recorded_at_receipt_with_its_evidence(world: World) -> None:
    event = Event(
        dev=DEV,
        epoch=1,
        seq=1,
        ts=YEAR_2100,
        sync=False,
        kind=EventKind.LOCKOUT,
        detail={"fault": "F28", "fault_code": 28},
    )
    assert world.send(event).outcome == "accepted"
    with world.sessions() as session:
        recorded = session.scalars(select(ThreadEvent).where(ThreadEvent.device_id == DEV)).one()
    assert recorded.ts_ms == NOW
    assert recorded.data["clock"] == UNTRUSTED and recorded.data["device_ts"] == YEAR_2100


def lag() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("boilertwin_ingest_lag_seconds_count") or 0.0
    total = REGISTRY.get_sample_value("boilertwin_ingest_lag_seconds_sum") or 0.0
    return count, total


def test_ingest_lag_is_measured_from_trusted_device_time_only(world: World) -> None:
    count, total = lag()
    late = batch(("flow_temp", NOW - 90_000, 60.0), ts=NOW - 90_000, sync=True, seq=1)
    assert world.send(late).outcome == "accepted"
    assert world.send(late).outcome == "duplicate"  # a duplicate is not a delivery
    untrusted = batch(("flow_temp", NOW - 5_000, 61.0), ts=NOW - 5_000, sync=False, seq=2)
    assert world.send(untrusted).outcome == "accepted"
    after_count, after_total = lag()
    assert after_count - count == 1
    assert after_total - total == pytest.approx(90.0)
