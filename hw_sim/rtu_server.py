"""Modbus RTU slave on a pseudo-terminal, with optional emulation of serial line timing.

A pty moves bytes instantly, whatever baud rate the master configured. With line timing on,
each reply is held back for as long as the request and the reply would have taken on a real
line at the configured rate (11 bits a character for 8E1), plus the 3.5-character silence
that ends a frame, so throughput measured over the pty matches an RS-485 line.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from hw_sim.device import BoilerDevice
from hw_sim.faults import CommsFaults
from hw_sim.modbus import handle_request
from hw_sim.pty import PseudoTerminal
from hw_sim.rtu import RtuFrame, RtuFramer, frame

log = logging.getLogger(__name__)

BROADCAST = 0
SILENCE_FLOOR_S = 0.02
"""Shortest silence that ends a frame on a pty, whose bytes arrive in scheduler-sized bursts."""


@dataclass(frozen=True, slots=True)
class LineSettings:
    """Serial line parameters, as a master must configure them."""

    baud: int = 19200
    parity: str = "E"
    stop_bits: int = 1
    data_bits: int = 8
    emulate_timing: bool = False

    def __post_init__(self) -> None:
        if self.baud <= 0:
            raise ValueError(f"baud must be positive, got {self.baud}")
        if self.parity not in ("N", "E", "O"):
            raise ValueError(f"parity must be N, E or O, got {self.parity!r}")
        if self.stop_bits not in (1, 2):
            raise ValueError(f"stop bits must be 1 or 2, got {self.stop_bits}")
        if self.data_bits not in (7, 8):
            raise ValueError(f"data bits must be 7 or 8, got {self.data_bits}")

    @property
    def bits_per_char(self) -> int:
        """Start bit + data bits + parity bit + stop bits."""
        return 1 + self.data_bits + (self.parity != "N") + self.stop_bits

    @property
    def char_time_s(self) -> float:
        """Time one character occupies on the line."""
        return self.bits_per_char / self.baud

    @property
    def frame_gap_s(self) -> float:
        """The 3.5-character silence between frames (fixed 1.75 ms above 19200 baud)."""
        return 3.5 * self.char_time_s if self.baud <= 19200 else 0.00175

    def exchange_time_s(self, request_bytes: int, reply_bytes: int) -> float:
        """Time a request, the silence after it and the reply take on a real line."""
        return (request_bytes + reply_bytes) * self.char_time_s + self.frame_gap_s

    def describe(self) -> str:
        """Conventional notation, e.g. ``19200 8E1``."""
        return f"{self.baud} {self.data_bits}{self.parity}{self.stop_bits}"


class RtuServer:
    """Serves a `BoilerDevice` as RTU slave `unit` on a pty published at `path`."""

    def __init__(
        self,
        device: BoilerDevice,
        path: str,
        *,
        unit: int,
        line: LineSettings,
        faults: CommsFaults,
    ) -> None:
        if not 1 <= unit <= 247:
            raise ValueError(f"RTU unit id must be 1..247, got {unit}")
        self.device = device
        self.path = path
        self.unit = unit
        self.line = line
        self.faults = faults
        self.framer = RtuFramer()
        self.replies = 0
        self.ignored_while_off = 0
        self.other_unit_frames = 0
        self._queue: asyncio.Queue[RtuFrame] = asyncio.Queue()
        self._silence: asyncio.TimerHandle | None = None
        self._pty: PseudoTerminal | None = None

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        """Publish the pty and answer requests until cancelled; always removes the link."""
        loop = asyncio.get_running_loop()
        self._pty = PseudoTerminal(self.path)
        try:
            self._pty.add_reader(loop, self._on_readable)
            log.info("RTU slave %d on %s (%s)", self.unit, self.path, self.line.describe())
            if ready is not None:
                ready.set()
            while True:
                request = await self._queue.get()
                await self._answer(request)
        finally:
            if self._silence is not None:
                self._silence.cancel()
            self._pty.remove_reader(loop)
            self._pty.close()

    def power_cycled(self) -> None:
        """Drop half-received frames and queued requests, as a reboot would."""
        self.framer.reset()
        while not self._queue.empty():
            self._queue.get_nowait()

    def snapshot(self) -> dict[str, int | str]:
        """Counters, JSON-friendly."""
        return {
            "path": self.path,
            "unit": self.unit,
            "line": self.line.describe(),
            "frames": self.framer.frames,
            "crc_errors": self.framer.crc_errors,
            "replies": self.replies,
            "ignored_while_off": self.ignored_while_off,
            "other_unit_frames": self.other_unit_frames,
        }

    def _on_readable(self) -> None:
        assert self._pty is not None
        data = self._pty.read()
        if not data:
            return
        for request in self.framer.feed(data):
            self._queue.put_nowait(request)
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        if self.framer.pending:
            delay = max(self.line.frame_gap_s, SILENCE_FLOOR_S)
            self._silence = asyncio.get_running_loop().call_later(delay, self._on_silence)

    def _on_silence(self) -> None:
        self._silence = None
        request = self.framer.flush()
        if request is not None:
            self._queue.put_nowait(request)

    async def _answer(self, request: RtuFrame) -> None:
        if not self.device.online:
            self.ignored_while_off += 1
            return
        if request.unit not in (self.unit, BROADCAST):
            self.other_unit_frames += 1  # another slave on the bus
            return
        reply_pdu = handle_request(self.device, request.pdu)
        if request.unit == BROADCAST:
            return  # broadcasts are executed, never answered
        reply = frame(self.unit, reply_pdu)
        plan = self.faults.plan()
        delay = plan.delay_s
        if self.line.emulate_timing:
            delay += self.line.exchange_time_s(len(request.raw), len(reply))
        if delay:
            await asyncio.sleep(delay)
        if plan.drop or not self.device.online:
            return
        if plan.corrupt:
            reply = self.faults.corrupt_bytes(reply)
        assert self._pty is not None
        self._pty.write(reply)
        self.replies += 1
