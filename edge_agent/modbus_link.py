"""The Modbus master link to one boiler controller: session layer under the poller.

`ModbusLink` owns one pymodbus async client (RTU over a serial port, or Modbus TCP) and adds
what the agent needs on top of it:

* lazy connection, and reconnection on the next call after any failure, so a vanished
  serial port or a reset TCP connection never leaves the link unusable;
* one `asyncio.Lock`, because the poller and the command executor share one RS-485 bus;
* its own retry loop with a per-attempt timeout. pymodbus runs with ``retries=0`` and
  ``reconnect_delay=0``: its own retries would hide attempts from our counters, and its
  background reconnect task would race ours;
* a check that each reply answers the request sent (function code and length): RTU frames
  carry no transaction id, so a late reply to a timed-out request can arrive during the
  next one;
* translation of every pymodbus failure, once, into `CommsTimeout`, `DeviceException` or
  `CommsError`, each carrying the function code, address and device id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from edge_agent.errors import CommsError, CommsTimeout, DeviceException
from protocols.planner import MAX_BITS_PER_READ, MAX_REGISTERS_PER_READ, ReadRequest
from protocols.registers import Table

log = logging.getLogger(__name__)

WRITE_SINGLE_REGISTER = 6
"""Modbus function code of `ModbusLink.write_register`."""

# pymodbus logs every timeout at ERROR (with a dump of recent frames) and every refused
# connect at WARNING. Each of those failures reaches our caller as a CommsError, and the
# poller logs link state changes once, so pymodbus's own lines are only noise here. An
# entry point that wants them (frame-level debugging) sets a level itself, which we keep.
_pymodbus_log = logging.getLogger("pymodbus")
if _pymodbus_log.level == logging.NOTSET:
    _pymodbus_log.setLevel(logging.CRITICAL)

# Framing around the PDU, to count received bytes from decoded replies: RTU adds unit id
# and CRC, TCP adds the MBAP header (transaction, protocol, length, unit).
_RTU_OVERHEAD = 3
_TCP_OVERHEAD = 7

_Client = AsyncModbusSerialClient | AsyncModbusTcpClient
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SerialTarget:
    """A controller on a serial line (Modbus RTU); 8E1 at 19200 baud is the Modbus default."""

    port: str
    baudrate: int = 19200
    parity: str = "E"
    stopbits: int = 1
    bytesize: int = 8

    def __str__(self) -> str:
        return f"{self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


@dataclass(frozen=True, slots=True)
class TcpTarget:
    """A controller (or gateway) speaking Modbus TCP."""

    host: str
    port: int = 502

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(slots=True)
class LinkStats:
    """Counters since the link was made; `attempts` = `requests` + `retries`."""

    requests: int = 0
    """Calls to `read` and `write_register`."""
    attempts: int = 0
    """Request frames sent, or tried to send (a failed connect counts as an attempt)."""
    retries: int = 0
    timeouts: int = 0
    """Attempts that got no valid reply in time (silence, bad CRC, connection trouble)."""
    bad_replies: int = 0
    """Attempts answered with the wrong function code or length."""
    exceptions: int = 0
    """Modbus exception responses."""
    connects: int = 0
    """Successful (re)connections."""
    bytes_sent: int = 0
    bytes_received: int = 0
    """Bytes of valid replies only: garbage and bad-CRC frames are not counted."""


class _BadReply(Exception):
    """A reply that does not answer the request sent; retried like silence."""


class ModbusLink:
    """One Modbus master connection to one controller (unit id), serialised by a lock."""

    def __init__(
        self,
        target: SerialTarget | TcpTarget,
        *,
        unit: int = 1,
        timeout_s: float = 1.0,
        retries: int = 2,
        device_id: str | None = None,
    ) -> None:
        if not 1 <= unit <= 247:  # not 0: a broadcast is never answered, so cannot be read
            raise ValueError(f"unit id must be 1..247, got {unit}")
        if timeout_s <= 0 or retries < 0:
            raise ValueError("timeout_s must be > 0 and retries >= 0")
        self.target = target
        self.unit = unit
        self.timeout_s = timeout_s
        self.retries = retries
        self.device_id = device_id
        self.stats = LinkStats()
        self._lock = asyncio.Lock()
        self._client: _Client | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"ModbusLink({self.target}, unit={self.unit}, device_id={self.device_id!r})"

    async def __aenter__(self) -> ModbusLink:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection; the link cannot be used afterwards. Safe to call twice."""
        self._closed = True
        self._drop_client()

    @property
    def connected(self) -> bool:
        """Whether the link holds an open connection right now."""
        return self._client is not None and self._client.connected

    async def read(self, request: ReadRequest) -> list[int] | list[bool]:
        """Perform one planned read: `request.count` registers, or bits for a bit table."""
        limit = MAX_BITS_PER_READ if request.table.is_bit else MAX_REGISTERS_PER_READ
        if not 1 <= request.count <= limit:
            raise ValueError(f"read count must be 1..{limit}, got {request.count}")
        fc = request.function_code

        def send(client: _Client) -> Awaitable[ModbusPDU]:
            method = {
                Table.COIL: client.read_coils,
                Table.DISCRETE_INPUT: client.read_discrete_inputs,
                Table.HOLDING_REGISTER: client.read_holding_registers,
                Table.INPUT_REGISTER: client.read_input_registers,
            }[request.table]
            return method(request.address, count=request.count, device_id=self.unit)

        def check(reply: ModbusPDU) -> list[int] | list[bool]:
            if request.table.is_bit:
                # Bits come packed in whole bytes: up to 7 padding bits follow the last one.
                bits = [bool(b) for b in reply.bits]
                if len(bits) < request.count or len(bits) - request.count >= 8:
                    raise _BadReply(f"{len(bits)} bits in reply to a read of {request.count}")
                return bits[: request.count]
            registers = [int(r) for r in reply.registers]
            if len(registers) != request.count:
                raise _BadReply(f"{len(registers)} registers in reply to a read of {request.count}")
            return registers

        return await self._transact(fc, request.address, send, check)

    async def write_register(self, address: int, value: int, *, retries: int | None = None) -> None:
        """Write one holding register (function 6); returns once the controller confirms.

        A timed-out write is retried like a read (`retries` overrides the link's count), so a
        controller that acted on the request but whose reply was lost sees it twice: fine for
        setpoints, which are idempotent; a command register (lockout reset) passes 0.
        """
        if not 0 <= address <= 0xFFFF or not 0 <= value <= 0xFFFF:
            raise ValueError(f"address and value must be 0..65535, got {address}, {value}")

        def send(client: _Client) -> Awaitable[ModbusPDU]:
            return client.write_register(address, value, device_id=self.unit)

        def check(reply: ModbusPDU) -> None:
            if reply.address != address or list(reply.registers) != [value]:
                raise _BadReply(f"a reply echoing {list(reply.registers)} at {reply.address}")

        await self._transact(WRITE_SINGLE_REGISTER, address, send, check, retries)

    async def _transact(
        self,
        function_code: int,
        address: int,
        send: Callable[[_Client], Awaitable[ModbusPDU]],
        check: Callable[[ModbusPDU], _T],
        retries: int | None = None,
    ) -> _T:
        # `send` issues one attempt on a connected client; `check` turns a reply of the
        # right function code into the result, or raises _BadReply to have it retried.
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        what = f"function {function_code} at address {address} of {self._name}"
        async with self._lock:
            self.stats.requests += 1
            failure, bad_reply = "", False
            last_exc: Exception | None = None
            retries = self.retries if retries is None else retries
            for attempt in range(retries + 1):
                if attempt:
                    self.stats.retries += 1
                    log.debug("%s: retrying %s after %s", self._name, what, failure)
                self.stats.attempts += 1
                try:
                    client = await self._connected_client()
                    reply = await send(client)
                    _reraise_lost_cancellation()
                except ModbusException as exc:
                    # Silence, a bad CRC (pymodbus drops the frame, then waits) and a lost
                    # connection all end here. pymodbus sometimes closes the connection
                    # itself; a closed client is reconnected by the next attempt.
                    self.stats.timeouts += 1
                    failure, bad_reply, last_exc = f"no reply ({_reason(exc)})", False, exc
                    if self._client is not None and not self._client.connected:
                        self._drop_client()
                    continue
                except OSError as exc:
                    self.stats.timeouts += 1
                    failure, bad_reply, last_exc = f"connection error ({exc})", False, exc
                    self._drop_client()
                    continue
                if isinstance(reply, ExceptionResponse):
                    # The controller answered; asking again gets the same answer.
                    self.stats.exceptions += 1
                    raise DeviceException(
                        f"exception {reply.exception_code} in reply to {what}",
                        exception_code=reply.exception_code,
                        device_id=self.device_id,
                        function_code=function_code,
                        address=address,
                    )
                try:
                    if reply.function_code != function_code:
                        raise _BadReply(f"a function {reply.function_code} reply")
                    return check(reply)
                except _BadReply as exc:
                    # Most likely the late reply to an earlier, timed-out request (RTU has
                    # no transaction id to tell them apart); asking again usually cures it.
                    self.stats.bad_replies += 1
                    failure, bad_reply, last_exc = str(exc), True, exc
            attempts = retries + 1
            message = f"{what}: {failure} after {attempts} attempt(s) of {self.timeout_s:g} s"
            error = CommsError if bad_reply else CommsTimeout
            raise error(
                message, device_id=self.device_id, function_code=function_code, address=address
            ) from last_exc

    @property
    def _name(self) -> str:
        return self.device_id or f"{self.target} unit {self.unit}"

    async def _connected_client(self) -> _Client:
        if self._client is not None and self._client.connected:
            return self._client
        self._drop_client()
        client = self._make_client()
        # connect() swallows OSError and timeouts and returns False.
        if not await client.connect():
            client.close()
            raise OSError(f"cannot connect to {self.target}")
        self._client = client
        self.stats.connects += 1
        log.info("%s: connected to %s", self._name, self.target)
        return client

    def _make_client(self) -> _Client:
        # retries=0 and reconnect_delay=0: see the module docstring.
        target = self.target
        if isinstance(target, SerialTarget):
            return AsyncModbusSerialClient(
                target.port,
                baudrate=target.baudrate,
                parity=target.parity,
                stopbits=target.stopbits,
                bytesize=target.bytesize,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,
                trace_packet=self._count_packet,
                trace_pdu=self._count_pdu,
            )
        return AsyncModbusTcpClient(
            target.host,
            port=target.port,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._count_packet,
            trace_pdu=self._count_pdu,
        )

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _count_packet(self, sending: bool, data: bytes) -> bytes:
        # Received data is passed here once per chunk with everything buffered so far, so
        # only the sending side counts bytes exactly; received bytes are counted per PDU.
        if sending:
            self.stats.bytes_sent += len(data)
        return data

    def _count_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            overhead = _RTU_OVERHEAD if isinstance(self.target, SerialTarget) else _TCP_OVERHEAD
            self.stats.bytes_received += overhead + 1 + len(pdu.encode())
        return pdu


def _reason(exc: ModbusException) -> str:
    # pymodbus messages start with "Modbus Error: [Input/Output] ..."; keep the tail.
    return str(exc).rpartition("] ")[2] or type(exc).__name__


def _reraise_lost_cancellation() -> None:
    """Raise the cancellation pymodbus swallowed, if it did.

    pymodbus waits for replies with ``asyncio.wait_for``, which on Python 3.11 returns the
    reply and drops a cancellation that arrives at the same moment; the poll loop would then
    sleep on and SIGTERM would hang. The task still counts the request, so raise it here.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
