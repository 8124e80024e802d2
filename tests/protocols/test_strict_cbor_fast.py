"""The strict CBOR decoder's fast path (cbor2's C decoder, accepted only for canonical input
made of what the strict decoder accepts) answers exactly as the strict decoder alone, on
valid values, on their non-canonical spellings, on tags, and on random and mutated bytes."""

from __future__ import annotations

import math
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import strict_cbor
from protocols.errors import MalformedMessage

ints = st.integers(-(2**70), 2**70)  # beyond 64 bits too: bignum tags the strict one rejects
keys = st.integers(-(2**64), 2**64 - 1) | st.text(max_size=6)
leaves = (
    st.none() | st.booleans() | ints | st.floats() | st.text(max_size=8) | st.binary(max_size=8)
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and bool never equal to int."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, strict_cbor.Tagged):
        return a.tag == b.tag and same(a.value, b.value)
    return bool(a == b)


def outcome(decode: Any, data: bytes, **options: Any) -> tuple[str, Any]:
    try:
        return "value", decode(data, **options)
    except MalformedMessage as exc:
        return "error", str(exc)


def agree(data: bytes, **options: Any) -> None:
    fast = outcome(strict_cbor.loads, data, **options)
    strict = outcome(strict_cbor.strict_loads, data, **options)
    assert fast[0] == strict[0], (data.hex(), fast, strict)
    if fast[0] == "value":
        assert same(fast[1], strict[1]), (data.hex(), fast, strict)
    else:
        assert fast[1] == strict[1], "the strict decoder names the problem"


@settings(max_examples=400)
@given(values, st.integers(0, 4), st.binary(min_size=64, max_size=64))
def test_canonical_values_decode_alike(value: Any, max_depth: int, padding: bytes) -> None:
    data = cbor2.dumps(value, canonical=True)
    agree(data, max_depth=max_depth)
    agree(cbor2.dumps([value, padding], canonical=True), max_depth=max_depth)  # fast-path size


@settings(max_examples=300)
@given(values)
def test_non_canonical_spellings_decode_alike(value: Any) -> None:
    agree(cbor2.dumps([value, bytes(64)]))  # floats in full width, keys in insertion order


@settings(max_examples=300)
@given(values, st.sampled_from([0, 1, 2, 3, 4, 18, 24, 28, 29, 258, 55799]), st.booleans())
def test_tags_decode_alike(value: Any, tag: int, allowed: bool) -> None:
    data = cbor2.dumps(cbor2.CBORTag(tag, value), canonical=True)
    agree(data, tags=frozenset({tag}) if allowed else frozenset())
    nested = cbor2.dumps([cbor2.CBORTag(tag, value)], canonical=True)
    agree(nested, tags=frozenset({tag}))


@settings(max_examples=500)
@given(values, st.data())
def test_mutated_bytes_decode_alike(value: Any, data: st.DataObject) -> None:
    encoded = bytearray(cbor2.dumps([value, bytes(64)], canonical=True))  # fast-path size
    for _ in range(data.draw(st.integers(1, 3))):
        if encoded and data.draw(st.booleans()):
            encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
        else:
            encoded += data.draw(st.binary(min_size=1, max_size=3))
    agree(bytes(encoded))


@settings(max_examples=500)
@given(st.binary(max_size=40), st.binary(min_size=64, max_size=80))
def test_random_bytes_decode_alike(data: bytes, tail: bytes) -> None:
    agree(data)
    agree(bytes.fromhex("82") + data + tail)  # an array around them, at fast-path size
    agree(bytes.fromhex("825840") + tail[:64] + data)


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("a201010102"),  # duplicate key
        bytes.fromhex("a2016161f93c0002"),  # keys 1 and 1.0 (a float key)
        bytes.fromhex("d9d9f701"),  # self-describe tag
        bytes.fromhex("c249010000000000000000"),  # bignum 2**64 (tag 2)
        bytes.fromhex("c1fb41d9b1e2cc000000"),  # epoch date (tag 1)
        bytes.fromhex("d81c81d81d00"),  # shared reference to itself
        bytes.fromhex("f7"),  # undefined
        bytes.fromhex("9f01ff"),  # indefinite array
        bytes.fromhex("0000"),  # trailing byte
        bytes.fromhex("a1f500"),  # a bool key
        bytes.fromhex("d9010283010203"),  # a set (tag 258)
    ],
)
def test_what_the_strict_decoder_rejects_the_fast_path_rejects(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        strict_cbor.strict_loads(data)
    agree(data)
    padded = bytes.fromhex("82") + data + bytes.fromhex("5840") + bytes(64)
    if data != bytes.fromhex("0000"):  # (inside an array the trailing byte is an item)
        with pytest.raises(MalformedMessage):
            strict_cbor.loads(padded)
    agree(padded)


@settings(max_examples=200)
@given(values.filter(lambda v: not isinstance(v, float) or not math.isnan(v)))
def test_canonical_input_takes_the_fast_path(value: Any) -> None:
    data = cbor2.dumps(value, canonical=True)
    try:
        strict_cbor.strict_loads(data)
    except MalformedMessage:
        return  # (a bignum beyond 64 bits)
    assert strict_cbor._canonical_fast(data, strict_cbor.DEFAULT_MAX_DEPTH) is not strict_cbor._NO
