"""The tests' clocks, one of each kind the code injects.

* `FakeClock`: the agent's `edge_agent.clock.Clock` (and the watchdog's) on virtual time:
  `sleep` advances it at once, so a 100-second scenario runs in milliseconds.
* `FakeMsClock`: the cloud's `cloud.domain.Clock`, milliseconds the test sets or advances.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

T0_MS = 1_790_000_000_000
"""Wall time (ms) the cloud's tests start at."""
WALL_ORIGIN_S = 1_800_000_000.0
"""Wall time (s) at virtual time 0 of a `FakeClock`."""


class FakeClock:
    """Virtual time: `sleep` advances it at once, in `step` s ticks, and lets other tasks run.

    `on_tick(now)` runs at every tick: the stand-in for loops that would otherwise need
    sleepers of their own on this clock. `trusted` says whether the wall time is synchronised.
    """

    scale = 1.0

    def __init__(
        self,
        on_tick: Callable[[float], None] = lambda now: None,
        step: float = 10.0,
        *,
        trusted: bool = True,
    ) -> None:
        self.now = 0.0
        self._on_tick = on_tick
        self._step = step
        self._trusted = trusted
        self.slept: list[float] = []
        """Every `sleep` asked for, in order."""

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL_ORIGIN_S + self.now

    def trusted(self) -> bool:
        return self._trusted

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        end = self.now + seconds
        while self.now < end:
            self.now = min(self.now + self._step, end)
            self._on_tick(self.now)
        await asyncio.sleep(0)


class FakeMsClock:
    """Milliseconds since the epoch that the test sets or advances; a `cloud.domain.Clock`."""

    def __init__(self, now: int = T0_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms
