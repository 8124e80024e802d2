"""Value codecs: engineering values <-> Modbus registers, for every type and byte/word order.

`encode` and `decode` are exact inverses for every value a point can hold exactly: numbers on
the point's scale grid, floats a 32-bit float represents, ASCII strings without trailing
padding (decoding strips trailing NULs and spaces; NaN is NaN, not equal to itself). Scaled
points store ``round(value / scale)`` and decode to ``raw * scale`` rounded to the scale's
decimals, so ``0.1``-scaled temperatures come back as ``21.5`` and not ``21.500000000000004``.

Decoding never fails on what a device sends (any 16-bit words decode to some value, strings
with undecodable bytes use U+FFFD); encoding raises `EncodeError` for values that do not fit.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from protocols.errors import EncodeError, LocalProtocolError
from protocols.registers import DataType, Point, WordOrder

Value = bool | int | float | str

_STRUCT = {
    DataType.U16: ">H",
    DataType.S16: ">h",
    DataType.U32: ">I",
    DataType.S32: ">i",
    DataType.F32: ">f",
}
_F32_MAX = 3.4028234663852886e38
_RAW_RANGE = {
    DataType.U16: (0, 0xFFFF),
    DataType.S16: (-0x8000, 0x7FFF),
    DataType.U32: (0, 0xFFFF_FFFF),
    DataType.S32: (-0x8000_0000, 0x7FFF_FFFF),
}


def _reorder(data: bytes, order: WordOrder) -> bytes:
    """Move big-endian bytes into register order (the permutation is its own inverse)."""
    if order in (WordOrder.CDAB, WordOrder.DCBA) and len(data) == 4:
        data = data[2:] + data[:2]
    if order in (WordOrder.BADC, WordOrder.DCBA):
        data = b"".join(data[i : i + 2][::-1] for i in range(0, len(data), 2))
    return data


def _to_registers(data: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(data) // 2}H", data)


def _from_registers(registers: Sequence[int]) -> bytes:
    try:
        return struct.pack(f">{len(registers)}H", *registers)
    except struct.error as exc:
        raise LocalProtocolError(f"registers must be 16-bit unsigned: {list(registers)}") from exc


def _decimals(scale: float) -> int:
    """Decimal places of the scale as written: 0.1 -> 1, 0.25 -> 2, 2.5 -> 1, 10 -> 0, 1e-05 -> 5.

    ``raw * scale`` then has at most that many decimals, so rounding to them removes exactly the
    binary floating-point error and nothing else (``-log10`` would round 0.25 to one place).
    """
    mantissa, _, exponent = repr(abs(float(scale))).partition("e")
    fraction = mantissa.partition(".")[2].rstrip("0")
    return max(0, len(fraction) - int(exponent or 0))


def scaled(point: Point, raw: int) -> int | float:
    """Apply a point's scale to a raw integer."""
    if point.scale == 1:
        return raw
    return round(raw * point.scale, _decimals(point.scale))


def unscaled(point: Point, value: float) -> int:
    """Turn an engineering value into the raw integer a scaled point stores."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EncodeError(f"point {point.name!r} needs a finite number, got {value!r}")
    try:
        # ValueError: NaN; OverflowError: infinite, an int too large for a float, or a
        # quotient that overflows to infinity.
        return round(value / point.scale)
    except (OverflowError, ValueError):
        raise EncodeError(
            f"point {point.name!r} needs a finite number in range, got {value!r:.40}"
        ) from None


def encode(point: Point, value: Value, order: WordOrder) -> tuple[int, ...]:
    """Registers (or, for `bool`, one bit as 0/1) that hold `value` at `point`."""
    kind = point.type
    if kind is DataType.BOOL:
        if not isinstance(value, bool | int) or value not in (0, 1):
            raise EncodeError(f"point {point.name!r} needs a boolean, got {value!r}")
        return (int(value),)
    if kind is DataType.STRING:
        if not isinstance(value, str):
            raise EncodeError(f"point {point.name!r} needs a string, got {value!r}")
        try:
            data = value.encode("ascii")
        except UnicodeEncodeError as exc:
            raise EncodeError(f"point {point.name!r}: only ASCII text fits, got {value!r}") from exc
        size = 2 * point.length
        if len(data) > size:
            raise EncodeError(f"point {point.name!r} holds {size} characters, got {len(data)}")
        return _to_registers(_reorder_string(data.ljust(size, b"\0"), order))
    if kind is DataType.F32:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EncodeError(f"point {point.name!r} needs a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an int too large for any float
            raise EncodeError(
                f"point {point.name!r}: {value!r:.40} overflows a 32-bit float"
            ) from None
        finite = math.isfinite(number)
        number /= point.scale
        # NaN and infinities pass through as themselves; a finite value must stay finite.
        if finite and not abs(number) <= _F32_MAX:
            raise EncodeError(f"point {point.name!r}: {value!r} overflows a 32-bit float")
        return _to_registers(_reorder(struct.pack(">f", number), order))
    if isinstance(value, str):
        raise EncodeError(f"point {point.name!r} needs a number, got {value!r}")
    raw = unscaled(point, value)
    low, high = _RAW_RANGE[kind]
    if not low <= raw <= high:
        raise EncodeError(
            f"point {point.name!r}: {value!r} is outside the {kind} range "
            f"({scaled(point, low)}..{scaled(point, high)})"
        )
    return _to_registers(_reorder(struct.pack(_STRUCT[kind], raw), order))


def decode(point: Point, registers: Sequence[int], order: WordOrder) -> Value:
    """The value `registers` hold at `point` (exactly ``point.count`` of them)."""
    if len(registers) != point.count:
        raise LocalProtocolError(
            f"point {point.name!r} spans {point.count} registers, got {len(registers)}"
        )
    kind = point.type
    if kind is DataType.BOOL:
        return bool(registers[0])
    data = _from_registers(registers)
    if kind is DataType.STRING:
        text = _reorder_string(data, order).decode("ascii", errors="replace")
        return text.rstrip("\0 ")
    if kind is DataType.F32:
        number: float = struct.unpack(">f", _reorder(data, order))[0]
        if point.scale == 1 or not math.isfinite(number):
            return number
        return number * point.scale
    raw: int = struct.unpack(_STRUCT[kind], _reorder(data, order))[0]
    return scaled(point, raw)


def _reorder_string(data: bytes, order: WordOrder) -> bytes:
    """Strings keep their register order; byte-swapped orders swap each register's bytes."""
    if order in (WordOrder.BADC, WordOrder.DCBA):
        return b"".join(data[i : i + 2][::-1] for i in range(0, len(data), 2))
    return data
