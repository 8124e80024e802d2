"""Value codecs: golden vectors, round trips in every word order, and what encode refuses."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocols.codecs import Value, decode, encode
from protocols.errors import EncodeError, LocalProtocolError
from protocols.registers import DataType, Point, RegisterMap, Table, WordOrder

VECTORS_FILE = Path(__file__).parents[1] / "vectors" / "codecs.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text())["vectors"]
ORDERS = list(WordOrder)
NUMERIC = [DataType.U16, DataType.S16, DataType.U32, DataType.S32, DataType.F32]
INTEGER_RANGE = {
    DataType.U16: (0, 0xFFFF),
    DataType.S16: (-0x8000, 0x7FFF),
    DataType.U32: (0, 0xFFFF_FFFF),
    DataType.S32: (-0x8000_0000, 0x7FFF_FFFF),
}
# Scales controllers use: tenths, hundredths, thousandths, and some that are not 10^-n.
SCALES = [0.1, 0.01, 0.001, 0.5, 0.25, 0.05, 2.5, 10.0, 1e-05]


def make_point(kind: DataType, *, scale: float = 1.0, length: int = 0) -> Point:
    table = Table.COIL if kind is DataType.BOOL else Table.HOLDING_REGISTER
    return Point("value", table, 0, kind, scale=scale, length=length)


def vector_point(vector: dict[str, Any]) -> Point:
    # Through from_dict, as a user profile would define the point.
    return RegisterMap.from_dict(
        {"id": "vectors", "version": 1, "points": [vector["point"]]}
    ).points[0]


def json_value(vector: dict[str, Any], key: str = "value") -> Value:
    value = vector[key]
    if vector["point"]["type"] == "f32" and isinstance(value, str):
        return float(value)  # "nan", "inf", "-inf"
    assert isinstance(value, bool | int | float | str)
    return value


def same(actual: Value, expected: Value) -> bool:
    """Equal, with NaN equal to NaN and 0.0 distinct from -0.0."""
    if isinstance(actual, float) and isinstance(expected, float):
        if math.isnan(actual) or math.isnan(expected):
            return math.isnan(actual) and math.isnan(expected)
        return actual == expected and math.copysign(1, actual) == math.copysign(1, expected)
    return actual == expected


def vector_id(vector: dict[str, Any]) -> str:
    return str(vector["id"])


# -- golden vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS if v["direction"] != "decode"], ids=vector_id
)
def test_encode_matches_golden_vector(vector: dict[str, Any]) -> None:
    registers = encode(vector_point(vector), json_value(vector), WordOrder(vector["order"]))
    assert [f"0x{r:04X}" for r in registers] == vector["registers"]


@pytest.mark.parametrize("vector", VECTORS, ids=vector_id)
def test_decode_matches_golden_vector(vector: dict[str, Any]) -> None:
    registers = [int(r, 16) for r in vector["registers"]]
    expected = json_value(vector, "decoded" if vector["direction"] == "encode" else "value")
    decoded = decode(vector_point(vector), registers, WordOrder(vector["order"]))
    assert same(decoded, expected), (decoded, expected)
    scaled = vector["point"].get("scale", 1) != 1
    kind = {"bool": bool, "string": str, "f32": float}.get(vector["point"]["type"])
    assert type(decoded) is (kind or (float if scaled else int))


def test_vectors_cover_every_type_in_every_order() -> None:
    pairs = {(v["point"]["type"], v["order"]) for v in VECTORS}
    assert pairs == {(t.value, o.value) for t in DataType for o in WordOrder}
    assert len({v["id"] for v in VECTORS}) == len(VECTORS)
    for vector in VECTORS:  # registers are 16-bit words and as many as the point needs
        point = vector_point(vector)
        assert len(vector["registers"]) == point.count
        assert all(0 <= int(r, 16) <= 0xFFFF for r in vector["registers"])


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (WordOrder.ABCD, (0x1234, 0x5678)),
        (WordOrder.CDAB, (0x5678, 0x1234)),
        (WordOrder.BADC, (0x3412, 0x7856)),
        (WordOrder.DCBA, (0x7856, 0x3412)),
    ],
)
def test_word_order_convention(order: WordOrder, expected: tuple[int, int]) -> None:
    # Written out here too, so a regenerated JSON cannot quietly move the convention.
    assert encode(make_point(DataType.U32), 0x12345678, order) == expected
    swapped = order in (WordOrder.BADC, WordOrder.DCBA)
    assert encode(make_point(DataType.U16), 0x1234, order) == ((0x3412,) if swapped else (0x1234,))
    text = encode(make_point(DataType.STRING, length=2), "ABC", order)
    assert text == ((0x4241, 0x0043) if swapped else (0x4142, 0x4300))


# -- round trips -------------------------------------------------------------------------------

ascii_text = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=16)


@st.composite
def point_and_value(draw: st.DrawFn) -> tuple[Point, Value]:
    kind = draw(st.sampled_from(DataType))
    if kind is DataType.BOOL:
        return make_point(kind), draw(st.booleans())
    if kind is DataType.STRING:
        length = draw(st.integers(1, 8))
        text = draw(ascii_text.filter(lambda s: len(s) <= 2 * length))
        return make_point(kind, length=length), text.rstrip("\0 ")  # padding is not kept
    if kind is DataType.F32:
        return make_point(kind), draw(st.floats(width=32))
    low, high = INTEGER_RANGE[kind]
    raw = draw(st.integers(low, high))
    scale = draw(st.sampled_from([1.0, *SCALES]))
    if scale == 1:
        return make_point(kind), raw
    # The exact decimal value of raw steps of `scale`, as a person would write it.
    return make_point(kind, scale=scale), float(Decimal(raw) * Decimal(repr(scale)))


@settings(max_examples=400)
@given(point_and_value(), st.sampled_from(ORDERS))
@example((make_point(DataType.S16, scale=0.1), 21.5), WordOrder.ABCD)
@example((make_point(DataType.S16, scale=0.1), -12.3), WordOrder.DCBA)
@example((make_point(DataType.U16, scale=0.01), 1.52), WordOrder.BADC)
@example((make_point(DataType.U16, scale=0.25), 0.25), WordOrder.ABCD)
@example((make_point(DataType.F32), math.nan), WordOrder.CDAB)
def test_value_round_trips(case: tuple[Point, Value], order: WordOrder) -> None:
    point, value = case
    registers = encode(point, value, order)
    assert len(registers) == point.count
    assert all(0 <= r <= 0xFFFF for r in registers)
    # Exactly the value: scaled points come back as 21.5, never 21.500000000000004.
    assert same(decode(point, registers, order), value)


@settings(max_examples=300)
@given(
    st.sampled_from([DataType.U16, DataType.S16, DataType.U32, DataType.S32, DataType.F32]),
    st.sampled_from([1.0, *SCALES]),
    st.sampled_from(ORDERS),
    st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2),
)
def test_registers_round_trip(
    kind: DataType, scale: float, order: WordOrder, words: list[int]
) -> None:
    point = make_point(kind, scale=1.0 if kind is DataType.F32 else scale)
    registers = tuple(words[: point.count])
    value = decode(point, registers, order)
    if isinstance(value, float) and math.isnan(value):
        # Any NaN pattern decodes to NaN and encodes back to a NaN (payloads may be quietened).
        assert math.isnan(decode(point, encode(point, value, order), order))  # type: ignore[arg-type]
    else:
        assert encode(point, value, order) == registers


@settings(max_examples=100)
@given(ascii_text, st.integers(1, 8), st.sampled_from(ORDERS))
def test_string_registers_keep_their_order(text: str, length: int, order: WordOrder) -> None:
    text = text[: 2 * length]
    registers = encode(make_point(DataType.STRING, length=length), text, order)
    if order in (WordOrder.BADC, WordOrder.DCBA):
        registers = tuple((r & 0xFF) << 8 | r >> 8 for r in registers)
    assert b"".join(r.to_bytes(2, "big") for r in registers) == text.encode().ljust(
        2 * length, b"\0"
    )


@settings(max_examples=300)
@given(
    st.sampled_from(DataType),
    st.sampled_from([1.0, *SCALES]),
    st.sampled_from(ORDERS),
    st.integers(1, 8),
    st.data(),
)
def test_decode_never_raises_on_16_bit_words(
    kind: DataType, scale: float, order: WordOrder, length: int, data: st.DataObject
) -> None:
    if kind in (DataType.BOOL, DataType.STRING):
        scale = 1.0
    point = make_point(kind, scale=scale, length=length if kind is DataType.STRING else 0)
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=point.count, max_size=point.count))
    value = decode(point, words, order)
    expected_type = {DataType.BOOL: bool, DataType.STRING: str, DataType.F32: float}
    assert isinstance(value, expected_type.get(kind, int | float))


def test_decode_types() -> None:
    assert decode(make_point(DataType.U16), [7], WordOrder.ABCD) == 7
    assert type(decode(make_point(DataType.U16), [7], WordOrder.ABCD)) is int
    assert type(decode(make_point(DataType.S32), [0xFFFF, 0xFFFF], WordOrder.ABCD)) is int
    assert decode(make_point(DataType.BOOL), [2], WordOrder.ABCD) is True
    assert (
        decode(make_point(DataType.STRING, length=2), [0xC3A9, 0], WordOrder.ABCD) == "\ufffd\ufffd"
    )


def test_decode_rejects_the_wrong_number_of_registers() -> None:
    with pytest.raises(LocalProtocolError, match="spans 2 registers, got 1"):
        decode(make_point(DataType.U32), [1], WordOrder.ABCD)
    with pytest.raises(LocalProtocolError, match="16-bit"):
        decode(make_point(DataType.U16), [0x10000], WordOrder.ABCD)


# -- what encode refuses -----------------------------------------------------------------------


OUT_OF_RANGE = [
    (DataType.U16, 1.0, -1),
    (DataType.U16, 1.0, 0x10000),
    (DataType.S16, 1.0, -32769),
    (DataType.S16, 1.0, 32768),
    (DataType.U32, 1.0, -1),
    (DataType.U32, 1.0, 2**32),
    (DataType.S32, 1.0, -(2**31) - 1),
    (DataType.S32, 1.0, 2**31),
    (DataType.S16, 0.1, 3276.8),
    (DataType.S16, 0.1, -3276.9),
    (DataType.U16, 0.01, 655.36),
    (DataType.U16, 0.01, -0.01),
    (DataType.U16, 1.0, 10**400),  # too large for a float: still an EncodeError
    (DataType.U16, 0.001, 1e308),  # value / scale overflows to infinity
    (DataType.F32, 1.0, 3.5e38),
    (DataType.F32, 1.0, -3.5e38),
    (DataType.F32, 1.0, 10**400),
    (DataType.F32, 0.001, 1e308),  # finite, but infinite once scaled
]


@pytest.mark.parametrize(
    ("kind", "scale", "value"),
    OUT_OF_RANGE,
    ids=[f"{k}-scale{s}-{v!r:.12}" for k, s, v in OUT_OF_RANGE],
)
def test_encode_rejects_out_of_range(kind: DataType, scale: float, value: Value) -> None:
    point = make_point(kind, scale=scale)
    for order in ORDERS:
        with pytest.raises(EncodeError):
            encode(point, value, order)


@pytest.mark.parametrize("kind", [DataType.U16, DataType.S16, DataType.U32, DataType.S32])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_integers_reject_non_finite(kind: DataType, value: float) -> None:
    with pytest.raises(EncodeError, match="finite"):
        encode(make_point(kind, scale=0.1), value, WordOrder.ABCD)


@pytest.mark.parametrize("kind", NUMERIC)
@pytest.mark.parametrize("value", [True, False, "21.5", "1", None, b"\x01", [1], 1j])
def test_numbers_reject_wrong_types(kind: DataType, value: Any) -> None:
    # A bool is not a number here, even though Python says bool is an int.
    with pytest.raises(EncodeError, match="number"):
        encode(make_point(kind), value, WordOrder.ABCD)


@pytest.mark.parametrize("value", [2, -1, 1.0, 0.0, "true", "1", None])
def test_bool_rejects_anything_but_a_boolean(value: Any) -> None:
    with pytest.raises(EncodeError, match="boolean"):
        encode(make_point(DataType.BOOL), value, WordOrder.ABCD)
    assert encode(make_point(DataType.BOOL), 1, WordOrder.ABCD) == (1,)  # 0/1 ints are fine


@pytest.mark.parametrize("value", [12, 1.5, None, b"AB", True])
def test_string_rejects_non_text(value: Any) -> None:
    with pytest.raises(EncodeError, match="string"):
        encode(make_point(DataType.STRING, length=2), value, WordOrder.ABCD)


@pytest.mark.parametrize("text", ["caf\u00e9", "\u03a9", "\U0001f525", "\u00a0"])
def test_string_rejects_non_ascii(text: str) -> None:
    with pytest.raises(EncodeError, match="ASCII"):
        encode(make_point(DataType.STRING, length=4), text, WordOrder.ABCD)


@pytest.mark.parametrize("order", ORDERS)
def test_string_rejects_too_long(order: WordOrder) -> None:
    point = make_point(DataType.STRING, length=2)
    assert decode(point, encode(point, "ABCD", order), order) == "ABCD"  # exactly full
    with pytest.raises(EncodeError, match="holds 4 characters, got 5"):
        encode(point, "ABCDE", order)


def test_encode_error_is_a_local_protocol_error() -> None:
    with pytest.raises(EncodeError) as caught:
        encode(make_point(DataType.U16), -1, WordOrder.ABCD)
    assert isinstance(caught.value, LocalProtocolError)
    assert isinstance(caught.value, ValueError)
    assert caught.value.reason == "encode_error"
    assert "'value'" in str(caught.value)  # names the point
