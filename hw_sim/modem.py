"""A simulated LTE modem answering the AT commands a gateway uses to judge its link.

Three layers, as everywhere in the project:

* `ModemState` -- the values a test or the control endpoint sets (signal, registration,
  operator, network time, identity, a hung modem) plus counters; `update` validates.
* `ModemSession` -- sans-I/O: `receive(bytes) -> bytes`. It splits the input into command
  lines, echoes them if echo is on, and answers in verbose result-code form
  (``\\r\\n+CSQ: 18,99\\r\\n\\r\\nOK\\r\\n``), as V.250 / 3GPP TS 27.007 modems do.
* `ModemServer` / `serve_modem` -- the asyncio transport on a `PseudoTerminal`.

Invariants of the session:

* Input never raises: undecodable, unknown or overlong lines get ``ERROR``; an overlong line
  (more than `MAX_LINE` characters) is discarded whole, however many reads it spans.
* A line ends at CR or LF, so CR, LF and CRLF all work; empty lines are ignored.
* An unresponsive modem consumes its input and says nothing, not even an echo, and never
  answers that input later when it becomes responsive again.
* Echo is per line (the line and a CR, before its response), not per character: on a pty
  the difference is invisible to a client that writes whole lines.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Literal, TypeVar

from hw_sim.errors import SimulatorError
from hw_sim.pty import PseudoTerminal

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
"""Returns the current time; naive datetimes are taken as UTC."""

MAX_LINE = 256
"""Longest command line (characters, without terminator) the modem accepts."""

NO_NETWORK_TIME_EPOCH = datetime(1980, 1, 6)
"""Where a modem's clock starts at power-on before the network has sent the time."""

MAX_CLOCK_OFFSET_S = 10 * 365 * 86_400
"""Largest network clock skew `ModemState.update` accepts, in seconds either way."""

_RSSI_UNKNOWN = 99


class RegistrationStatus(IntEnum):
    """``<stat>`` of ``+CREG`` (3GPP TS 27.007, 7.2)."""

    NOT_REGISTERED = 0
    HOME = 1
    SEARCHING = 2
    DENIED = 3
    UNKNOWN = 4
    ROAMING = 5


class AccessTechnology(IntEnum):
    """``<AcT>`` of ``+COPS`` (3GPP TS 27.007, 7.3)."""

    GSM = 0
    UTRAN = 2
    E_UTRAN = 7


class ModemError(SimulatorError):
    """Base of the errors raised by the modem simulator."""


class ModemSettingError(ModemError, ValueError):
    """`ModemState.update` was given an unknown field or a value out of range."""

    def __init__(self, field: str, reason: str, value: object = None) -> None:
        super().__init__(f"modem setting {field!r}: {reason} (got {value!r})")
        self.field = field
        self.reason = reason
        self.value = value


class ModemTransportError(ModemError, OSError):
    """The pseudo-terminal under a running modem failed."""

    def __init__(self, pty_path: str, reason: str) -> None:
        super().__init__(f"modem pty {pty_path}: {reason}")
        self.pty_path = pty_path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ModemSettings:
    """The controllable values of a simulated modem (all validated by `ModemState.update`)."""

    rssi: int = 18
    """``+CSQ`` signal quality 0-31 (-113 dBm + 2 dBm/step), 99 = unknown."""
    ber: int = 99
    """``+CSQ`` bit error rate class 0-7, 99 = unknown (LTE modems report 99)."""
    registration: RegistrationStatus = RegistrationStatus.HOME
    operator: str = "Simulated LTE"
    act: AccessTechnology = AccessTechnology.E_UTRAN
    network_time: bool = True
    """False: no NITZ yet, ``+CCLK`` counts up from 80/01/06,00:00:00+00 since power-on."""
    clock_offset_s: float = 0.0
    """How far the network's clock is ahead of the injected clock (negative: behind)."""
    tz_quarters: int = 0
    """Local time zone reported in ``+CCLK``, in quarter hours east of UTC (-48..56)."""
    manufacturer: str = "BoilerTwin"
    model: str = "SIM-LTE1"
    revision: str = "SIMLTE1R01A01"
    imei: str = "861234056789012"
    responsive: bool = True
    """False: the modem is hung and says nothing at all."""
    echo: bool = True
    """Command echo (``ATE1``, the power-on default of real modems) or not (``ATE0``)."""


SETTING_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ModemSettings))
"""Names `ModemState.update` accepts; `ModemState.snapshot` reports them and counters."""


_E = TypeVar("_E", bound=IntEnum)


def _check_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModemSettingError(field, "must be an integer", value)
    return value


def _check_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ModemSettingError(field, "must be true or false", value)
    return value


def _check_text(field: str, value: object, *, max_len: int) -> str:
    if not isinstance(value, str):
        raise ModemSettingError(field, "must be a string", value)
    if not 1 <= len(value) <= max_len:
        raise ModemSettingError(field, f"must be 1 to {max_len} characters", value)
    if any(not " " <= ch <= "~" or ch == '"' for ch in value):
        raise ModemSettingError(field, "must be printable ASCII without double quotes", value)
    return value


def _check_enum(field: str, value: object, enum: type[_E]) -> _E:
    if isinstance(value, str):
        try:
            return enum[value.upper()]
        except KeyError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            return enum(value)
        except ValueError:
            pass
    allowed = ", ".join(f"{m.value} ({m.name.lower()})" for m in enum)
    raise ModemSettingError(field, f"must be one of {allowed}", value)


def _validate(field: str, value: object) -> object:
    """The normalised value for `field`, or `ModemSettingError`."""
    match field:
        case "rssi":
            rssi = _check_int(field, value)
            if not (0 <= rssi <= 31 or rssi == _RSSI_UNKNOWN):
                raise ModemSettingError(field, "must be 0..31 or 99 (unknown)", value)
            return rssi
        case "ber":
            ber = _check_int(field, value)
            if not (0 <= ber <= 7 or ber == 99):
                raise ModemSettingError(field, "must be 0..7 or 99 (unknown)", value)
            return ber
        case "registration":
            return _check_enum(field, value, RegistrationStatus)
        case "act":
            return _check_enum(field, value, AccessTechnology)
        case "operator":
            return _check_text(field, value, max_len=24)
        case "manufacturer" | "model" | "revision":
            return _check_text(field, value, max_len=64)
        case "imei":
            if not isinstance(value, str) or len(value) != 15 or not value.isdigit():
                raise ModemSettingError(field, "must be 15 decimal digits", value)
            return value
        case "clock_offset_s":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ModemSettingError(field, "must be a number of seconds", value)
            if not math.isfinite(value) or abs(value) > MAX_CLOCK_OFFSET_S:
                raise ModemSettingError(field, "must be finite and within 10 years", value)
            return float(value)
        case "tz_quarters":
            quarters = _check_int(field, value)
            if not -48 <= quarters <= 56:
                raise ModemSettingError(field, "must be -48..56 quarter hours", value)
            return quarters
        case "network_time" | "responsive" | "echo":
            return _check_bool(field, value)
        case _:
            raise ModemSettingError(field, "unknown field", value)


class ModemState:
    """The live settings of one simulated modem and what it has been asked.

    Settings are a frozen `ModemSettings`, replaced whole by `update`; counters are plain
    attributes the session increments.
    """

    __slots__ = ("_settings", "commands", "errors", "ignored")

    def __init__(self, settings: ModemSettings | None = None) -> None:
        self._settings = settings or ModemSettings()
        self.commands = 0
        """Command lines received while responsive."""
        self.errors = 0
        """Command lines answered with ERROR or +CME ERROR."""
        self.ignored = 0
        """Command lines swallowed while unresponsive."""

    @property
    def settings(self) -> ModemSettings:
        """The current settings."""
        return self._settings

    def update(self, **changes: object) -> ModemSettings:
        """Validate and apply `changes` all together (none on error); return the new settings.

        Enum fields accept their number or their name (``registration="roaming"``).
        Raises `ModemSettingError` naming the first bad field.
        """
        valid = {field: _validate(field, value) for field, value in changes.items()}
        self._settings = replace(self._settings, **valid)  # type: ignore[arg-type]
        return self._settings

    def snapshot(self) -> dict[str, object]:
        """Settings (as `update` takes them), derived values and counters, JSON-friendly."""
        s = self._settings
        out: dict[str, object] = {name: getattr(s, name) for name in SETTING_FIELDS}
        out["registration"] = int(s.registration)
        out["act"] = int(s.act)
        out["registration_name"] = s.registration.name.lower()
        out["act_name"] = s.act.name.lower()
        out["rssi_dbm"] = None if s.rssi == _RSSI_UNKNOWN else -113 + 2 * s.rssi
        out["commands"] = self.commands
        out["errors"] = self.errors
        out["ignored"] = self.ignored
        return out


def utc_now() -> datetime:
    """The default clock: the system's UTC time."""
    return datetime.now(UTC)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class _CommandFailed(Exception):
    """A recognised command cannot be carried out; ``+CME ERROR: <code>`` when enabled."""

    def __init__(self, code: int | None = None) -> None:
        super().__init__(code)
        self.code = code  # None: plain ERROR whatever +CMEE says


_CME_TEXT = {3: "operation not allowed", 4: "operation not supported", 50: "incorrect parameters"}
_NOT_SUPPORTED = 4
_BAD_PARAMETERS = 50

_Form = Literal["exec", "read", "test", "set"]
_EXTENDED = re.compile(r"\+([A-Z][A-Z0-9]*)(?:(=\?)|(\?)|=(.*))?")
_BASIC = re.compile(r"&?[A-Z]\d*")
_IDENTITY = {
    "CGMI": "manufacturer",
    "GMI": "manufacturer",
    "CGMM": "model",
    "GMM": "model",
    "CGMR": "revision",
    "GMR": "revision",
    "CGSN": "imei",
    "GSN": "imei",
}
_REGISTRATION = ("CREG", "CGREG", "CEREG")


class ModemSession:
    """The AT command interpreter of one modem: bytes in, reply bytes out, no I/O."""

    def __init__(self, state: ModemState, *, clock: Clock = utc_now) -> None:
        self.state = state
        self._clock = clock
        self._powered_on = _as_utc(clock())
        self._buffer = bytearray()
        self._overflow = False
        self._hung_line = False
        self.cmee = 0
        """``+CMEE`` mode: 0 plain ERROR, 1 numeric, 2 verbose ``+CME ERROR``."""

    def receive(self, data: bytes) -> bytes:
        """Take bytes the gateway wrote; return what the modem writes back (maybe ``b""``)."""
        responsive = self.state.settings.responsive
        out = bytearray()
        for byte in data:
            if byte in (0x0D, 0x0A):
                line, overflow = bytes(self._buffer), self._overflow
                hung = self._hung_line or not responsive
                self._buffer.clear()
                self._overflow = False
                self._hung_line = False
                if hung and (line or overflow):
                    self.state.ignored += 1
                elif line or overflow:
                    out += self._line(line, overflow)
            elif self._overflow:
                continue
            elif len(self._buffer) >= MAX_LINE:
                self._buffer.clear()
                self._overflow = True
            else:
                self._buffer.append(byte)
        if not responsive and (self._buffer or self._overflow):
            # A line any part of which reached a hung modem is lost, whenever it ends.
            self._hung_line = True
        return bytes(out)

    def _line(self, raw: bytes, overflow: bool) -> bytes:
        self.state.commands += 1
        echo = raw + b"\r" if self.state.settings.echo and not overflow else b""
        if overflow:
            return self._error(None)
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return echo + self._error(None)
        return echo + self._execute(text.replace(" ", "").upper())

    def _error(self, code: int | None) -> bytes:
        self.state.errors += 1
        if code is None or self.cmee == 0:
            return b"\r\nERROR\r\n"
        detail = str(code) if self.cmee == 1 else _CME_TEXT.get(code, "unknown")
        return f"\r\n+CME ERROR: {detail}\r\n".encode("ascii")

    def _execute(self, line: str) -> bytes:
        if not line.startswith("AT"):
            return self._error(None)
        out = bytearray()
        try:
            for command in _split(line[2:]):
                info = self._command(command)
                if info:
                    out += ("\r\n" + "\r\n".join(info) + "\r\n").encode("ascii")
        except _CommandFailed as failed:
            return bytes(out) + self._error(failed.code)
        return bytes(out) + b"\r\nOK\r\n"

    def _command(self, command: str) -> list[str]:
        if not command.startswith("+"):
            return self._basic(command)
        match = _EXTENDED.fullmatch(command)
        if match is None:
            raise _CommandFailed()
        name, test, read, args = match.groups()
        form: _Form = "test" if test else "read" if read else "set" if args is not None else "exec"
        return self._extended(name, form, args or "")

    def _basic(self, command: str) -> list[str]:
        s = self.state.settings
        match command:
            case "E" | "E0":
                self.state.update(echo=False)
            case "E1":
                self.state.update(echo=True)
            case "I" | "I0":
                return [s.manufacturer, s.model, f"Revision: {s.revision}"]
            case "Z" | "Z0" | "&F" | "&F0":
                self.state.update(echo=True)
                self.cmee = 0
            case _:
                raise _CommandFailed()
        return []

    def _extended(self, name: str, form: _Form, args: str) -> list[str]:
        s = self.state.settings
        if name in _IDENTITY:
            if form == "exec":
                return [str(getattr(s, _IDENTITY[name]))]
            return _only_test(form)
        if name in _REGISTRATION:
            return self._registration(name, form, args)
        match name, form:
            case "CSQ", "exec":
                return [f"+CSQ: {s.rssi},{s.ber}"]
            case "CSQ", "test":
                return ["+CSQ: (0-31,99),(0-7,99)"]
            case "COPS", "read":
                if s.registration in (RegistrationStatus.HOME, RegistrationStatus.ROAMING):
                    return [f'+COPS: 0,0,"{s.operator}",{s.act.value}']
                return ["+COPS: 0"]
            case "COPS", "set" if args == "0":
                return []
            case "CCLK", "read":
                return [f'+CCLK: "{self._network_time()}"']
            case "CCLK", "test":
                return []
            case "CMEE", "read":
                return [f"+CMEE: {self.cmee}"]
            case "CMEE", "test":
                return ["+CMEE: (0-2)"]
            case "CMEE", "set":
                if args not in ("0", "1", "2"):
                    raise _CommandFailed(_BAD_PARAMETERS)
                self.cmee = int(args)
                return []
            case (("CSQ" | "COPS" | "CCLK" | "CMEE"), _):
                raise _CommandFailed(_NOT_SUPPORTED)
            case _:
                raise _CommandFailed()

    def _registration(self, name: str, form: _Form, args: str) -> list[str]:
        # Only mode 0 (no unsolicited result codes): the simulator never speaks unasked.
        match form:
            case "read":
                return [f"+{name}: 0,{self.state.settings.registration.value}"]
            case "test":
                return [f"+{name}: (0)"]
            case "set" if args == "0":
                return []
            case _:
                raise _CommandFailed(_NOT_SUPPORTED)

    def _network_time(self) -> str:
        s = self.state.settings
        now = _as_utc(self._clock())
        if not s.network_time:
            since_power_on = max(now - self._powered_on, timedelta(0))
            return f"{NO_NETWORK_TIME_EPOCH + since_power_on:%y/%m/%d,%H:%M:%S}+00"
        local = now + timedelta(seconds=s.clock_offset_s, minutes=15 * s.tz_quarters)
        sign = "-" if s.tz_quarters < 0 else "+"
        return f"{local:%y/%m/%d,%H:%M:%S}{sign}{abs(s.tz_quarters):02d}"


def _only_test(form: _Form) -> list[str]:
    if form == "test":
        return []
    raise _CommandFailed(_NOT_SUPPORTED)


def _split(body: str) -> list[str]:
    """The commands of one line after ``AT``: basic ones (``E0``, ``I``) and ``;``-separated
    extended ones (``+CSQ;+CREG?``)."""
    commands: list[str] = []
    i = 0
    while i < len(body):
        if body[i] == ";":
            i += 1
        elif body[i] == "+":
            end = body.find(";", i)
            end = len(body) if end < 0 else end
            commands.append(body[i:end])
            i = end
        else:
            match = _BASIC.match(body, i)
            if match is None:
                raise _CommandFailed()
            commands.append(match.group())
            i = match.end()
    return commands


class ModemServer:
    """Serves a `ModemSession` on a pseudo-terminal published at `pty_path`.

    Lifetime is an ``async with``: entering publishes the pty, leaving (or `aclose`) removes
    the link and closes it. `serve_forever` runs until cancelled.
    """

    def __init__(self, state: ModemState, pty_path: str, *, clock: Clock = utc_now) -> None:
        self.state = state
        self.pty_path = pty_path
        self._clock = clock
        self._pty: PseudoTerminal | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed: asyncio.Future[None] | None = None
        self._session: ModemSession | None = None

    async def __aenter__(self) -> ModemServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Publish the pty and start answering (raises `PtyError` if the path is taken)."""
        if self._pty is not None:
            return
        loop = asyncio.get_running_loop()
        self._session = ModemSession(self.state, clock=self._clock)
        self._failed = loop.create_future()
        self._pty = PseudoTerminal(self.pty_path)
        self._loop = loop
        self._pty.add_reader(loop, self._on_readable)
        logger.info("modem %s: serving on %s", self.pty_path, self._pty.slave_name)

    async def serve_forever(self) -> None:
        """Answer until cancelled; raises `ModemTransportError` if the pty fails."""
        if self._failed is None:
            raise RuntimeError("ModemServer.serve_forever called before start")
        await asyncio.shield(self._failed)

    async def aclose(self) -> None:
        """Stop answering, remove the link and close the pty; safe to call twice."""
        pty, self._pty = self._pty, None
        if pty is None:
            return
        if self._loop is not None:
            pty.remove_reader(self._loop)
        pty.close()
        logger.info("modem %s: closed", self.pty_path)

    def _on_readable(self) -> None:
        assert self._pty is not None and self._session is not None
        try:
            data = self._pty.read()
            if not data:
                return
            reply = self._session.receive(data)
            logger.debug("modem %s: rx %r tx %r", self.pty_path, data, reply)
            if reply:
                self._pty.write(reply)
        except OSError as exc:
            logger.error("modem %s: pty failed: %s", self.pty_path, exc)
            if self._loop is not None:
                self._pty.remove_reader(self._loop)
            if self._failed is not None and not self._failed.done():
                error = ModemTransportError(self.pty_path, str(exc))
                error.__cause__ = exc
                self._failed.set_exception(error)


async def serve_modem(
    state: ModemState,
    pty_path: str,
    *,
    clock: Clock = utc_now,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve `state` as a modem on a pty at `pty_path` until cancelled; `ready` is set once
    the path can be opened. The pty is always closed and its link removed on the way out."""
    async with ModemServer(state, pty_path, clock=clock) as server:
        if ready is not None:
            ready.set()
        await server.serve_forever()
