"""The cloud's side of end-to-end delivery on a real database: what a watermark says is
stored (never more than is), and when a device is due one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.keys import keygen
from cloud.settings import CloudSettings
from cloud.twin.delivered import watermark_for
from cloud.twin.gaps import detect_gaps
from cloud.watermarks import ASKED_AFTER_MS, WatermarkSender
from protocols.cose import open_watermark
from protocols.messages import MAX_MISSING_RANGES
from protocols.topics import TopicKind, topic
from tests.cloud.ingest_world import DEV, World, open_world
from tests.cloud.memory_mqtt import MemoryLink

T0 = 1_790_000_000_000


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    with open_world(db_url) as w:
        yield w


def send(world: World, *seqs: int) -> None:
    for seq in seqs:
        assert world.send(world.dev.data([("flow_temp", T0 + seq, 1.0)], seq=seq)).outcome == (
            "accepted"
        )


def watermark(world: World, **options: int):  # type: ignore[no-untyped-def]
    with world.sessions() as session:
        return watermark_for(session, DEV, world.clock(), **options)


def test_nothing_stored_means_no_watermark(world: World) -> None:
    assert watermark(world) is None


def test_it_covers_exactly_what_is_stored(world: World) -> None:
    send(world, 3, 4, 6, 7, 10)
    mark = watermark(world)
    assert mark is not None and mark.upto == 10
    assert mark.missing == ((1, 2), (5, 5), (8, 9))
    assert [s for s in range(1, 12) if mark.covers(s)] == [3, 4, 6, 7, 10]


def test_device_reported_losses_are_not_asked_for_and_declared_gaps_are(world: World) -> None:
    send(world, 1, 2, 5)
    assert world.send(world.dev.gap(((3, 3),), seq=6)).outcome == "accepted"
    send(world, 9)
    world.clock.advance(10 * 60_000)
    detect_gaps(world.sessions, world.clock(), grace_ms=60_000)  # 4 and 7..8: unexplained
    mark = watermark(world)
    assert mark is not None and mark.upto == 9
    assert mark.missing == ((4, 4), (7, 8)), "3 was dropped by the device: not asked for"
    send(world, 4)
    mark = watermark(world)
    assert mark is not None and mark.missing == ((7, 8),)


def test_a_long_backlog_is_confirmed_window_by_window(world: World) -> None:
    send(world, *range(1, 21))
    mark = watermark(world, window=5)
    assert mark is not None and (mark.upto, mark.missing) == (20, ())  # contiguous: no scan
    send(world, *range(22, 40, 2))  # 21, 23, ... missing above contiguous_seq (20)
    mark = watermark(world, window=4)
    assert mark is not None and mark.upto == 28, "only as far as the scanned window"
    assert mark.missing == ((21, 21), (23, 23), (25, 25), (27, 27))


def test_too_many_holes_lower_upto_below_the_first_unlisted_one(world: World) -> None:
    seqs = range(1, 2 * (MAX_MISSING_RANGES + 10), 2)  # every other seq
    send(world, *seqs)
    mark = watermark(world)
    assert mark is not None and len(mark.missing) == MAX_MISSING_RANGES
    unlisted = 2 * (MAX_MISSING_RANGES + 1)
    assert mark.upto == unlisted - 1
    assert all(mark.covers(s) == (s % 2 == 1) for s in range(1, mark.upto + 1))


async def test_due_once_per_connection_then_at_most_every_interval(
    world: World, tmp_path: Path
) -> None:
    key = keygen(tmp_path / "keys", "cloud-test")
    settings = CloudSettings(db_url="sqlite://", watermark_interval_s=600)
    sender = WatermarkSender(world.sessions, key, settings, world.clock)
    world.clock.advance(1000)
    assert world.send(world.dev.birth(seq=1)).outcome == "accepted"
    send(world, 2)
    link = MemoryLink()
    assert await sender.send_due(link) == 1
    ((name, envelope),) = link.published
    assert name == topic(DEV, TopicKind.STORED)
    mark = open_watermark(envelope, DEV, {key.kid: key.key.public_key()})
    assert (mark.upto, mark.missing) == (2, ())
    send(world, 3)
    assert await sender.send_due(link) == 0, "not before the interval"
    world.clock.advance(600_000)
    assert await sender.send_due(link) == 1, "more data and the interval has passed"
    assert await sender.send_due(link) == 0
    assert world.send(world.dev.birth(seq=4)).outcome == "accepted"
    assert await sender.send_due(link) == 1, "a new connection: told at once"
    no_session = MemoryLink(puback=lambda _: 0x10)
    world.clock.advance(600_000)
    send(world, 5)
    assert await sender.send_due(no_session) == 0
    world.clock.advance(1000)
    assert await sender.send_due(link) == 0, "not accepted: due again only after the interval"
    world.clock.advance(600_000)
    assert await sender.send_due(link) == 1, "not accepted: told again, with nothing new sent"


async def test_holes_filled_by_resends_are_confirmed(world: World, tmp_path: Path) -> None:
    """The last seq does not move when a resend fills a hole below it; the device still
    needs to hear that the hole is filled, or it keeps what it resent for ever."""
    key = keygen(tmp_path / "keys", "cloud-test")
    settings = CloudSettings(db_url="sqlite://", watermark_interval_s=600)
    sender = WatermarkSender(world.sessions, key, settings, world.clock)
    world.clock.advance(1000)
    assert world.send(world.dev.birth(seq=1)).outcome == "accepted"
    send(world, 2, 4)
    link = MemoryLink()
    assert await sender.send_due(link) == 1
    send(world, 3)
    world.clock.advance(600_000)
    assert await sender.send_due(link) == 1, "the hole at 3 is filled"
    mark = open_watermark(link.published[-1][1], DEV, {key.kid: key.key.public_key()})
    assert (mark.upto, mark.missing) == (4, ())


async def test_a_device_resending_what_is_stored_is_told_again_soon(
    world: World, tmp_path: Path
) -> None:
    """Duplicates mean the device did not get its watermark (the broker lost it): it is told
    again after `ASKED_AFTER_MS`, not after the (long) interval."""
    key = keygen(tmp_path / "keys", "cloud-test")
    settings = CloudSettings(db_url="sqlite://", watermark_interval_s=1800)
    sender = WatermarkSender(world.sessions, key, settings, world.clock)
    world.clock.advance(1000)
    assert world.send(world.dev.birth(seq=1)).outcome == "accepted"
    send(world, 2)
    link = MemoryLink()
    assert await sender.send_due(link) == 1
    world.clock.advance(ASKED_AFTER_MS)
    assert await sender.send_due(link) == 0, "nothing new, nothing asked"
    world.clock.advance(2 * 1_800_000)  # quiet for two intervals (> 10 min): not active
    assert await sender.send_due(link) == 0
    assert world.send(world.dev.data([("flow_temp", T0 + 2, 1.0)], seq=2)).outcome == "duplicate"
    assert world.ingest.flush_counters()
    assert await sender.send_due(link) == 1, "a duplicate asks again (and is a sign of life)"
    assert await sender.send_due(link) == 0, "and is answered once"


async def test_a_device_silent_since_it_became_due_is_still_told(
    world: World, tmp_path: Path
) -> None:
    """Rounds after the first read only devices heard from lately; one that sent something
    and then went quiet is remembered and told once its interval has passed."""
    key = keygen(tmp_path / "keys", "cloud-test")
    settings = CloudSettings(db_url="sqlite://", watermark_interval_s=600)
    sender = WatermarkSender(world.sessions, key, settings, world.clock)
    world.clock.advance(1000)
    assert world.send(world.dev.birth(seq=1)).outcome == "accepted"
    link = MemoryLink()
    assert await sender.send_due(link) == 1
    world.clock.advance(1000)
    send(world, 2)
    assert await sender.send_due(link) == 0, "not before the interval"
    for _ in range(5):  # quiet rounds: the device is no longer among those read
        world.clock.advance(100_000)
        assert await sender.send_due(link) == 0
    world.clock.advance(100_000)
    assert await sender.send_due(link) == 1, "told from memory once the interval passed"
    mark = open_watermark(link.published[-1][1], DEV, {key.kid: key.key.public_key()})
    assert mark.upto == 2
    world.queries.clear()
    world.clock.advance(100_000)
    assert await sender.send_due(link) == 0
    assert not any("FROM seq_gaps" in q or "FROM uplinks" in q for q in world.queries), (
        "a quiet round computes no watermark"
    )
