"""A strict decoder for the CBOR subset (RFC 8949) that payloads and envelopes use.

Encoding uses ``cbor2.dumps(..., canonical=True)``; decoding does not use ``cbor2.loads``,
because for bytes from a peer it is too lenient: it ignores trailing bytes after the first
item, keeps the last of duplicate map keys (and treats ``1`` and ``1.0`` as one key), turns
semantic tags into Python objects (bignums, dates, and shared references that can build cyclic
structures), and raises several exception types. This decoder accepts exactly:

* one data item and nothing after it;
* unsigned and negative integers (major types 0 and 1), byte strings, UTF-8 text strings,
  arrays and maps, all with **definite** lengths; indefinite lengths are rejected;
* heads (integers, lengths, tag numbers) in their shortest form (RFC 8949 section 4.2.1), so
  that two equal keys always have equal bytes;
* ``false``, ``true``, ``null`` and half, single and double precision floats (any width);
  ``undefined`` and other simple values are rejected;
* map keys that are integers or text strings, each at most once;
* at most one tag, on the outermost item, and only one the caller allows (`Tagged`);
* at most `max_depth` nested arrays and maps.

Anything else raises `MalformedMessage`; no other exception escapes.

Speed: what honest encoders send is canonical (``cbor2.dumps(..., canonical=True)``), so
`loads` first lets cbor2's C decoder try and keeps its answer only when re-encoding it
canonically gives back the very same bytes and the value holds nothing the rules above
reject (`_canonical_fast` says why that is the strict answer); everything else, including
every error, goes through the strict decoder (`strict_loads`). A differential property test
(`tests/protocols/test_strict_cbor_fast.py`) holds the two paths to the same answers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NoReturn, TypeAlias

import cbor2

from protocols.errors import MalformedMessage

CborKey: TypeAlias = int | str
CborValue: TypeAlias = (
    "bool | int | float | str | bytes | list[CborValue] | dict[CborKey, CborValue] | Tagged | None"
)

DEFAULT_MAX_DEPTH = 16
"""Default limit on nested arrays and maps."""

_SHORTEST = {1: 24, 2: 0x100, 4: 0x1_0000, 8: 0x1_0000_0000}
_FLOAT = {2: ">e", 4: ">f", 8: ">d"}


@dataclass(frozen=True, slots=True)
class Tagged:
    """A tagged item (only ever the outermost one, and only an allowed tag)."""

    tag: int
    value: CborValue


class _Decoder:
    __slots__ = ("_data", "_max_depth", "_pos", "_tags")

    def __init__(self, data: bytes, max_depth: int, tags: frozenset[int]) -> None:
        self._data = data
        self._pos = 0
        self._max_depth = max_depth
        self._tags = tags

    def fail(self, problem: str) -> NoReturn:
        raise MalformedMessage(f"invalid CBOR at byte {self._pos}: {problem}")

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, size: int) -> bytes:
        if size > self.remaining():
            self.fail("truncated")
        chunk = self._data[self._pos : self._pos + size]
        self._pos += size
        return chunk

    def head(self) -> tuple[int, int, int]:
        """Major type, additional information and argument of the next head."""
        initial = self.take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info, info
        if info > 27:
            self.fail("indefinite length or reserved additional information")
        size = 1 << (info - 24)
        argument = int.from_bytes(self.take(size), "big")
        if major != 7 and argument < _SHORTEST[size]:
            self.fail("integer, length or tag not in shortest form")
        return major, info, argument

    def item(self, depth: int) -> CborValue:
        start = self._pos
        major, info, argument = self.head()
        if major == 0:
            return argument
        if major == 1:
            return -1 - argument
        if major == 2:
            return self.take(argument)
        if major == 3:
            try:
                return self.take(argument).decode("utf-8")
            except UnicodeDecodeError:
                self.fail("text string is not valid UTF-8")
        if major in (4, 5):
            if depth >= self._max_depth:
                self.fail(f"nested deeper than {self._max_depth}")
            return self.array(argument, depth + 1) if major == 4 else self.map(argument, depth + 1)
        if major == 6:
            if start != 0 or argument not in self._tags:
                self.fail(f"tag {argument} not allowed here")
            return Tagged(argument, self.item(depth))
        return self.simple(info, argument)

    def array(self, length: int, depth: int) -> list[CborValue]:
        if length > self.remaining():
            self.fail("array longer than the remaining bytes")
        return [self.item(depth) for _ in range(length)]

    def map(self, length: int, depth: int) -> dict[CborKey, CborValue]:
        if 2 * length > self.remaining():
            self.fail("map longer than the remaining bytes")
        result: dict[CborKey, CborValue] = {}
        for _ in range(length):
            key = self.item(depth)
            if isinstance(key, bool) or not isinstance(key, int | str):
                self.fail("map key must be an integer or a text string")
            if key in result:
                self.fail(f"duplicate map key {key!r}")
            result[key] = self.item(depth)
        return result

    def simple(self, info: int, argument: int) -> CborValue:
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        if info in (25, 26, 27):
            size = 1 << (info - 24)
            value: float = struct.unpack(_FLOAT[size], argument.to_bytes(size, "big"))[0]
            return value
        self.fail(f"simple value {argument} not allowed")


def loads(
    data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, tags: frozenset[int] = frozenset()
) -> CborValue:
    """Decode exactly one strict CBOR item from `data`; raise `MalformedMessage` otherwise.

    Canonical input (what every encoder of the contract sends) takes a fast path: cbor2's C
    decoder, accepted only if `_canonical_fast` proves the strict decoder would return the
    same value; anything else is decoded by the strict decoder, which decides."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"CBOR input must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not tags and FAST_MIN_BYTES <= len(data) <= FAST_MAX_BYTES:
        fast = _canonical_fast(data, max_depth)
        if fast is not _NO:
            return fast  # type: ignore[return-value]
    return strict_loads(data, max_depth=max_depth, tags=tags)


_NO = object()
_INT_MIN, _INT_MAX = -(2**64), 2**64 - 1
FAST_MIN_BYTES, FAST_MAX_BYTES = 64, 1 << 20
"""Only untagged inputs of these sizes take the fast path: below, and for tagged items (COSE
envelopes: four items, one a long byte string), the strict decoder is the faster; above,
it bounds lengths before allocating."""


def _canonical_fast(data: bytes, max_depth: int) -> object:
    """The value of `data` if it is the canonical encoding of a value made only of what
    the strict decoder accepts (untagged); `_NO` otherwise (including any doubt).

    Why this is the strict decoder's answer: canonical encoding (RFC 8949 section 4.2) has
    shortest heads, definite lengths and one encoding per value; if re-encoding the decoded
    value gives back exactly `data`, then `data` holds one item, no trailing bytes, no
    duplicate or merged keys (they would not re-encode), no tags cbor2 turned into other
    values (they would not re-encode either); `_allowed` then rejects every type the strict
    decoder rejects (tags, simple values, sets, dates, bignums beyond 64 bits, keys other
    than integers and text, nesting deeper than `max_depth`)."""
    try:
        value = cbor2.loads(data)
        if cbor2.dumps(value, canonical=True) != data:
            return _NO
    except Exception:  # any doubt: the strict decoder decides (and names the problem)
        return _NO
    return value if _allowed(value, 0, max_depth) else _NO


_LEAVES = frozenset({type(None), bool, float, str, bytes})


def _allowed(value: object, depth: int, max_depth: int) -> bool:
    """Whether `value` (at `depth`) holds only what the strict decoder accepts."""
    stack = [(value, depth)]
    pop, push = stack.pop, stack.append
    while stack:
        item, level = pop()
        kind = type(item)
        if kind in _LEAVES:
            continue
        if kind is int:
            if not _INT_MIN <= item <= _INT_MAX:  # type: ignore[operator]
                return False
        elif kind is list:
            if level >= max_depth:
                return False
            for child in item:  # type: ignore[attr-defined]
                kind = type(child)
                if kind in _LEAVES or (kind is int and _INT_MIN <= child <= _INT_MAX):
                    continue
                push((child, level + 1))
        elif kind is dict:
            if level >= max_depth:
                return False
            for key, child in item.items():  # type: ignore[attr-defined]
                if not (type(key) is str or (type(key) is int and _INT_MIN <= key <= _INT_MAX)):
                    return False
                kind = type(child)
                if kind in _LEAVES or (kind is int and _INT_MIN <= child <= _INT_MAX):
                    continue
                push((child, level + 1))
        else:
            return False
    return True


def strict_loads(
    data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, tags: frozenset[int] = frozenset()
) -> CborValue:
    """The strict decoder alone (`loads` without its fast path)."""
    decoder = _Decoder(bytes(data), max_depth, tags)
    value = decoder.item(0)
    if decoder.remaining():
        decoder.fail(f"{decoder.remaining()} trailing bytes after the data item")
    return value
