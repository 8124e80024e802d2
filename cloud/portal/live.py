"""Live updates over Server-Sent Events.

A live stream re-renders one fragment of a page whenever what it shows changes, and sends
it as an SSE event that htmx's SSE extension swaps into the page (``sse-swap``). The
database is the source of truth: each stream looks every `portal_live_poll_s` at a cheap
version key (a twin's version and connectivity, a command's state) and renders only when
it moved. Access is checked again on every look, so a stream stops when its viewer loses
sight of what it shows. Each stream ends after `portal_live_max_s`; the browser reconnects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass

import anyio.to_thread
from fastapi import Request
from fastapi.responses import StreamingResponse

from cloud.errors import CloudError

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


def sse_event(event: str, html: str) -> str:
    """One SSE event; every line of `html` becomes a ``data:`` line."""
    lines = html.strip().splitlines() or [""]
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


async def _events(
    request: Request, event: str, look: Callable[[], Snapshot], poll_s: float, max_s: float
) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    last_key: Hashable = object()
    deadline = time.monotonic() + max_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return
        try:
            snapshot = await anyio.to_thread.run_sync(look)
        except CloudError:  # no longer visible (or gone): say nothing more
            yield sse_event(CLOSE_EVENT, "")
            return
        if snapshot.key != last_key:
            last_key = snapshot.key
            quiet_since = time.monotonic()
            yield sse_event(event, snapshot.html)
        elif time.monotonic() - quiet_since > HEARTBEAT_S:
            quiet_since = time.monotonic()
            yield ": still here\n\n"
        if snapshot.final:
            yield sse_event(CLOSE_EVENT, "")
            return
        await asyncio.sleep(poll_s)


def live_response(request: Request, event: str, look: Callable[[], Snapshot]) -> StreamingResponse:
    """An SSE response sending `event` with `look`'s HTML whenever its key changes.

    `look` runs in a worker thread (it reads the database); a `CloudError` from it (not
    found, no longer visible) ends the stream.
    """
    settings = request.app.state.context.settings
    return StreamingResponse(
        _events(request, event, look, settings.portal_live_poll_s, settings.portal_live_max_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
