"""Modbus RTU framing for the slave side, sans-I/O.

An RTU frame is ``unit | PDU | CRC-16 (little-endian)``. A real slave finds frame ends by
3.5 character times of silence on the line. A pty delivers a master's frame in one burst,
so `RtuFramer` uses the request length implied by the function code where it can (all
the functions we serve) and falls back to silence (`flush`) for anything else.

A frame whose CRC does not match is dropped without a reply, as a real slave does, together
with whatever else arrived in the same burst; it is counted in `crc_errors`.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_FRAME = 4  # unit, function, CRC
MAX_FRAME = 256


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (polynomial 0xA001 reflected, initial value 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame(unit: int, pdu: bytes) -> bytes:
    """A complete RTU frame for `pdu` addressed from/to `unit`."""
    body = bytes((unit,)) + pdu
    return body + crc16(body).to_bytes(2, "little")


def crc_ok(raw: bytes) -> bool:
    """Whether a frame's trailing CRC matches its contents."""
    return len(raw) >= MIN_FRAME and crc16(raw[:-2]) == int.from_bytes(raw[-2:], "little")


def request_length(buffer: bytes | bytearray) -> int | None:
    """Total length of the request frame at the start of `buffer`, if it can be known yet."""
    if len(buffer) < 2:
        return None
    function = buffer[1]
    if function in (1, 2, 3, 4, 5, 6, 8):
        return 8
    if function in (15, 16):
        return 9 + buffer[6] if len(buffer) >= 7 else None
    if function == 43:
        return 7
    if function in (7, 11, 12, 17):
        return 4
    return None


@dataclass(frozen=True, slots=True)
class RtuFrame:
    """A request frame with a good CRC."""

    unit: int
    pdu: bytes
    raw: bytes


class RtuFramer:
    """Splits the bytes a master sends into request frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.frames = 0
        self.crc_errors = 0
        self.discarded_bytes = 0

    @property
    def pending(self) -> bool:
        """Whether a partial frame is waiting for more bytes (or for silence)."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[RtuFrame]:
        """Add received bytes; return the complete frames they finish."""
        self._buffer += data
        out: list[RtuFrame] = []
        while self._buffer:
            length = request_length(self._buffer)
            if length is None or len(self._buffer) < length:
                if len(self._buffer) > MAX_FRAME:
                    self._discard()
                break
            raw = bytes(self._buffer[:length])
            if not crc_ok(raw):
                self._discard()
                break
            del self._buffer[:length]
            out.append(self._accept(raw))
        return out

    def flush(self) -> RtuFrame | None:
        """The line went silent: whatever is buffered is one frame, good or bad."""
        if not self._buffer:
            return None
        raw = bytes(self._buffer)
        self._buffer.clear()
        if crc_ok(raw) and len(raw) <= MAX_FRAME:
            return self._accept(raw)
        self.crc_errors += 1
        self.discarded_bytes += len(raw)
        return None

    def reset(self) -> None:
        """Forget any partial frame (e.g. after a power cycle)."""
        self._buffer.clear()

    def _accept(self, raw: bytes) -> RtuFrame:
        self.frames += 1
        return RtuFrame(unit=raw[0], pdu=raw[1:-2], raw=raw)

    def _discard(self) -> None:
        self.crc_errors += 1
        self.discarded_bytes += len(self._buffer)
        self._buffer.clear()
