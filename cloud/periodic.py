"""One helper for the cloud's periodic background work (sweeps, housekeeping)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)


async def every(
    interval_s: float,
    work: Callable[[], object],
    what: str,
    *,
    wait_first: bool = True,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run blocking `work` (database work) in a thread every `interval_s` seconds, forever.

    A database outage (`DBAPIError`) skips that round, logged; anything else ends the loop,
    for the supervisor (`cloud.supervisor`) to restart it. With ``wait_first`` the first
    round comes after one interval, otherwise at once.
    """
    if wait_first:
        await sleep(interval_s)
    while True:
        try:
            await asyncio.to_thread(work)
        except DBAPIError as exc:
            log.warning("%s skipped: database unavailable (%s)", what, exc.orig)
        await sleep(interval_s)
