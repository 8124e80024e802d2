"""One change feed for every open live stream: which twins and commands changed.

Without it, each open page's stream re-rendered its fragment from the database every
`portal_live_poll_s`: a support desk with a thousand open pages ran a thousand renders a
second. With it, one watcher per process learns what changed and wakes only the streams
watching that (``twin:<device id>``, ``command:<id>``, ``job:<id>``); a stream renders
when woken, and otherwise only every `RECHECK_S` (for what time alone changes: a twin
going stale, a viewer losing access).

* PostgreSQL: ``LISTEN bt_live`` on one connection; triggers on ``twins``, ``commands``
  (migration 0008) and ``jobs`` (0014) ``NOTIFY`` the key when a row changes, delivered at
  commit, from any process (ingest workers included). A lost connection wakes every
  stream (they look again) and is re-established.
* SQLite: one query per `portal_live_poll_s` for the versions of everything watched.

The source is a seam (`ChangeSource`): tests drive the feed with an in-memory one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.models import Command, Job, Twin

log = logging.getLogger(__name__)

CHANNEL = "bt_live"
RECHECK_S = 15.0
"""A stream looks again this often even when nothing woke it."""
RECONNECT_S = 2.0


def twin_key(device_id: str) -> str:
    return f"twin:{device_id}"


def command_key(command_id: str) -> str:
    return f"command:{command_id}"


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


class ChangeSource(Protocol):
    """Where changes come from: yields sets of changed keys (``None``: everything may
    have changed, e.g. after a reconnect)."""

    def changes(self, watched: Callable[[], set[str]]) -> AsyncIterator[set[str] | None]: ...


class ChangeFeed:
    """Wakes the streams watching a key when it changes; runs while anything is watched."""

    def __init__(self, source: ChangeSource) -> None:
        self.source = source
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watch(self, *keys: str) -> Iterator[asyncio.Event]:
        """An event set whenever any of `keys` changes, for the life of the block."""
        event = asyncio.Event()
        for key in keys:
            self._waiting.setdefault(key, set()).add(event)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="live-feed")
        try:
            yield event
        finally:
            for key in keys:
                waiting = self._waiting.get(key)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiting[key]

    @property
    def watched(self) -> set[str]:
        return set(self._waiting)

    def wake(self, keys: set[str] | None) -> None:
        """Set the events of `keys` (all, if None)."""
        for key, events in list(self._waiting.items()):
            if keys is None or key in keys:
                for event in events:
                    event.set()

    async def _run(self) -> None:
        try:
            async for changed in self.source.changes(lambda: set(self._waiting)):
                self.wake(changed)
                if not self._waiting:
                    return
        except Exception:  # the streams fall back on their recheck; the next watch restarts
            log.exception("live change feed failed")


class PollSource:
    """SQLite (or any database): one query a round for what everything watched shows."""

    def __init__(self, sessions: sessionmaker[Session], poll_s: float) -> None:
        self.sessions = sessions
        self.poll_s = poll_s

    async def changes(self, watched: Callable[[], set[str]]) -> AsyncIterator[set[str] | None]:
        seen: dict[str, object] = {}
        while True:
            keys = watched()
            if not keys:
                return
            now = await asyncio.to_thread(self._versions, keys)
            # a key seen for the first time counts as changed: it may have changed between
            # its stream's first look and this round (one extra look, nothing missed)
            changed = {k for k, v in now.items() if k not in seen or seen[k] != v}
            seen = now
            if changed:
                yield changed
            await asyncio.sleep(self.poll_s)

    def _versions(self, keys: set[str]) -> dict[str, object]:
        twins = [k.partition(":")[2] for k in keys if k.startswith("twin:")]
        commands = [k.partition(":")[2] for k in keys if k.startswith("command:")]
        jobs = [k.partition(":")[2] for k in keys if k.startswith("job:")]
        out: dict[str, object] = {}
        with self.sessions() as session:
            for start in range(0, len(twins), 500):
                rows = session.execute(
                    select(Twin.device_id, Twin.version, Twin.connection, Twin.last_seen_ms).where(
                        Twin.device_id.in_(twins[start : start + 500])
                    )
                )
                out |= {twin_key(r[0]): tuple(r[1:]) for r in rows}
            for start in range(0, len(commands), 500):
                rows = session.execute(
                    select(Command.id, Command.state, Command.updated_ms).where(
                        Command.id.in_(commands[start : start + 500])
                    )
                )
                out |= {command_key(r[0]): tuple(r[1:]) for r in rows}
            for start in range(0, len(jobs), 500):
                rows = session.execute(
                    select(Job.id, Job.state, Job.updated_ms).where(
                        Job.id.in_(jobs[start : start + 500])
                    )
                )
                out |= {job_key(r[0]): tuple(r[1:]) for r in rows}
        return {k: out.get(k) for k in keys}


class ListenSource:
    """PostgreSQL: ``LISTEN`` for the triggers' notifications on one connection."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo

    async def changes(self, watched: Callable[[], set[str]]) -> AsyncIterator[set[str] | None]:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    yield None  # anything may have changed while not listening
                    async for notice in connection.notifies():
                        if not watched():
                            return
                        yield {notice.payload}
            except psycopg.OperationalError as exc:
                log.warning("live change feed: %s; listening again in %s s", exc, RECONNECT_S)
                yield None
                await asyncio.sleep(RECONNECT_S)


def source_for(db_url: str, sessions: sessionmaker[Session], poll_s: float) -> ChangeSource:
    """LISTEN/NOTIFY on PostgreSQL, a cheap poll elsewhere."""
    if db_url.startswith("postgresql"):
        return ListenSource(_libpq_url(db_url))
    return PollSource(sessions, poll_s)


def _libpq_url(db_url: str) -> str:
    """``postgresql+psycopg://...`` as libpq spells it."""
    scheme, _, rest = db_url.partition("://")
    return f"postgresql://{rest}" if scheme.startswith("postgresql") else db_url
