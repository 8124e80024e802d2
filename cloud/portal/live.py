"""Live updates over Server-Sent Events.

A live stream re-renders one fragment of a page whenever what it shows changes, and sends
it as an SSE event that htmx's SSE extension swaps into the page (``sse-swap``). The
database is the source of truth: the process's one change feed (`cloud.portal.feed`) wakes
the stream when its twin or command changes, and the stream then looks at a cheap version
key (a twin's version and connectivity, a command's state) and renders only when it moved;
it also looks every `portal_live_recheck_s` unwoken (a twin going stale with time, a viewer
losing access). Access is checked again on every look, so a stream stops when its viewer
loses sight of what it shows. Each stream ends after `portal_live_max_s`; the browser
reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass

import anyio.to_thread
from fastapi import Request
from fastapi.responses import StreamingResponse

from cloud.errors import CloudError
from cloud.portal.feed import ChangeFeed

HEARTBEAT_S = 15.0
"""A comment this often keeps proxies from closing a quiet stream."""
RETRY_MS = 2000
"""How soon the browser reconnects after a stream ends."""
CLOSE_EVENT = "close"
"""Sent when nothing more will change; pages close their stream on it (``sse-close``)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a stream shows now: a key that changes when it does, the event's HTML, and
    whether it is final (a command that finished)."""

    key: Hashable
    html: str
    final: bool = False
    more: tuple[tuple[str, str], ...] = ()
    """Further (event, HTML) pairs sent with it, for pages with several live regions."""


def sse_event(event: str, html: str) -> str:
    """One SSE event; every line of `html` becomes a ``data:`` line."""
    lines = html.strip().splitlines() or [""]
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


async def _events(
    request: Request,
    event: str,
    look: Callable[[], Snapshot],
    woken: asyncio.Event,
    recheck_s: float,
    max_s: float,
) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    last_key: Hashable = object()
    deadline = time.monotonic() + max_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return
        woken.clear()
        try:
            snapshot = await anyio.to_thread.run_sync(look)
        except CloudError:  # no longer visible (or gone): say nothing more
            yield sse_event(CLOSE_EVENT, "")
            return
        if snapshot.key != last_key:
            last_key = snapshot.key
            quiet_since = time.monotonic()
            yield sse_event(event, snapshot.html)
            for name, html in snapshot.more:
                yield sse_event(name, html)
        elif time.monotonic() - quiet_since > HEARTBEAT_S:
            quiet_since = time.monotonic()
            yield ": still here\n\n"
        if snapshot.final:
            yield sse_event(CLOSE_EVENT, "")
            return
        wait = min(recheck_s, HEARTBEAT_S, max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await woken.wait()


async def _watched(
    feed: ChangeFeed,
    watch: str | tuple[str, ...],
    request: Request,
    event: str,
    look: Callable[[], Snapshot],
) -> AsyncIterator[str]:
    settings = request.app.state.context.settings
    keys = (watch,) if isinstance(watch, str) else watch
    with feed.watch(*keys) as woken:
        async for chunk in _events(
            request, event, look, woken, settings.portal_live_recheck_s, settings.portal_live_max_s
        ):
            yield chunk


def live_response(
    request: Request, event: str, watch: str | tuple[str, ...], look: Callable[[], Snapshot]
) -> StreamingResponse:
    """An SSE response sending `event` with `look`'s HTML whenever its key changes; the
    change feed's key `watch` (`cloud.portal.feed.twin_key`, `command_key`) wakes it.

    `look` runs in a worker thread (it reads the database); a `CloudError` from it (not
    found, no longer visible) ends the stream.
    """
    feed: ChangeFeed = request.app.state.live_feed
    return StreamingResponse(
        _watched(feed, watch, request, event, look),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
