"""One simulator process: the boiler, its Modbus servers, the modem and the control endpoint.

Everything is built from one frozen `SimSettings` and runs in one `TaskGroup`; cancelling
`Simulator.run` (SIGTERM, Ctrl-C) stops every server and removes the pty links.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from hw_sim.boiler import CAUSE_OF_FAULT, Boiler, Cause, DemandOverride
from hw_sim.clock import Clock, SystemClock
from hw_sim.control import ControlError, ControlServer, Handler, require_object
from hw_sim.degradation import Degradation, Mode
from hw_sim.device import BoilerDevice
from hw_sim.faults import CommsFaults, CommsFaultSettings
from hw_sim.modem import ModemState, serve_modem
from hw_sim.rtu_server import LineSettings, RtuServer
from hw_sim.tcp_server import TcpServer
from protocols.reference import FaultCode

log = logging.getLogger(__name__)

MAX_ADVANCE_S = 31 * 86_400
MAX_TIME_SCALE = 100_000.0


@dataclass(frozen=True, slots=True)
class SimSettings:
    """Everything a simulator process is started with."""

    pty: str | None = None
    tcp: tuple[str, int] | None = None
    control: tuple[str, int] | None = None
    modem_pty: str | None = None
    unit: int = 1
    time_scale: float = 1.0
    seed: int = 0
    start_wall_s: float | None = None
    """Simulated local wall-clock time at start (seconds since the epoch); `None` = now."""
    line: LineSettings = field(default_factory=LineSettings)
    boot_s: float = 1.0
    """Real seconds the controller stays silent after a power cycle."""
    tick_s: float = 0.1

    def __post_init__(self) -> None:
        if self.pty is None and self.tcp is None:
            raise ValueError("serve the boiler somewhere: give a pty path, a TCP address or both")
        if not 1 <= self.unit <= 247:
            raise ValueError(f"unit id must be 1..247, got {self.unit}")
        if not 0 < self.time_scale <= MAX_TIME_SCALE:
            raise ValueError(
                f"time scale must be in (0, {MAX_TIME_SCALE:g}], got {self.time_scale}"
            )
        if self.boot_s < 0 or self.tick_s <= 0:
            raise ValueError("boot_s must be >= 0 and tick_s > 0")


def local_now() -> float:
    """Now, as local wall-clock seconds (the daily heat-demand profile runs on local time)."""
    now = time.time()
    return now + time.localtime(now).tm_gmtoff


class Simulator:
    """Builds the parts from `SimSettings`; `run` serves them until cancelled."""

    def __init__(self, settings: SimSettings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        start = settings.start_wall_s if settings.start_wall_s is not None else local_now()
        self.boiler = Boiler(seed=settings.seed, start_wall_s=start)
        self.device = BoilerDevice(self.boiler)
        self.faults = CommsFaults(seed=settings.seed)
        self.rtu = (
            RtuServer(
                self.device,
                settings.pty,
                unit=settings.unit,
                line=settings.line,
                faults=self.faults,
            )
            if settings.pty
            else None
        )
        self.tcp = (
            TcpServer(self.device, *settings.tcp, unit=settings.unit, faults=self.faults)
            if settings.tcp
            else None
        )
        self.modem = ModemState() if settings.modem_pty else None
        self.control = (
            ControlServer(self._routes(), *settings.control) if settings.control else None
        )
        self._power_timer: asyncio.TimerHandle | None = None

    async def run(self, ready: Callable[[Simulator], None] | None = None) -> None:
        """Serve everything until cancelled; call `ready` once every server listens."""
        try:
            async with asyncio.TaskGroup() as group:
                started: list[asyncio.Event] = []

                def start(name: str, serve: Callable[[asyncio.Event], Any]) -> None:
                    event = asyncio.Event()
                    started.append(event)
                    group.create_task(serve(event), name=name)

                group.create_task(self._drive_physics(), name="physics")
                if self.rtu:
                    start("modbus-rtu", self.rtu.serve)
                if self.tcp:
                    start("modbus-tcp", self.tcp.serve)
                if self.modem and self.settings.modem_pty:
                    modem, path = self.modem, self.settings.modem_pty
                    start("modem", lambda ev: serve_modem(modem, path, ready=ev))
                if self.control:
                    start("control", self.control.serve)
                for event in started:
                    await event.wait()
                if ready is not None:
                    ready(self)
        finally:
            if self._power_timer is not None:
                self._power_timer.cancel()

    async def _drive_physics(self) -> None:
        scale, tick = self.settings.time_scale, self.settings.tick_s
        last = self.clock.monotonic()
        while True:
            await self.clock.sleep(tick)
            now = self.clock.monotonic()
            self.boiler.advance((now - last) * scale)
            last = now

    # ----- control endpoint ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The true state of everything, for ``GET /state``."""
        state = self.boiler.snapshot()
        state["comms"] = self.faults.snapshot()
        state["last_reset"] = self.device.last_reset.value if self.device.last_reset else None
        state["time_scale"] = self.settings.time_scale
        if self.rtu:
            state["rtu"] = self.rtu.snapshot()
        if self.tcp:
            state["tcp"] = self.tcp.snapshot()
        if self.modem:
            state["modem"] = self.modem.snapshot()
        return state

    def _routes(self) -> dict[tuple[str, str], Handler]:
        routes: dict[tuple[str, str], Handler] = {
            ("GET", "/"): self._index,
            ("GET", "/state"): self._state,
            ("POST", "/fault"): self._fault,
            ("POST", "/repair"): self._repair,
            ("POST", "/degrade"): self._degrade,
            ("POST", "/comms"): self._comms,
            ("POST", "/power-cycle"): self._power_cycle,
            ("POST", "/demand"): self._demand,
            ("POST", "/advance"): self._advance,
        }
        if self.modem is not None:
            routes.update(modem_routes(self.modem))
        return routes

    async def _index(self, body: Any) -> Any:
        assert self.control is not None
        return {"endpoints": self.control.index()}

    async def _state(self, body: Any) -> Any:
        return self.snapshot()

    async def _fault(self, body: Any) -> Any:
        fields = require_object(body, allowed={"code"}, required={"code"})
        try:
            code = FaultCode.parse(str(fields["code"]))
        except ValueError:
            known = ", ".join(f"F{int(c)}" for c in FaultCode if c)
            raise ControlError(
                HTTPStatus.BAD_REQUEST, f"unknown fault {fields['code']!r}; known: {known}"
            ) from None
        cause = self.boiler.inject(code)
        log.info("fault %s injected (cause %s)", code.name, cause.value)
        return {"fault": code.name, "cause": cause.value, "state": self.snapshot()}

    async def _repair(self, body: Any) -> Any:
        fields = require_object(body, allowed={"cause", "code"})
        cause: Cause | None = None
        if "code" in fields:
            try:
                cause = CAUSE_OF_FAULT[FaultCode.parse(str(fields["code"]))]
            except (ValueError, KeyError):
                raise ControlError(
                    HTTPStatus.BAD_REQUEST, f"unknown fault {fields['code']!r}"
                ) from None
        elif "cause" in fields:
            try:
                cause = Cause(fields["cause"])
            except ValueError:
                known = ", ".join(c.value for c in Cause)
                raise ControlError(
                    HTTPStatus.BAD_REQUEST, f"unknown cause; known: {known}"
                ) from None
        self.boiler.repair(cause)
        log.info("repaired %s", cause.value if cause else "every cause")
        return {"repaired": cause.value if cause else "all", "state": self.snapshot()}

    async def _degrade(self, body: Any) -> Any:
        fields = require_object(body, allowed={"mode", "rate", "onset_s"}, required={"mode"})
        try:
            mode = Mode(fields["mode"])
        except ValueError:
            known = ", ".join(m.value for m in Mode)
            raise ControlError(
                HTTPStatus.BAD_REQUEST, f"unknown mode {fields['mode']!r}; known: {known}"
            ) from None
        rate, onset = fields.get("rate", 0.1), fields.get("onset_s", self.boiler.sim_s)
        for name, value in (("rate", rate), ("onset_s", onset)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ControlError(HTTPStatus.BAD_REQUEST, f"{name} must be a number")
        self.boiler.degrade(Degradation(mode, float(onset), float(rate)))
        log.info("degradation %s started (%.3g of the way to its fault per day)", mode, rate)
        return {"degrading": mode.value, "rate_per_day": rate, "state": self.snapshot()}

    async def _comms(self, body: Any) -> Any:
        fields = require_object(body, allowed={"drop", "corrupt", "delay_ms"})
        current = self.faults.settings
        self.faults.settings = CommsFaultSettings(
            drop=fields.get("drop", current.drop),
            corrupt=fields.get("corrupt", current.corrupt),
            delay_ms=fields.get("delay_ms", current.delay_ms),
        )
        return {"comms": self.faults.snapshot()}

    async def _power_cycle(self, body: Any) -> Any:
        fields = require_object(body, allowed={"off_s"})
        off_s = fields.get("off_s", self.settings.boot_s)
        if isinstance(off_s, bool) or not isinstance(off_s, int | float) or not 0 <= off_s <= 3600:
            raise ControlError(
                HTTPStatus.BAD_REQUEST, "off_s must be a number of seconds in 0..3600"
            )
        self.boiler.power_off()
        if self.rtu:
            self.rtu.power_cycled()
        if self.tcp:
            self.tcp.drop_connections()
        if self._power_timer is not None:
            self._power_timer.cancel()
        self._power_timer = asyncio.get_running_loop().call_later(off_s, self._power_restored)
        log.info("power cut for %.1f s", off_s)
        return {"powered": False, "back_in_s": off_s}

    def _power_restored(self) -> None:
        self._power_timer = None
        self.boiler.power_on()
        log.info("power restored")

    async def _demand(self, body: Any) -> Any:
        fields = require_object(body, allowed={"ch", "dhw"})
        try:
            if "ch" in fields:
                self.boiler.ch_override = DemandOverride(fields["ch"])
            if "dhw" in fields:
                self.boiler.dhw_override = DemandOverride(fields["dhw"])
        except ValueError:
            raise ControlError(
                HTTPStatus.BAD_REQUEST, "ch and dhw must be 'auto', 'on' or 'off'"
            ) from None
        return {"ch": self.boiler.ch_override.value, "dhw": self.boiler.dhw_override.value}

    async def _advance(self, body: Any) -> Any:
        fields = require_object(body, allowed={"seconds"}, required={"seconds"})
        seconds = fields["seconds"]
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 < seconds <= MAX_ADVANCE_S
        ):
            raise ControlError(HTTPStatus.BAD_REQUEST, f"seconds must be in (0, {MAX_ADVANCE_S}]")
        remaining = float(seconds)
        while remaining > 0:  # in slices, so Modbus keeps being served meanwhile
            step = min(remaining, 3600.0)
            self.boiler.advance(step)
            remaining -= step
            await asyncio.sleep(0)
        return {"sim_s": self.boiler.sim_s, "status": self.boiler.status.label}


def modem_routes(modem: ModemState) -> dict[tuple[str, str], Handler]:
    """``GET /modem`` shows the simulated modem's settings, ``POST /modem`` changes them."""

    async def show(body: Any) -> Any:
        return modem.snapshot()

    async def update(body: Any) -> Any:
        if not isinstance(body, dict):
            raise ControlError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        modem.update(**body)
        return modem.snapshot()

    return {("GET", "/modem"): show, ("POST", "/modem"): update}


async def run_modem(
    pty_path: str,
    control: tuple[str, int] | None,
    *,
    state: ModemState | None = None,
    ready: Callable[[str | None], None] | None = None,
) -> None:
    """A modem on its own: the AT port plus, optionally, ``GET/POST /modem`` on `control`."""
    modem = state or ModemState()

    server = ControlServer(modem_routes(modem), *control) if control else None
    async with asyncio.TaskGroup() as group:
        events = [asyncio.Event()]
        group.create_task(serve_modem(modem, pty_path, ready=events[0]), name="modem")
        if server:
            events.append(asyncio.Event())
            group.create_task(server.serve(events[1]), name="control")
        for event in events:
            await event.wait()
        if ready is not None:
            ready(f"http://{server.host}:{server.port}" if server else None)
