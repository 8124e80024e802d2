"""Register maps as data: which Modbus table and address holds which point, and how to read it.

A `RegisterMap` is a validated, immutable description of one controller model. It is
serialisable (`to_dict` / `from_dict`) so gateways can load user profiles, and it has a
stable `digest()` so the gateway's `birth` message can tell the cloud exactly which map
produced its readings.

Invariants checked on construction:

* point names are unique and match ``[a-z][a-z0-9_]*``;
* every point fits in the 16-bit address space of its table;
* bit tables (coils, discrete inputs) hold only `bool` points, register tables never do;
* only coils and holding registers can be writable;
* if readable `blocks` are declared, every point lies wholly inside one block of its table.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar, cast

from protocols.errors import RegisterMapError

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
ADDRESS_SPACE = 65536


class Table(StrEnum):
    """The four Modbus data tables."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    INPUT_REGISTER = "input_register"
    HOLDING_REGISTER = "holding_register"

    @property
    def is_bit(self) -> bool:
        """Whether the table holds single bits rather than 16-bit registers."""
        return self in (Table.COIL, Table.DISCRETE_INPUT)

    @property
    def read_function(self) -> int:
        """The Modbus function code that reads this table."""
        return _READ_FUNCTION[self]


_READ_FUNCTION = {
    Table.COIL: 1,
    Table.DISCRETE_INPUT: 2,
    Table.HOLDING_REGISTER: 3,
    Table.INPUT_REGISTER: 4,
}


class DataType(StrEnum):
    """How a point's registers encode its value."""

    BOOL = "bool"
    U16 = "u16"
    S16 = "s16"
    U32 = "u32"
    S32 = "s32"
    F32 = "f32"
    STRING = "string"


class WordOrder(StrEnum):
    """Byte and word order of multi-byte values, named by where bytes A B C D of the
    big-endian value end up in the registers (``ABCD`` is Modbus's big-endian default)."""

    ABCD = "ABCD"  # big-endian words, big-endian bytes
    CDAB = "CDAB"  # word-swapped
    BADC = "BADC"  # byte-swapped within each register
    DCBA = "DCBA"  # little-endian


class Access(StrEnum):
    """Whether a point can be read, written, or both."""

    R = "r"
    W = "w"
    RW = "rw"

    @property
    def writable(self) -> bool:
        """Whether a master may write this point."""
        return self is not Access.R


_WIDTH = {
    DataType.BOOL: 1,
    DataType.U16: 1,
    DataType.S16: 1,
    DataType.U32: 2,
    DataType.S32: 2,
    DataType.F32: 2,
}


@dataclass(frozen=True, slots=True)
class Point:
    """One named value in a controller's register map."""

    name: str
    table: Table
    address: int
    type: DataType
    scale: float = 1.0
    unit: str = ""
    access: Access = Access.R
    description: str = ""
    length: int = 0
    """Registers occupied by a `STRING` point (two characters each); unused otherwise."""
    minimum: float | None = None
    """Lowest value a master may write (engineering units); `None` for no limit."""
    maximum: float | None = None
    """Highest value a master may write (engineering units); `None` for no limit."""
    labels: tuple[tuple[int, str], ...] = ()
    """Names of enumerated raw values, e.g. ``((7, "lockout"),)`` for a status register."""

    @property
    def count(self) -> int:
        """Registers (or bits) the point occupies."""
        if self.type is DataType.STRING:
            return self.length
        return _WIDTH[self.type]

    @property
    def end(self) -> int:
        """First address after the point."""
        return self.address + self.count

    def label(self, raw: int) -> str | None:
        """The name of an enumerated raw value, if the map gives one."""
        for value, name in self.labels:
            if value == raw:
                return name
        return None


@dataclass(frozen=True, slots=True)
class Block:
    """A range of addresses the controller answers for; reads may span gaps only inside one."""

    table: Table
    start: int
    count: int

    @property
    def end(self) -> int:
        """First address after the block."""
        return self.start + self.count

    def contains(self, table: Table, start: int, end: int) -> bool:
        """Whether ``[start, end)`` of `table` lies inside this block."""
        return table is self.table and self.start <= start and end <= self.end


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """A validated register map for one controller model."""

    id: str
    version: int
    word_order: WordOrder
    points: tuple[Point, ...]
    blocks: tuple[Block, ...] = ()
    description: str = ""
    _by_name: Mapping[str, Point] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Point] = {}
        for point in self.points:
            _validate_point(point)
            if point.name in by_name:
                raise RegisterMapError(f"register map {self.id!r}: duplicate point {point.name!r}")
            by_name[point.name] = point
        for block in self.blocks:
            if block.count < 1 or block.start < 0 or block.end > ADDRESS_SPACE:
                raise RegisterMapError(f"register map {self.id!r}: invalid block {block}")
        if self.blocks:
            for point in self.points:
                if not any(b.contains(point.table, point.address, point.end) for b in self.blocks):
                    raise RegisterMapError(
                        f"register map {self.id!r}: point {point.name!r} "
                        f"({point.table} {point.address}..{point.end - 1}) is outside every block"
                    )
        object.__setattr__(self, "_by_name", by_name)

    def point(self, name: str) -> Point:
        """The point called `name`."""
        try:
            return self._by_name[name]
        except KeyError:
            raise RegisterMapError(f"register map {self.id!r} has no point {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def select(self, names: Iterable[str]) -> tuple[Point, ...]:
        """The points called `names`, in map order."""
        wanted = set(names)
        missing = wanted - self._by_name.keys()
        if missing:
            raise RegisterMapError(f"register map {self.id!r} has no points {sorted(missing)}")
        return tuple(p for p in self.points if p.name in wanted)

    def readable(self) -> tuple[Point, ...]:
        """Every point a master can read (all but write-only ones), in map order."""
        return tuple(p for p in self.points if p.access is not Access.W)

    def to_dict(self) -> dict[str, Any]:
        """A JSON/TOML-friendly form, the inverse of `from_dict`."""
        return {
            "id": self.id,
            "version": self.version,
            "word_order": self.word_order.value,
            "description": self.description,
            "blocks": [
                {"table": b.table.value, "start": b.start, "count": b.count} for b in self.blocks
            ],
            "points": [_point_to_dict(p) for p in self.points],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegisterMap:
        """Build and validate a map from its `to_dict` form (e.g. a parsed user profile).

        Anything malformed (a missing or unknown key, a wrong type, an unknown enum value)
        raises `RegisterMapError` naming the entry and key, e.g. ``point #3 ('flow_temp'):``.
        """
        entry = _Entry(data, "register map", _MAP_KEYS)
        return cls(
            id=entry.text("id"),
            version=entry.integer("version"),
            word_order=entry.choice("word_order", WordOrder, WordOrder.ABCD),
            description=entry.text("description", ""),
            blocks=tuple(
                _block_from_dict(b, f"block #{i}") for i, b in enumerate(entry.array("blocks", ()))
            ),
            points=tuple(
                _point_from_dict(p, f"point #{i}") for i, p in enumerate(entry.array("points"))
            ),
        )

    def digest(self) -> str:
        """SHA-256 (hex) of the map's canonical JSON form; changes whenever the map does."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _validate_point(point: Point) -> None:
    where = f"point {point.name!r}"
    if not _NAME.fullmatch(point.name):
        raise RegisterMapError(f"{where}: name must match {_NAME.pattern}")
    if point.type is DataType.STRING and point.length < 1:
        raise RegisterMapError(f"{where}: a string needs a length of at least one register")
    if point.type is not DataType.STRING and point.length:
        raise RegisterMapError(f"{where}: only strings have a length")
    if point.address < 0 or point.end > ADDRESS_SPACE:
        raise RegisterMapError(f"{where}: address {point.address} outside 0..65535")
    if point.table.is_bit != (point.type is DataType.BOOL):
        raise RegisterMapError(f"{where}: {point.type} cannot live in the {point.table} table")
    if point.access.writable and point.table not in (Table.COIL, Table.HOLDING_REGISTER):
        raise RegisterMapError(f"{where}: {point.table} points are read-only")
    if point.scale == 0 or not math.isfinite(point.scale):
        raise RegisterMapError(f"{where}: scale must be a finite number other than zero")
    for limit in (point.minimum, point.maximum):
        if limit is not None and not math.isfinite(limit):
            raise RegisterMapError(f"{where}: write limits must be finite numbers")
    if point.minimum is not None and point.maximum is not None and point.minimum > point.maximum:
        raise RegisterMapError(f"{where}: minimum {point.minimum} exceeds maximum {point.maximum}")
    if point.scale != 1 and point.type in (DataType.BOOL, DataType.STRING):
        raise RegisterMapError(f"{where}: {point.type} points cannot be scaled")


def _point_to_dict(point: Point) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": point.name,
        "table": point.table.value,
        "address": point.address,
        "type": point.type.value,
    }
    optional: dict[str, Any] = {
        # Numbers as floats: from_dict reads them back as floats, and the digest hashes this
        # form, so an int minimum written in code (0) must hash like the same map from a file (0.0).
        "scale": float(point.scale) if point.scale != 1 else None,
        "unit": point.unit or None,
        "access": point.access.value if point.access is not Access.R else None,
        "description": point.description or None,
        "length": point.length or None,
        "minimum": None if point.minimum is None else float(point.minimum),
        "maximum": None if point.maximum is None else float(point.maximum),
        "labels": {str(k): v for k, v in sorted(point.labels)} if point.labels else None,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    return out


_MAP_KEYS = frozenset({"id", "version", "word_order", "description", "blocks", "points"})
_BLOCK_KEYS = frozenset({"table", "start", "count"})
_POINT_KEYS = frozenset(
    {
        "name",
        "table",
        "address",
        "type",
        "scale",
        "unit",
        "access",
        "description",
        "length",
        "minimum",
        "maximum",
        "labels",
    }
)


def _block_from_dict(data: object, where: str) -> Block:
    entry = _Entry(data, where, _BLOCK_KEYS)
    return Block(entry.choice("table", Table), entry.integer("start"), entry.integer("count"))


def _point_from_dict(data: object, where: str) -> Point:
    if isinstance(data, Mapping) and isinstance(data.get("name"), str):
        where = f"{where} ({data['name']!r})"
    entry = _Entry(data, where, _POINT_KEYS)
    labels: list[tuple[int, str]] = []
    for key, text in entry.mapping("labels").items():
        # Keys are text in JSON and TOML ("7"); a Python dict may use ints.
        if isinstance(key, bool) or not isinstance(key, int | str) or not isinstance(text, str):
            raise RegisterMapError(f"{entry.where}: labels must map integers to text")
        try:
            labels.append((int(key), text))
        except ValueError:
            raise RegisterMapError(f"{entry.where}: label key {key!r} is not an integer") from None
    return Point(
        name=entry.text("name"),
        table=entry.choice("table", Table),
        address=entry.integer("address"),
        type=entry.choice("type", DataType),
        scale=entry.number("scale", 1.0),
        unit=entry.text("unit", ""),
        access=entry.choice("access", Access, Access.R),
        description=entry.text("description", ""),
        length=entry.integer("length", 0),
        minimum=entry.number("minimum", None),
        maximum=entry.number("maximum", None),
        labels=tuple(sorted(labels)),
    )


_REQUIRED: Any = object()
_Enum = TypeVar("_Enum", bound=StrEnum)


class _Entry:
    """Typed reads from one table of a user file, with errors that name the entry and key.

    Keys not in `keys` are rejected (a misspelt ``acess = "rw"`` must not silently yield a
    read-only point). An optional key given as null counts as absent.
    """

    def __init__(self, data: object, where: str, keys: frozenset[str]) -> None:
        if not isinstance(data, Mapping):
            raise RegisterMapError(f"{where}: expected a table of keys, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in keys)
        if unknown:
            raise RegisterMapError(f"{where}: unknown keys {unknown} (allowed: {sorted(keys)})")
        self.data: Mapping[Any, Any] = data
        self.where = where

    def _get(self, key: str, default: Any, expected: str, *kinds: type) -> Any:
        value = self.data.get(key)
        if value is None:
            if default is _REQUIRED:
                raise RegisterMapError(f"{self.where}: missing key {key!r}")
            return default
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise RegisterMapError(f"{self.where}: {key!r} must be {expected}, got {value!r}")
        return value

    def text(self, key: str, default: str = _REQUIRED) -> str:
        return cast(str, self._get(key, default, "text", str))

    def integer(self, key: str, default: int = _REQUIRED) -> int:
        return cast(int, self._get(key, default, "an integer", int))

    def number(self, key: str, default: float | None = _REQUIRED) -> Any:
        value = self._get(key, default, "a number", int, float)
        return None if value is None else float(value)

    def array(self, key: str, default: Sequence[Any] = _REQUIRED) -> Sequence[Any]:
        return cast(Sequence[Any], self._get(key, default, "an array", list, tuple))

    def mapping(self, key: str) -> Mapping[Any, Any]:
        return cast(Mapping[Any, Any], self._get(key, {}, "a table", Mapping))

    def choice(self, key: str, kind: type[_Enum], default: _Enum = _REQUIRED) -> _Enum:
        value = self._get(key, default, "text", str)
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in kind)
            raise RegisterMapError(
                f"{self.where}: {key!r} must be one of {allowed}, got {value!r}"
            ) from None
