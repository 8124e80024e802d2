"""The top-level supervisor: a background loop that fails is restarted, never the process.

A cloud process runs its loops (the MQTT session with ingest and the dispatcher, the command
sweeper, housekeeping, the service sweeper) side by side with the API in one `TaskGroup`. An
exception in one of them would end the group and with it the API, ingest and everything
else, and a poisoned row would do it again on every start. So each loop runs under
`Supervisor.supervise`: when it raises (or returns, which a loop never should), the failure
is logged with its traceback, counted (``boilertwin_loop_failures_total{loop}``), shown in
``/healthz``, and the loop is started again after a capped, jittered backoff that grows with
consecutive failures. A loop that then runs for `stable_s` starts its count afresh.

Cancellation is never swallowed: it is how the process shuts down. Containing bad input
*inside* a loop (one device's data) is the loop's own job (`cloud.quarantine`); the
supervisor is the last line, for whatever nobody foresaw.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from cloud.backoff import Backoff
from cloud.domain import Clock, wall_ms
from cloud.metrics import LOOP_FAILURES, LOOP_UP

log = logging.getLogger(__name__)

Loop = Callable[[], Awaitable[None]]
"""Starts one run of a loop (a coroutine function taking nothing)."""
Sleep = Callable[[float], Awaitable[None]]

RESTART_BACKOFF = Backoff(min_s=1.0, max_s=60.0)
"""Restart after up to 1 s, doubling to at most 60 s while it keeps failing."""
MIN_DELAY_S = 0.5
"""Never restart sooner than this: full jitter may draw ~0, and a loop failing at once would
spin."""
STABLE_S = 60.0
"""A run this long resets the consecutive-failure count (and so the backoff)."""
ERROR_MAX = 300


@dataclass(frozen=True, slots=True)
class LoopState:
    """How one supervised loop is doing, for ``/healthz``."""

    name: str
    running: bool = False
    failures: int = 0
    """Consecutive failures (reset by a run of `STABLE_S`)."""
    restarts: int = 0
    """Every restart since the process started."""
    last_error: str | None = None
    last_failure_ms: int | None = None

    def as_json(self) -> dict[str, object]:
        """The ``/healthz`` form."""
        return {
            "running": self.running,
            "failures": self.failures,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_failure": self.last_failure_ms,
        }


class Supervisor:
    """Runs loops, restarts the ones that fail, and reports on them."""

    def __init__(
        self,
        clock: Clock = wall_ms,
        *,
        backoff: Backoff = RESTART_BACKOFF,
        min_delay_s: float = MIN_DELAY_S,
        stable_s: float = STABLE_S,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.backoff = backoff
        self.min_delay_s = min_delay_s
        self.stable_s = stable_s
        self._sleep = sleep
        self._monotonic = monotonic
        self._states: dict[str, LoopState] = {}

    def states(self) -> list[LoopState]:
        """Every supervised loop, by name."""
        return [self._states[name] for name in sorted(self._states)]

    @property
    def healthy(self) -> bool:
        """Whether every loop is running (none waits to be restarted)."""
        return all(state.running for state in self._states.values())

    async def supervise(self, name: str, loop: Loop) -> None:
        """Run `loop` forever under `name`, restarting it whenever it fails or ends."""
        state = self._states.setdefault(name, LoopState(name))
        while True:
            started = self._monotonic()
            self._set(name, running=True)
            try:
                await loop()
                error = "the loop ended by itself"
                log.error("%s: %s; restarting it", name, error)
            except asyncio.CancelledError:
                self._set(name, running=False)
                raise
            except Exception as exc:  # the top-level supervisor: the one place for this
                error = f"{type(exc).__name__}: {exc}"[:ERROR_MAX]
                log.exception("%s: the loop failed; restarting it", name)
            state = self._states[name]
            failures = 1 if self._monotonic() - started >= self.stable_s else state.failures + 1
            self._set(
                name,
                running=False,
                failures=failures,
                restarts=state.restarts + 1,
                last_error=error,
                last_failure_ms=self.clock(),
            )
            LOOP_FAILURES.labels(name).inc()
            delay = max(self.min_delay_s, self.backoff.delay(failures))
            log.warning("%s: restart %d in %.1f s", name, state.restarts + 1, delay)
            await self._sleep(delay)

    def _set(self, name: str, **changes: object) -> None:
        self._states[name] = replace(self._states[name], **changes)  # type: ignore[arg-type]
        LOOP_UP.labels(name).set(1 if self._states[name].running else 0)
