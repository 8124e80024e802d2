"""The portal's one change feed: streams are woken by what they watch, on a real database
(PostgreSQL: the migration's triggers NOTIFY at commit; SQLite: one poll for everything)
and with an in-memory source behind the seam."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from sqlalchemy import update

from cloud.models import Twin
from cloud.portal.feed import ChangeFeed, ListenSource, PollSource, source_for, twin_key
from tests.cloud.ingest_world import DEV, OTHER, World, open_world


class Scripted:
    """A source that yields what the test puts in its queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[set[str] | None] = asyncio.Queue()
        self.runs = 0

    async def changes(self, watched: Callable[[], set[str]]) -> AsyncIterator[set[str] | None]:
        self.runs += 1
        while watched():
            yield await self.queue.get()


async def woken(event: asyncio.Event, within: float = 5.0) -> bool:
    try:
        async with asyncio.timeout(within):
            await event.wait()
    except TimeoutError:
        return False
    event.clear()
    return True


async def test_only_the_streams_watching_a_key_are_woken() -> None:
    source = Scripted()
    feed = ChangeFeed(source)
    with feed.watch("twin:a") as a, feed.watch("twin:b") as b, feed.watch("twin:a") as a2:
        source.queue.put_nowait({"twin:a"})
        assert await woken(a) and await woken(a2)
        assert not b.is_set()
        source.queue.put_nowait(None)  # everything may have changed (a reconnect)
        assert await woken(b) and await woken(a)
        assert source.runs == 1, "one watcher for every stream"
    assert feed.watched == set()


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    with open_world(db_url) as w:
        assert w.send(w.dev.birth(seq=1)).outcome == "accepted"
        assert w.send(w.other.birth(seq=1)).outcome == "accepted"
        yield w


async def test_a_twin_written_by_any_process_wakes_its_streams(world: World) -> None:
    url = str(world.sessions.kw["bind"].url.render_as_string(hide_password=False))
    source = source_for(url, world.sessions, poll_s=0.05)
    assert isinstance(source, ListenSource if url.startswith("postgresql") else PollSource)
    feed = ChangeFeed(source)
    with feed.watch(twin_key(DEV)) as mine, feed.watch(twin_key(OTHER)) as other:
        # a new watch is woken once (listening began / first versions read): whatever
        # changed between a stream's first look and the feed's start is not missed
        assert await woken(mine) and await woken(other)
        await asyncio.sleep(0.2)
        assert world.send(
            world.dev.data([("flow_temp", 1_790_000_000_000, 50.0)], seq=2)
        ).outcome == ("accepted")
        assert await woken(mine), "ingest changed the twin"
        assert not other.is_set()
        with world.sessions() as session, session.begin():  # any writer, not only ingest
            session.execute(
                update(Twin).where(Twin.device_id == OTHER).values(version=Twin.version + 1)
            )
        assert await woken(other)
