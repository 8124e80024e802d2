"""Register maps: validation, the user-file form (to_dict / from_dict) and the digest."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import LocalProtocolError, RegisterMapError
from protocols.reference import REFERENCE_MAP
from protocols.registers import (
    Access,
    Block,
    DataType,
    Point,
    RegisterMap,
    Table,
    WordOrder,
)

IR = Table.INPUT_REGISTER
HR = Table.HOLDING_REGISTER
DI = Table.DISCRETE_INPUT
COIL = Table.COIL

REFERENCE_DIGEST = "b5b83e6b63913806969070ef91f5700eb9963f9e783e3bf26b34485228a26ca4"
"""REFERENCE_MAP.digest(). Gateways announce it in `birth`; the cloud matches it. If you change
the reference map on purpose, bump its version and update this value."""


def make_map(*points: Point, blocks: tuple[Block, ...] = ()) -> RegisterMap:
    return RegisterMap("test-map", 1, WordOrder.ABCD, points, blocks)


def u16(name: str, address: int = 0, table: Table = IR, **kw: Any) -> Point:
    return Point(name, table, address, DataType.U16, **kw)


# -- validation --------------------------------------------------------------------------------

INVALID: list[tuple[str, tuple[Point, ...], tuple[Block, ...], str]] = [
    ("duplicate name", (u16("a", 0), u16("a", 1)), (), "duplicate point 'a'"),
    ("upper case name", (u16("Flow"),), (), "name must match"),
    ("name starts with digit", (u16("1flow"),), (), "name must match"),
    ("name with dash", (u16("flow-temp"),), (), "name must match"),
    ("empty name", (u16(""),), (), "name must match"),
    ("name too long", (u16("a" * 65),), (), "name must match"),
    ("name with space", (u16("flow temp"),), (), "name must match"),
    ("bool in input registers", (Point("b", IR, 0, DataType.BOOL),), (), "cannot live in"),
    ("bool in holding registers", (Point("b", HR, 0, DataType.BOOL),), (), "cannot live in"),
    ("u16 in coils", (u16("c", table=COIL),), (), "cannot live in"),
    ("f32 in discrete inputs", (Point("c", DI, 0, DataType.F32),), (), "cannot live in"),
    ("writable input register", (u16("w", access=Access.RW),), (), "read-only"),
    ("write-only input register", (u16("w", access=Access.W),), (), "read-only"),
    (
        "writable discrete input",
        (Point("w", DI, 0, DataType.BOOL, access=Access.W),),
        (),
        "read-only",
    ),
    ("u16 past 65535", (u16("x", 65536),), (), "outside 0..65535"),
    ("u32 across 65535", (Point("x", IR, 65535, DataType.U32),), (), "outside 0..65535"),
    (
        "string across 65535",
        (Point("x", IR, 65534, DataType.STRING, length=4),),
        (),
        "outside 0..65535",
    ),
    ("negative address", (u16("x", -1),), (), "outside 0..65535"),
    ("string without length", (Point("s", IR, 0, DataType.STRING),), (), "needs a length"),
    ("length on a number", (u16("s", length=2),), (), "only strings have a length"),
    ("zero scale", (u16("z", scale=0.0),), (), "scale"),
    ("NaN scale", (u16("z", scale=float("nan")),), (), "scale"),
    ("infinite scale", (u16("z", scale=float("inf")),), (), "scale"),
    ("scaled bool", (Point("b", DI, 0, DataType.BOOL, scale=0.1),), (), "cannot be scaled"),
    (
        "scaled string",
        (Point("s", IR, 0, DataType.STRING, length=2, scale=2.0),),
        (),
        "cannot be scaled",
    ),
    ("minimum above maximum", (u16("m", minimum=5.0, maximum=1.0),), (), "exceeds maximum"),
    ("NaN minimum", (u16("m", minimum=float("nan")),), (), "finite"),
    ("point outside blocks", (u16("p", 50),), (Block(IR, 0, 10),), "outside every block"),
    (
        "point straddling a block end",
        (Point("p", IR, 9, DataType.U32),),
        (Block(IR, 0, 10),),
        "outside every block",
    ),
    ("point in another table's block", (u16("p", 0),), (Block(HR, 0, 10),), "outside every block"),
    ("empty block", (u16("p", 0),), (Block(IR, 0, 10), Block(IR, 20, 0)), "invalid block"),
    ("negative block", (u16("p", 0),), (Block(IR, -1, 10),), "invalid block"),
    ("block past 65535", (u16("p", 0),), (Block(IR, 0, 10), Block(IR, 65530, 7)), "invalid block"),
]


@pytest.mark.parametrize(
    ("points", "blocks", "message"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_maps_are_rejected(
    points: tuple[Point, ...], blocks: tuple[Block, ...], message: str
) -> None:
    with pytest.raises(RegisterMapError, match=message) as caught:
        make_map(*points, blocks=blocks)
    assert isinstance(caught.value, LocalProtocolError)
    assert caught.value.reason == "invalid_register_map"


def test_edges_of_the_address_space_are_valid() -> None:
    top = make_map(
        u16("last", 65535),
        Point("pair", HR, 65534, DataType.U32),
        Point("text", IR, 65532, DataType.STRING, length=2),
        Point("bit", COIL, 65535, DataType.BOOL, access=Access.RW),
        blocks=(Block(IR, 65530, 6), Block(HR, 65534, 2), Block(COIL, 0, 65536)),
    )
    assert top.point("last").end == 65536
    assert top.point("pair").count == 2


def test_lookup_and_selection() -> None:
    assert REFERENCE_MAP.point("flow_temp").address == 2
    assert "flow_temp" in REFERENCE_MAP
    assert "nope" not in REFERENCE_MAP
    with pytest.raises(RegisterMapError, match="no point 'nope'"):
        REFERENCE_MAP.point("nope")
    with pytest.raises(RegisterMapError, match="nope"):
        REFERENCE_MAP.select(["status", "nope"])
    # In map order, whatever order they were asked for in.
    assert [p.name for p in REFERENCE_MAP.select(["dhw_temp", "status"])] == ["status", "dhw_temp"]
    readable = {p.name for p in REFERENCE_MAP.readable()}
    assert "reset_request" not in readable
    assert readable == {p.name for p in REFERENCE_MAP.points} - {"reset_request"}


def test_point_and_table_helpers() -> None:
    status = REFERENCE_MAP.point("status")
    assert status.label(7) == "lockout"
    assert status.label(99) is None
    assert REFERENCE_MAP.point("serial_number").count == 8
    assert REFERENCE_MAP.point("burner_starts").end == 12
    assert [t.read_function for t in (COIL, DI, HR, IR)] == [1, 2, 3, 4]
    assert COIL.is_bit and DI.is_bit and not HR.is_bit and not IR.is_bit
    assert not Access.R.writable and Access.W.writable and Access.RW.writable


# -- to_dict / from_dict -----------------------------------------------------------------------


def test_reference_map_round_trips() -> None:
    data = REFERENCE_MAP.to_dict()
    assert RegisterMap.from_dict(data) == REFERENCE_MAP
    # As a user file would arrive: through JSON text.
    again = RegisterMap.from_dict(json.loads(json.dumps(data)))
    assert again == REFERENCE_MAP
    assert again.to_dict() == data
    assert again.digest() == REFERENCE_MAP.digest()


def test_reference_digest_is_stable() -> None:
    assert REFERENCE_MAP.digest() == REFERENCE_DIGEST


def test_digest_does_not_depend_on_how_numbers_were_written() -> None:
    # An int written in code and the same number read back from a file as a float must hash
    # alike, or a gateway loading the profile from disk would announce another map.
    as_ints = make_map(u16("m", table=HR, access=Access.RW, minimum=0, maximum=1, scale=2))
    as_floats = make_map(u16("m", table=HR, access=Access.RW, minimum=0.0, maximum=1.0, scale=2.0))
    assert as_ints.digest() == as_floats.digest()
    assert RegisterMap.from_dict(as_ints.to_dict()).digest() == as_ints.digest()
    unsorted = make_map(u16("s", labels=((7, "lockout"), (0, "standby"))))
    ordered = make_map(u16("s", labels=((0, "standby"), (7, "lockout"))))
    assert unsorted.digest() == ordered.digest()


BASE_POINT = Point(
    "setpoint",
    HR,
    10,
    DataType.S16,
    scale=0.1,
    unit="C",
    access=Access.RW,
    description="Flow setpoint",
    minimum=30.0,
    maximum=80.0,
    labels=((0, "off"),),
)
BASE_MAP = RegisterMap(
    "digest-map",
    3,
    WordOrder.ABCD,
    (BASE_POINT, Point("serial", IR, 0, DataType.STRING, length=4)),
    (Block(HR, 0, 20), Block(IR, 0, 8)),
    "for digest tests",
)
POINT_CHANGES: dict[str, Any] = {
    "name": "setpoint2",
    "table": COIL,
    "address": 11,
    "type": DataType.U16,
    "scale": 0.01,
    "unit": "K",
    "access": Access.R,
    "description": "changed",
    "minimum": 31.0,
    "maximum": 79.0,
    "labels": ((0, "standby"),),
}
MAP_CHANGES: dict[str, Any] = {
    "id": "digest-map-2",
    "version": 4,
    "word_order": WordOrder.CDAB,
    "description": "changed",
    "blocks": (Block(HR, 0, 21), Block(IR, 0, 8)),
}


def changed_maps() -> dict[str, RegisterMap]:
    out: dict[str, RegisterMap] = {}
    for field, value in POINT_CHANGES.items():
        point = dataclasses.replace(BASE_POINT, **{field: value})
        blocks = BASE_MAP.blocks
        if field == "table":  # a coil holds a bool, unscaled, inside a coil block
            point = dataclasses.replace(
                point, type=DataType.BOOL, scale=1.0, minimum=None, maximum=None
            )
            blocks = (*blocks, Block(COIL, 0, 20))
        out[f"point.{field}"] = dataclasses.replace(
            BASE_MAP, points=(point, *BASE_MAP.points[1:]), blocks=blocks
        )
    for field, value in MAP_CHANGES.items():
        out[f"map.{field}"] = dataclasses.replace(BASE_MAP, **{field: value})
    extra = Point("extra", IR, 5, DataType.U16)
    out["map.points"] = dataclasses.replace(BASE_MAP, points=(*BASE_MAP.points, extra))
    serial = dataclasses.replace(BASE_MAP.points[1], length=3)
    out["point.length"] = dataclasses.replace(BASE_MAP, points=(BASE_POINT, serial))
    out["point order"] = dataclasses.replace(BASE_MAP, points=BASE_MAP.points[::-1])
    return out


def test_digest_changes_when_any_field_changes() -> None:
    variants = changed_maps()
    covered = {name.split(".")[-1] for name in variants}
    assert {f.name for f in dataclasses.fields(Point)} <= covered
    assert {f.name for f in dataclasses.fields(RegisterMap) if f.init} <= covered
    digests = {name: m.digest() for name, m in variants.items()}
    assert BASE_MAP.digest() not in digests.values()
    assert len(set(digests.values())) == len(digests), digests
    # ... and only then: an equal map built separately hashes the same.
    assert copy.deepcopy(BASE_MAP).digest() == BASE_MAP.digest()


@st.composite
def register_maps(draw: st.DrawFn) -> RegisterMap:
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True), unique=True))
    points = []
    for name in names[:12]:
        table = draw(st.sampled_from(Table))
        if table.is_bit:
            kind = DataType.BOOL
        else:
            kind = draw(st.sampled_from([t for t in DataType if t is not DataType.BOOL]))
        length = draw(st.integers(1, 16)) if kind is DataType.STRING else 0
        width = length or (2 if kind in (DataType.U32, DataType.S32, DataType.F32) else 1)
        numeric = kind not in (DataType.BOOL, DataType.STRING)
        scale = draw(st.sampled_from([1.0, 0.1, 0.01, 0.5, 10.0, -1.0])) if numeric else 1.0
        writable = table in (Table.COIL, Table.HOLDING_REGISTER)
        access = draw(st.sampled_from(Access)) if writable else Access.R
        limits = sorted(draw(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=2)))
        bounded = numeric and draw(st.booleans())
        labels = draw(st.dictionaries(st.integers(0, 0xFFFF), st.text(max_size=8), max_size=3))
        points.append(
            Point(
                name,
                table,
                draw(st.integers(0, 65536 - width)),
                kind,
                scale=scale,
                unit=draw(st.sampled_from(["", "bar", "\N{DEGREE SIGN}C", "%"])),
                access=access,
                description=draw(st.text(max_size=20)),
                length=length,
                minimum=limits[0] if bounded else None,
                maximum=limits[1] if bounded else None,
                labels=tuple(sorted(labels.items())),
            )
        )
    blocks: tuple[Block, ...] = ()
    if draw(st.booleans()):  # one block around each point, with some slack
        blocks = tuple(
            Block(p.table, max(0, p.address - 2), min(65536, p.end + 2) - max(0, p.address - 2))
            for p in points
        )
    return RegisterMap(
        draw(st.text(min_size=1, max_size=12)),
        draw(st.integers(0, 1000)),
        draw(st.sampled_from(WordOrder)),
        tuple(points),
        blocks,
        draw(st.text(max_size=20)),
    )


@settings(max_examples=150)
@given(register_maps())
def test_generated_maps_round_trip(register_map: RegisterMap) -> None:
    data = register_map.to_dict()
    back = RegisterMap.from_dict(json.loads(json.dumps(data)))
    assert back == register_map
    assert back.to_dict() == data
    assert back.digest() == register_map.digest()


# -- malformed user files ----------------------------------------------------------------------


def valid_file() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(REFERENCE_MAP.to_dict()))
    return data


NAMES = [p.name for p in REFERENCE_MAP.points]
FLOW = NAMES.index("flow_temp")  # a scaled s16 with a unit
STATUS = NAMES.index("status")  # a u16 with labels


def set_in(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def delete_in(data: dict[str, Any], path: tuple[Any, ...]) -> None:
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]


MISSING = [
    (("id",), "register map: missing key 'id'"),
    (("version",), "register map: missing key 'version'"),
    (("points",), "register map: missing key 'points'"),
    (("points", FLOW, "address"), f"point #{FLOW} ('flow_temp'): missing key 'address'"),
    (("points", FLOW, "type"), f"point #{FLOW} ('flow_temp'): missing key 'type'"),
    (("points", FLOW, "table"), f"point #{FLOW} ('flow_temp'): missing key 'table'"),
    (("points", FLOW, "name"), f"point #{FLOW}: missing key 'name'"),
    (("blocks", 1, "count"), "block #1: missing key 'count'"),
]


@pytest.mark.parametrize(
    ("path", "message"), MISSING, ids=[".".join(map(str, p)) for p, _ in MISSING]
)
def test_missing_keys_are_named(path: tuple[Any, ...], message: str) -> None:
    data = valid_file()
    delete_in(data, path)
    with pytest.raises(RegisterMapError) as caught:
        RegisterMap.from_dict(data)
    assert message in str(caught.value)


BAD_VALUES = [
    (("word_order",), "ABDC", "'word_order' must be one of 'ABCD', 'CDAB', 'BADC', 'DCBA'"),
    (("points", FLOW, "table"), "input_registers", "'table' must be one of"),
    (("points", FLOW, "type"), "int16", "'type' must be one of"),
    (("points", FLOW, "access"), "read", "'access' must be one of"),
    (("blocks", 0, "table"), "coils", "block #0: 'table' must be one of"),
    (("points", FLOW, "address"), "2", "'address' must be an integer, got '2'"),
    (("points", FLOW, "address"), 2.5, "'address' must be an integer, got 2.5"),
    (("points", FLOW, "address"), True, "'address' must be an integer, got True"),
    (("points", FLOW, "scale"), "0.1", "'scale' must be a number"),
    (("points", FLOW, "scale"), True, "'scale' must be a number"),
    (("points", FLOW, "minimum"), [1], "'minimum' must be a number"),
    (("points", FLOW, "name"), 5, f"point #{FLOW}: 'name' must be text"),
    (("points", FLOW, "unit"), 5, "'unit' must be text"),
    (("points", FLOW, "labels"), ["a", "b"], "'labels' must be a table"),
    (
        ("points", STATUS, "labels"),
        {"x": "on"},
        f"point #{STATUS} ('status'): label key 'x' is not an integer",
    ),
    (("points", STATUS, "labels"), {"1": 2}, "labels must map integers to text"),
    (("points", FLOW, "table"), 4, "'table' must be text"),
    (("version",), "1", "'version' must be an integer"),
    (("id",), None, "missing key 'id'"),
    (("points",), {"a": 1}, "'points' must be an array"),
    (("blocks",), "all", "'blocks' must be an array"),
    (("points", FLOW), ["flow_temp"], f"point #{FLOW}: expected a table of keys, got list"),
    (("blocks", 0), 16, "block #0: expected a table of keys, got int"),
    (("points", FLOW, "adress"), 3, f"point #{FLOW} ('flow_temp'): unknown keys ['adress']"),
    (("points", FLOW, "acess"), "rw", "unknown keys ['acess']"),
    (("comment",), "x", "register map: unknown keys ['comment']"),
]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    BAD_VALUES,
    ids=[f"{'.'.join(map(str, p))}={v!r}" for p, v, _ in BAD_VALUES],
)
def test_malformed_values_are_named(path: tuple[Any, ...], value: Any, message: str) -> None:
    data = valid_file()
    set_in(data, path, value)
    with pytest.raises(RegisterMapError) as caught:
        RegisterMap.from_dict(data)
    assert message in str(caught.value)


@pytest.mark.parametrize("data", [[], "map", None, 3])
def test_a_file_that_is_not_a_table(data: Any) -> None:
    with pytest.raises(RegisterMapError, match="register map: expected a table of keys"):
        RegisterMap.from_dict(data)


def test_optional_keys_may_be_null_or_absent() -> None:
    data = valid_file()
    set_in(data, ("points", FLOW, "unit"), None)
    del data["blocks"], data["word_order"], data["description"]
    loaded = RegisterMap.from_dict(data)
    assert loaded.point("flow_temp").unit == ""
    assert loaded.word_order is WordOrder.ABCD
    assert loaded.blocks == ()


def test_validation_errors_from_a_file_keep_their_message() -> None:
    data = valid_file()
    set_in(data, ("points", 3, "name"), "flow_temp")
    with pytest.raises(RegisterMapError, match="duplicate point 'flow_temp'"):
        RegisterMap.from_dict(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300)
@given(
    st.sampled_from(
        [("points", FLOW, key) for key in ("name", "table", "address", "type", "scale", "unit")]
        + [("points", STATUS, key) for key in ("labels", "length", "minimum", "access")]
        + [("blocks", 0, "start"), ("blocks", 1), ("points", 5), ("id",), ("word_order",)]
    ),
    json_values,
)
def test_any_malformed_file_raises_register_map_error(path: tuple[Any, ...], value: Any) -> None:
    data = valid_file()
    set_in(data, path, value)
    with contextlib.suppress(RegisterMapError):  # the only error a user file may produce
        RegisterMap.from_dict(data)
