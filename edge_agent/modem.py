"""Link health of the gateway's cellular modem, asked over its AT command port.

Two layers:

* Parsers (sans-I/O): `split_lines` turns reply bytes into lines; ``parse_*`` take the lines
  of one command's reply, up to and including its final result code, and return values or
  raise `ModemError`. They skip command echo and unsolicited result codes (``+CREG: 1``).
* `ModemProbe` -- opens the serial port with pyserial, talks to it without blocking through
  the event loop's reader on the port's fd, and turns one round of queries into a flat dict
  of scalars for ``Health.modem``. It never raises for a modem problem.

The port stays open between reads, so ``ATE0`` and the identity queries are sent once. Any
failure (no answer in time, an I/O error, garbage, cancellation) closes it: the next read
reopens it and starts again from ``ATE0``, so a reply that arrives late can never be taken
for the answer to a later command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import termios
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone

import serial  # type: ignore[import-untyped]  # no types-pyserial in the venv

from edge_agent.errors import ModemError

logger = logging.getLogger(__name__)

HealthValue = str | int | float | bool | None
"""A value of the health dict; `protocols.messages.Scalar` under another name."""

REGISTRATION_WORDS: dict[int, str] = {
    0: "not_registered",
    1: "home",
    2: "searching",
    3: "denied",
    4: "unknown",
    5: "roaming",
    6: "home",  # SMS only
    7: "roaming",  # SMS only
    8: "not_registered",  # emergency bearer services only
    9: "home",  # CSFB not preferred
    10: "roaming",  # CSFB not preferred
}
"""``<stat>`` of ``+CREG``/``+CEREG`` (3GPP TS 27.007, 7.2) as the word the probe reports."""

ACCESS_TECHNOLOGIES: dict[int, str] = {
    0: "gsm",
    1: "gsm_compact",
    2: "utran",
    3: "gsm_egprs",
    4: "utran_hsdpa",
    5: "utran_hsupa",
    6: "utran_hspa",
    7: "lte",
    8: "ec_gsm_iot",
    9: "nb_iot",
    10: "lte_5gcn",
    11: "nr_5gcn",
    12: "nr",
    13: "en_dc",
}
"""``<AcT>`` of ``+COPS`` (3GPP TS 27.007, 7.3) as the word the probe reports."""

_REGISTERED = ("home", "roaming")
_MAX_REPLY = 4096


def split_lines(data: bytes) -> list[str]:
    """The non-empty lines of `data`, split at CR or LF; bytes that are not ASCII become U+FFFD."""
    text = data.decode("ascii", errors="replace").replace("\r", "\n")
    return [line.strip() for line in text.split("\n") if line.strip()]


def is_final(line: str) -> bool:
    """Whether `line` is a final result code (``OK``, ``ERROR``, ``+CME ERROR: ...``)."""
    return line in ("OK", "ERROR") or line.startswith(("+CME ERROR", "+CMS ERROR"))


def _check_ok(lines: Sequence[str], command: str) -> None:
    finals = [line for line in lines if is_final(line)]
    if not finals:
        raise ModemError(f"{command}: no final result code")
    if finals[-1] != "OK":
        raise ModemError(f"{command}: {finals[-1]}")


def _fields(payload: str, command: str) -> list[str]:
    """Comma-separated fields of `payload`, quotes kept, commas inside quotes not splitting."""
    fields: list[str] = []
    current = ""
    quoted = False
    for ch in payload:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            fields.append(current.strip())
            current = ""
        else:
            current += ch
    if quoted:
        raise ModemError(f"{command}: unbalanced quotes in {payload!r}")
    fields.append(current.strip())
    return fields


def _int(field: str, command: str) -> int:
    if not field.isdigit():
        raise ModemError(f"{command}: expected a number, got {field!r}")
    return int(field)


def _unquote(field: str) -> str:
    return field[1:-1] if len(field) >= 2 and field[0] == field[-1] == '"' else field


def _info(lines: Sequence[str], name: str, command: str) -> list[list[str]]:
    """Fields of every ``+NAME:`` line in an OK reply to `command` (echo, other codes skipped)."""
    _check_ok(lines, command)
    prefix = f"+{name}:"
    return [_fields(line[len(prefix) :], command) for line in lines if line.startswith(prefix)]


def parse_csq(lines: Sequence[str]) -> tuple[int | None, int | None]:
    """``(rssi_dbm, ber)`` from the reply to ``AT+CSQ``; 99 (not known) becomes None."""
    for fields in reversed(_info(lines, "CSQ", "AT+CSQ")):
        if len(fields) != 2:
            continue
        rssi, ber = (_int(field, "AT+CSQ") for field in fields)
        if not (0 <= rssi <= 31 or rssi == 99) or not (0 <= ber <= 7 or ber == 99):
            raise ModemError(f"AT+CSQ: values out of range: {rssi},{ber}")
        return (None if rssi == 99 else -113 + 2 * rssi), (None if ber == 99 else ber)
    raise ModemError("AT+CSQ: no +CSQ line in the reply")


def parse_registration(lines: Sequence[str], name: str = "CREG") -> str:
    """Registration status word (see `REGISTRATION_WORDS`) from the reply to ``AT+<name>?``.

    `name` is ``CREG``, ``CGREG`` or ``CEREG``. The solicited line starts ``<n>,<stat>``; an
    unsolicited one starts ``<stat>`` alone or is followed by a quoted area code, and is skipped.
    """
    for fields in reversed(_info(lines, name, f"AT+{name}?")):
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
            stat = int(fields[1])
            if stat not in REGISTRATION_WORDS:
                raise ModemError(f"AT+{name}?: unknown registration status {stat}")
            return REGISTRATION_WORDS[stat]
    raise ModemError(f"AT+{name}?: no +{name}: <n>,<stat> line in the reply")


def parse_cops(lines: Sequence[str]) -> tuple[str | None, str | None]:
    """``(operator, act)`` from the reply to ``AT+COPS?``; both None when not registered."""
    infos = _info(lines, "COPS", "AT+COPS?")
    if not infos:
        raise ModemError("AT+COPS?: no +COPS line in the reply")
    fields = infos[-1]
    _int(fields[0], "AT+COPS?")
    if len(fields) < 3:
        return None, None
    operator = _unquote(fields[2]) or None
    if len(fields) < 4 or not fields[3]:
        return operator, None
    act = _int(fields[3], "AT+COPS?")
    return operator, ACCESS_TECHNOLOGIES.get(act, f"act_{act}")


def parse_cclk(lines: Sequence[str]) -> datetime:
    """The modem's clock from the reply to ``AT+CCLK?``, as an aware datetime.

    Two-digit years follow `strptime`: 69-99 are 19xx, so a modem that has had no network time
    since power-on (``80/01/06,...``) reports a date decades in the past.
    """
    infos = _info(lines, "CCLK", "AT+CCLK?")
    if not infos or len(infos[-1]) != 1:
        raise ModemError('AT+CCLK?: no +CCLK: "yy/MM/dd,hh:mm:ss+zz" line in the reply')
    text = _unquote(infos[-1][0])
    stamp, sign, quarters = text[:17], text[17:18], text[18:]
    if sign not in ("+", "-") or not quarters.isdigit():
        raise ModemError(f"AT+CCLK?: bad time zone in {text!r}")
    try:
        local = datetime.strptime(stamp, "%y/%m/%d,%H:%M:%S")
        zone = timezone(timedelta(minutes=int(sign + quarters) * 15))
    except ValueError as exc:
        raise ModemError(f"AT+CCLK?: bad time {text!r}") from exc
    return local.replace(tzinfo=zone)


def parse_text(lines: Sequence[str], command: str) -> str:
    """The one information line of the reply to `command` (``AT+CGMM``, ``AT+CGSN``, ...).

    Echo of `command` is skipped; a ``+CGMM:``-style prefix, which some modems add, is removed.
    """
    _check_ok(lines, command)
    prefix = command.upper().removeprefix("AT") + ":"
    for line in lines:
        if line.upper() == command.upper() or is_final(line):
            continue
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
        if not line.startswith("+"):
            return line
    raise ModemError(f"{command}: no information line in the reply")


def utc_now() -> datetime:
    """The default clock of `ModemProbe`: the system's UTC time."""
    return datetime.now(UTC)


class ModemProbe:
    """Asks the modem on `port` for link health; one `read` per health report.

    Each command may take up to `timeout` seconds; a hung modem therefore costs one timeout
    per `read`, since the first unanswered command ends the round. `clock` is compared with
    the modem's network time to report ``clock_offset_s``.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = 115200,
        timeout: float = 2.0,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.timeout = timeout
        self._clock = clock
        self._serial: serial.Serial | None = None
        self._readable = asyncio.Event()
        self._lock = asyncio.Lock()
        self._responding: bool | None = None
        self._identity: dict[str, HealthValue] | None = None
        self._cereg = True  # until the modem answers ERROR to AT+CEREG?
        self._cclk = True

    async def __aenter__(self) -> ModemProbe:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def read(self) -> dict[str, HealthValue]:
        """One round of queries as a flat dict for ``Health.modem``; never raises for the modem.

        Keys: ``responding`` always; ``rssi_dbm``, ``ber``, ``registration``, ``operator``,
        ``act``, ``network_time``, ``clock_offset_s``, ``model``, ``revision``, ``imei`` as far
        as the round got; ``error`` (a short reason) when ``responding`` is False.
        """
        async with self._lock:
            result: dict[str, HealthValue] = {}
            try:
                await self._query(result)
            except (ModemError, OSError) as exc:
                self._close_port()
                reason = _reason(exc)
                result.update(responding=False, error=reason)
                if self._responding is not False:
                    logger.warning("modem %s: not responding: %s", self.port, reason)
                self._responding = False
                return result
            except asyncio.CancelledError:
                self._close_port()
                raise
            result["responding"] = True
            if self._responding is not True:
                logger.info("modem %s: responding (%s)", self.port, result.get("model"))
            self._responding = True
            return result

    async def aclose(self) -> None:
        """Close the port; safe to call twice. A later `read` opens it again."""
        self._close_port()

    async def _query(self, result: dict[str, HealthValue]) -> None:
        result.update(self._identity or {})
        if self._serial is None:
            self._open()
            _check_ok(await self._command("ATE0"), "ATE0")
        if self._identity is None:
            self._identity = await self._query_identity()
            result.update(self._identity)
        result["rssi_dbm"], result["ber"] = parse_csq(await self._command("AT+CSQ"))
        registration = parse_registration(await self._command("AT+CREG?"), "CREG")
        if self._cereg:
            lines = await self._command("AT+CEREG?")
            if lines and lines[-1] == "OK":
                lte = parse_registration(lines, "CEREG")
                # An LTE-only modem is often unregistered on the CS domain (CREG) yet online.
                if lte in _REGISTERED or registration not in _REGISTERED:
                    registration = lte
            else:
                self._cereg = False
        result["registration"] = registration
        result["operator"], result["act"] = parse_cops(await self._command("AT+COPS?"))
        if self._cclk:
            lines = await self._command("AT+CCLK?")
            if lines and lines[-1] == "OK":
                network = parse_cclk(lines)
                result["network_time"] = network.astimezone(UTC).isoformat()
                offset = (network - self._clock()).total_seconds()
                result["clock_offset_s"] = round(offset, 1)
            else:
                self._cclk = False

    async def _query_identity(self) -> dict[str, HealthValue]:
        identity: dict[str, HealthValue] = {}
        for key, command in (("model", "AT+CGMM"), ("revision", "AT+CGMR"), ("imei", "AT+CGSN")):
            lines = await self._command(command)
            if lines and lines[-1] == "OK":  # a modem that will not say is not a broken one
                identity[key] = parse_text(lines, command)
        return identity

    def _open(self) -> None:
        try:
            port = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=0)
        except (OSError, termios.error) as exc:  # SerialException is an OSError
            code = exc.args[0] if exc.args else None
            reason = os.strerror(code) if isinstance(code, int) else str(exc)
            raise ModemError(f"cannot open {self.port}: {reason}") from exc
        port.reset_input_buffer()
        self._serial = port
        self._readable.clear()
        asyncio.get_running_loop().add_reader(port.fileno(), self._readable.set)

    def _close_port(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        asyncio.get_running_loop().remove_reader(port.fileno())
        port.close()
        self._readable.set()  # wake a read in progress, which then finds the port gone

    async def _command(self, command: str) -> list[str]:
        """Send `command`; its reply lines up to a final result code, or `ModemError`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        await self._write(f"{command}\r".encode("ascii"), deadline)
        reply = b""
        while True:
            self._readable.clear()
            reply += self._read_available()
            if len(reply) > _MAX_REPLY:
                raise ModemError(f"{command}: reply longer than {_MAX_REPLY} bytes")
            complete = reply[: max(reply.rfind(b"\r"), reply.rfind(b"\n")) + 1]
            lines = split_lines(complete)
            if lines and is_final(lines[-1]):
                return lines
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ModemError(f"{command}: no reply within {self.timeout:g} s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # not wait_for: see uplink._drain
                    await self._readable.wait()

    def _fd(self) -> int:
        if self._serial is None:
            raise ModemError(f"port {self.port} closed")
        fd: int = self._serial.fileno()
        return fd

    def _read_available(self) -> bytes:
        try:
            return os.read(self._fd(), 4096)
        except BlockingIOError:
            return b""

    async def _write(self, data: bytes, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while data:
            try:
                data = data[os.write(self._fd(), data) :]
            except BlockingIOError:
                if loop.time() >= deadline:
                    raise ModemError(f"write to {self.port} timed out") from None
                await asyncio.sleep(0.01)


def _reason(exc: ModemError | OSError) -> str:
    if isinstance(exc, ModemError) or exc.strerror is None:
        return str(exc)
    return f"I/O error: {exc.strerror}"
