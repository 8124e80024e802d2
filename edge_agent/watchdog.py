"""systemd integration: readiness, status and a watchdog fed only while work gets done.

`notify` speaks the sd_notify(3) datagram protocol on ``$NOTIFY_SOCKET`` (no dependency:
it is one datagram). The watchdog is fed only while *both* the poll loop and the uplink
loop have reported progress within the watchdog interval; if either hangs, systemd sees
the silence and restarts the agent (``Restart=always``).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable

from edge_agent.clock import Clock

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send `message` (e.g. ``READY=1``) to systemd; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract socket namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", address, exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """``WatchdogSec`` as passed by systemd (``$WATCHDOG_USEC``), if it is meant for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000
    except ValueError:
        return None


class Progress:
    """When each loop last got something done (monotonic seconds)."""

    def __init__(self, clock: Clock, loops: Iterable[str]) -> None:
        self._clock = clock
        now = clock.monotonic()
        self._last = {loop: now for loop in loops}

    def mark(self, loop: str) -> None:
        """`loop` has just made progress."""
        self._last[loop] = self._clock.monotonic()

    def stalled(self, max_age_s: float) -> list[str]:
        """Loops with no progress for longer than `max_age_s`."""
        now = self._clock.monotonic()
        return [loop for loop, last in self._last.items() if now - last > max_age_s]


async def feed_watchdog(progress: Progress, clock: Clock, interval_s: float) -> None:
    """Ping systemd every half interval while no loop has stalled; never returns."""
    stalled_before: list[str] = []
    while True:
        await clock.sleep(interval_s / 2)
        stalled = progress.stalled(interval_s)
        if stalled:
            if stalled != stalled_before:
                log.error("watchdog not fed: no progress in %s", ", ".join(stalled))
        else:
            notify("WATCHDOG=1")
        stalled_before = stalled
