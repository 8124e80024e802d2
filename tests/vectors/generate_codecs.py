"""Regenerate ``codecs.json``: golden register vectors for every point type in every word order.

Run on purpose, by a human, after a deliberate change to the register conventions::

    .venv/bin/python tests/vectors/generate_codecs.py

The tests only read the JSON. The expected registers are computed here *independently of*
``protocols.codecs`` (this script does not import ``protocols``):

* numbers are packed big-endian with `struct` and then moved by byte permutations written out
  by hand below (``ABCD`` -> ``CDAB`` etc.), scaled values through exact `Decimal` arithmetic;
* every 16- and 32-bit vector is cross-checked against pymodbus's own
  ``convert_to_registers`` / ``convert_from_registers`` (``word_order="big"`` is ``ABCD``,
  ``"little"`` is ``CDAB``; ``BADC`` / ``DCBA`` are those with each register's bytes swapped),
  and strings in ``ABCD`` against pymodbus's ``DATATYPE.STRING``.

Conventions pinned here: ``u32 0x12345678`` is ``ABCD [1234 5678]``, ``CDAB [5678 1234]``,
``BADC [3412 7856]``, ``DCBA [7856 3412]``; 16-bit values are byte-swapped in ``BADC`` and
``DCBA``; strings keep their register order, are NUL-padded to the point's length, and are
byte-swapped per register in ``BADC`` / ``DCBA``. ``f32`` NaN encodes as the quiet NaN
``7FC00000`` and any NaN pattern decodes to NaN; infinities are values like any other.

Each vector: ``id``, ``point`` (the `RegisterMap.from_dict` form of one point), ``order``,
``value`` (``"nan"``, ``"inf"``, ``"-inf"`` for those floats), ``registers`` (hex words), and
``direction``: ``both`` (encode gives the registers, decode gives the value back), ``encode``
(decode gives ``decoded`` instead, e.g. ``-0.1`` comes back as the nearest 32-bit float) or
``decode`` (only decoding is checked: stripped padding, other NaN payloads, non-ASCII bytes).
"""

from __future__ import annotations

import json
import math
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pymodbus.client.mixin import ModbusClientMixin

OUT = Path(__file__).with_name("codecs.json")
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")

# Where each byte of the big-endian value goes, written out by hand: position i of the
# registers' byte string holds byte PERMUTATION[order][i] of the big-endian packing.
PERMUTATION_32 = {
    "ABCD": (0, 1, 2, 3),
    "CDAB": (2, 3, 0, 1),
    "BADC": (1, 0, 3, 2),
    "DCBA": (3, 2, 1, 0),
}
PERMUTATION_16 = {"ABCD": (0, 1), "CDAB": (0, 1), "BADC": (1, 0), "DCBA": (1, 0)}
STRUCT = {"u16": ">H", "s16": ">h", "u32": ">I", "s32": ">i", "f32": ">f"}

DT = ModbusClientMixin.DATATYPE
PYMODBUS_TYPE = {
    "u16": DT.UINT16,
    "s16": DT.INT16,
    "u32": DT.UINT32,
    "s32": DT.INT32,
    "f32": DT.FLOAT32,
}


def words(data: bytes) -> list[int]:
    return [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]


def swap_bytes(registers: list[int]) -> list[int]:
    return [(r & 0xFF) << 8 | r >> 8 for r in registers]


def permute(data: bytes, order: str) -> bytes:
    table = PERMUTATION_32 if len(data) == 4 else PERMUTATION_16
    return bytes(data[i] for i in table[order])


def raw_of(kind: str, value: Any, scale: str | None) -> Any:
    """The integer (or float) a point stores, by exact decimal arithmetic."""
    if kind == "f32":
        number = float(value)
        return number if scale is None else number / float(scale)
    if scale is None:
        return value
    raw = Decimal(repr(value)) / Decimal(scale)
    assert raw == raw.to_integral_value(), (value, scale)
    return int(raw)


def pymodbus_word_order(order: str) -> Literal["big", "little"]:
    """pymodbus knows word order only; BADC and DCBA swap bytes on top of big and little."""
    return "little" if order in ("CDAB", "DCBA") else "big"


def pymodbus_registers(kind: str, raw: Any, order: str) -> list[int]:
    word_order = pymodbus_word_order(order)
    registers = list(ModbusClientMixin.convert_to_registers(raw, PYMODBUS_TYPE[kind], word_order))
    return swap_bytes(registers) if order in ("BADC", "DCBA") else registers


def pymodbus_decode(kind: str, registers: list[int], order: str) -> Any:
    word_order = pymodbus_word_order(order)
    if order in ("BADC", "DCBA"):
        registers = swap_bytes(registers)
    return ModbusClientMixin.convert_from_registers(registers, PYMODBUS_TYPE[kind], word_order)


def number_vector(kind: str, value: Any, order: str, scale: str | None) -> list[int]:
    raw = raw_of(kind, value, scale)
    registers = words(permute(struct.pack(STRUCT[kind], raw), order))
    cross = pymodbus_registers(kind, raw, order)
    assert registers == cross, (kind, value, order, registers, cross)
    back = pymodbus_decode(kind, registers, order)
    stored = f32_nearest(raw) if kind == "f32" else raw
    assert back == stored or (math.isnan(back) and math.isnan(raw)), (kind, value, order, back)
    return registers


def string_vector(text: str, length: int, order: str) -> list[int]:
    data = text.encode("ascii").ljust(2 * length, b"\0")
    registers = words(data)
    padded = list(ModbusClientMixin.convert_to_registers(text, DT.STRING, "big", "ascii"))
    padded += [0] * (length - len(padded))
    assert registers == padded, (text, registers, padded)
    return swap_bytes(registers) if order in ("BADC", "DCBA") else registers


def point(kind: str, scale: str | None = None, length: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": "value",
        "table": "discrete_input" if kind == "bool" else "holding_register",
        "address": 0,
        "type": kind,
    }
    if scale is not None:
        out["scale"] = float(scale)
    if length:
        out["length"] = length
    return out


def json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "nan", "inf", "-inf"
    return value


def f32_nearest(value: float) -> float:
    result: float = struct.unpack(">f", struct.pack(">f", value))[0]
    return result


def vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    value: float  # ints, then floats

    def add(
        ident: str,
        pt: dict[str, Any],
        value: Any,
        registers: dict[str, list[int]],
        direction: str = "both",
        decoded: Any = None,
    ) -> None:
        for order in ORDERS:
            vector: dict[str, Any] = {
                "id": f"{ident}/{order}",
                "point": pt,
                "order": order,
                "value": json_value(value),
                "registers": [f"0x{r:04X}" for r in registers[order]],
                "direction": direction,
            }
            if direction == "encode":
                vector["decoded"] = json_value(decoded)
            out.append(vector)

    for flag in (False, True):
        add(f"bool-{str(flag).lower()}", point("bool"), flag, {o: [int(flag)] for o in ORDERS})

    integers = {
        "u16": [0, 1, 0x1234, 0x8000, 0xFFFF],
        "s16": [0, 1, -1, 0x1234, -32768, 32767],
        "u32": [0, 1, 0xFFFF, 0x10000, 0x12345678, 0xFFFFFFFF],
        "s32": [0, -1, 0x12345678, -0x12345678, -123456789, -(2**31), 2**31 - 1],
    }
    for kind, values in integers.items():
        for value in values:
            regs = {o: number_vector(kind, value, o, None) for o in ORDERS}
            add(f"{kind}-{value}", point(kind), value, regs)

    # (type, scale, value): temperatures in tenths, pressure in hundredths, odd scales.
    scaled = [
        ("s16", "0.1", 21.5),
        ("s16", "0.1", -12.3),
        ("s16", "0.1", 0.0),
        ("s16", "0.1", -0.1),
        ("s16", "0.1", 3276.7),
        ("s16", "0.1", -3276.8),
        ("u16", "0.01", 1.52),
        ("u16", "0.01", 655.35),  # 0xFFFF: the reference map's pressure-sensor fault value
        ("u16", "0.1", 6553.5),
        ("u16", "0.25", 0.25),
        ("u16", "0.25", 16383.75),
        ("u16", "2.5", 7.5),
        ("u16", "10", 650),
        ("u32", "0.1", 429496729.5),
        ("u32", "0.001", 305419.896),
        ("s32", "0.01", -21474836.48),
        ("s32", "0.1", -12.3),
    ]
    for kind, scale, value in scaled:
        regs = {o: number_vector(kind, value, o, scale) for o in ORDERS}
        add(f"{kind}-scale{scale}-{value}", point(kind, scale), value, regs)

    # Values off the scale grid round to the nearest step.
    for kind, scale, value, decoded in [("s16", "0.1", 21.54, 21.5), ("u16", "0.01", 1.526, 1.53)]:
        regs = {o: number_vector(kind, decoded, o, scale) for o in ORDERS}
        add(
            f"{kind}-scale{scale}-{value}-rounds",
            point(kind, scale),
            value,
            regs,
            "encode",
            decoded,
        )

    floats = [0.0, -0.0, 1.5, -2.25, 123.5, 3.4028234663852886e38, 1.401298464324817e-45]
    floats += [math.inf, -math.inf]
    for number in floats:
        regs = {o: number_vector("f32", number, o, None) for o in ORDERS}
        add(f"f32-{number!r}", point("f32"), number, regs)
    # Not representable in 32 bits: encode rounds to the nearest float32.
    for value in (-0.1, 3.4e38, 21.3):
        regs = {o: number_vector("f32", value, o, None) for o in ORDERS}
        add(f"f32-{value!r}-nearest", point("f32"), value, regs, "encode", f32_nearest(value))
    regs = {o: number_vector("f32", math.nan, o, None) for o in ORDERS}
    add("f32-nan", point("f32"), math.nan, regs, "encode", math.nan)
    assert regs["ABCD"] == [0x7FC0, 0x0000], regs
    # Other NaN payloads and signs still decode as NaN.
    for pattern in (0x7FC00001, 0xFFC00000, 0x7F800001):
        regs = {o: words(permute(pattern.to_bytes(4, "big"), o)) for o in ORDERS}
        add(f"f32-nan-{pattern:08x}", point("f32"), math.nan, regs, "decode")
    for scale, value in (("0.1", 21.5), ("0.01", -1.25)):
        regs = {o: number_vector("f32", value, o, scale) for o in ORDERS}
        add(f"f32-scale{scale}-{value}", point("f32", scale), value, regs)

    strings = [
        (4, "ABCDEFGH"),  # full length
        (4, "BT-1"),  # shorter, even
        (4, "ABC"),  # shorter, odd: the last register is half NUL
        (4, ""),  # empty: all NUL
        (1, "Z"),
        (8, "BT0123456789ABCD"),  # a full reference-map serial number
        (4, "1.02"),
    ]
    for length, text in strings:
        regs = {o: string_vector(text, length, o) for o in ORDERS}
        add(f"string{length}-{text!r}", point("string", length=length), text, regs)
    # Space padding (as some controllers send) and stray NULs are stripped on decode.
    raw_strings = [(2, b"AB  ", "AB"), (2, b"AB\0\0", "AB"), (3, b"A B \0\0", "A B")]
    for length, data, text in raw_strings:
        base = words(data)
        regs = {o: swap_bytes(base) if o in ("BADC", "DCBA") else base for o in ORDERS}
        add(f"string{length}-{data!r}-strips", point("string", length=length), text, regs, "decode")
    # Bytes that are not ASCII decode to U+FFFD, never an error.
    base = words(b"A\xe9\xffB")
    regs = {o: swap_bytes(base) if o in ("BADC", "DCBA") else base for o in ORDERS}
    add("string2-non-ascii", point("string", length=2), "A\ufffd\ufffdB", regs, "decode")
    return out


def main() -> None:
    lines = [json.dumps(v, separators=(", ", ": ")) for v in vectors()]
    header = {
        "about": "Golden Modbus register vectors; regenerate with generate_codecs.py.",
        "count": len(lines),
    }
    body = ",\n    ".join(lines)
    head = json.dumps(header)[1:-1]
    OUT.write_text(f'{{{head},\n  "vectors": [\n    {body}\n  ]\n}}\n')
    json.loads(OUT.read_text())
    print(f"wrote {len(lines)} vectors to {OUT}")


if __name__ == "__main__":
    main()
