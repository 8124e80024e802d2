"""Time for the agent, injected so tests can run on virtual time, and whether to trust it.

A Raspberry Pi has no battery-backed clock: after a power cut it boots with the time it shut
down at (fake-hwclock) until NTP answers over the cellular link. Messages built meanwhile are
flagged ``sync: false``, and commands are refused (their expiry cannot be judged).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import time
from typing import Protocol

BUILD_FLOOR_S = 1_763_596_800.0
"""2025-11-20 UTC: a wall clock before this is certainly wrong."""

_TIME_ERROR = 5
"""adjtimex(2) return value when the kernel clock is not synchronised."""


class Clock(Protocol):
    """Monotonic time, wall time, sleeping, and whether the wall time can be trusted."""

    scale: float
    """Agent seconds per real second (1 in production; more on an accelerated test day)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    def trusted(self) -> bool:
        """Whether `wall` is known to be right (synchronised)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...


def wall_ms(clock: Clock) -> int:
    """The clock's wall time in whole milliseconds."""
    return int(clock.wall() * 1000)


class _Timex(ctypes.Structure):
    """``struct timex`` of adjtimex(2), as far as the fields we need plus padding."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("rest", ctypes.c_long * 32),
    ]


def kernel_clock_synchronised() -> bool:
    """Whether the kernel says an NTP client (chrony, timesyncd) has set the clock."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    timex = _Timex()
    state = libc.adjtimex(ctypes.byref(timex))
    return bool(0 <= state != _TIME_ERROR)


class SystemClock:
    """The real clocks; `trust` is ``ntp`` (kernel must be synchronised) or ``system``."""

    scale = 1.0

    def __init__(self, trust: str = "ntp") -> None:
        self._trust = trust

    def monotonic(self) -> float:
        """`time.monotonic`."""
        return time.monotonic()

    def wall(self) -> float:
        """`time.time`."""
        return time.time()

    def trusted(self) -> bool:
        """Past the build date, and synchronised if trust is ``ntp``."""
        if time.time() < BUILD_FLOOR_S:
            return False
        return self._trust != "ntp" or kernel_clock_synchronised()

    async def sleep(self, seconds: float) -> None:
        """`asyncio.sleep`."""
        await asyncio.sleep(seconds)


class ScaledClock(SystemClock):
    """Real time sped up `scale` times, from now: an accelerated day for tests and benches.

    Everything timed by the agent (polls, batches, health, backoff, readback) runs `scale`
    times faster and the wall clock advances accordingly; the MQTT keepalive, which the
    broker times in real seconds, is divided by `scale` by the uplink.
    """

    def __init__(self, scale: float, trust: str = "system") -> None:
        super().__init__(trust)
        if not scale > 0:
            raise ValueError(f"time scale must be more than 0, got {scale}")
        self.scale = scale
        self._real0 = time.monotonic()
        self._wall0 = time.time()

    def monotonic(self) -> float:
        """Scaled monotonic seconds."""
        return self._real0 + (time.monotonic() - self._real0) * self.scale

    def wall(self) -> float:
        """Scaled wall time, starting at the real time the clock was made."""
        return self._wall0 + (time.monotonic() - self._real0) * self.scale

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of scaled time."""
        await asyncio.sleep(seconds / self.scale)
