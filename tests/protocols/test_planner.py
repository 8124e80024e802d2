"""Read planning: a golden plan, the limits, and optimality against brute force."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocols.codecs import Value, encode
from protocols.errors import LocalProtocolError
from protocols.planner import (
    DEFAULT_MAX_GAP,
    MAX_BITS_PER_READ,
    MAX_REGISTERS_PER_READ,
    ReadRequest,
    covered,
    plan_reads,
)
from protocols.reference import REFERENCE_MAP, BoilerStatus, FaultCode
from protocols.registers import Access, Block, DataType, Point, Table, WordOrder

IR = Table.INPUT_REGISTER
HR = Table.HOLDING_REGISTER
DI = Table.DISCRETE_INPUT
COIL = Table.COIL


def reg(name: str, address: int, width: int = 1, table: Table = IR) -> Point:
    """A point `width` registers wide (u16, u32, or a string for other widths)."""
    if width == 1:
        return Point(name, table, address, DataType.U16)
    if width == 2:
        return Point(name, table, address, DataType.U32)
    return Point(name, table, address, DataType.STRING, length=width)


def bit(name: str, address: int, table: Table = DI) -> Point:
    return Point(name, table, address, DataType.BOOL)


def shape(plan: Sequence[ReadRequest]) -> list[tuple[str, int, int]]:
    return [(r.table.value, r.address, r.count) for r in plan]


# -- the reference controller ------------------------------------------------------------------


def test_golden_plan_for_the_reference_map() -> None:
    plan = plan_reads(REFERENCE_MAP.readable(), blocks=REFERENCE_MAP.blocks)
    # Bits, then the live values (0..18), then identity (100..120), then setpoints (200..203);
    # reset_request (210) is write-only and the identity block is 81 registers away.
    assert shape(plan) == [
        ("discrete_input", 0, 8),
        ("input_register", 0, 19),
        ("input_register", 100, 21),
        ("holding_register", 200, 4),
    ]
    assert [r.function_code for r in plan] == [2, 4, 4, 3]
    assert [p.name for p in plan[2].points] == ["serial_number", "model", "firmware", "map_version"]
    readable = {p.name for p in REFERENCE_MAP.readable()}
    assert set(covered(plan)) == readable
    assert sum(len(r.points) for r in plan) == len(readable)
    # Blocks do not change this plan: the gaps are too wide to bridge anyway.
    assert shape(plan_reads(REFERENCE_MAP.readable())) == shape(plan)


def test_reference_plan_decodes_a_register_image() -> None:
    values: dict[str, Value] = {
        "flame_on": True,
        "pump_on": True,
        "lockout": False,
        "status": int(BoilerStatus.RUNNING),
        "fault_code": int(FaultCode.F28),
        "flow_temp": 61.3,
        "return_temp": 45.0,
        "outdoor_temp": -12.3,
        "ch_pressure": 1.52,
        "flame_current": 4.7,
        "burner_starts": 123_456_789,
        "operating_hours": 70_000,
        "heat_output": 18.25,
        "serial_number": "BT0123456789ABCD",
        "model": "BT-COMBI-24",
        "firmware": "1.2.3",
        "map_version": 1,
        "ch_setpoint": 70.0,
        "dhw_setpoint": 55.5,
    }
    order = REFERENCE_MAP.word_order
    image: dict[tuple[Table, int], int] = {}
    for name, value in values.items():
        point = REFERENCE_MAP.point(name)
        for offset, word in enumerate(encode(point, value, order)):
            image[point.table, point.address + offset] = word
    wanted = REFERENCE_MAP.select(values)
    decoded: dict[str, Value] = {}
    for read in plan_reads(wanted, blocks=REFERENCE_MAP.blocks):
        # Unwanted registers a read bridges over hold junk the decoder must ignore.
        words = [image.get((read.table, a), 0xBEEF) for a in range(read.address, read.end)]
        if read.table.is_bit:
            words = [bool(image.get((read.table, a), 0)) for a in range(read.address, read.end)]
            words += [False] * 5  # bit reads come back padded to a whole byte
        decoded |= read.decode(words, order)
    assert decoded == values


def test_decode_needs_the_whole_read() -> None:
    (read,) = plan_reads([reg("a", 0), reg("b", 3, 2)])
    assert read.decode([1, 0, 0, 0x1234, 0x5678], WordOrder.ABCD) == {"a": 1, "b": 0x12345678}
    assert read.decode([1, 0, 0, 0x5678, 0x1234], WordOrder.CDAB) == {"a": 1, "b": 0x12345678}
    with pytest.raises(LocalProtocolError, match="got 4 values"):
        read.decode([1, 0, 0, 0x1234], WordOrder.ABCD)


# -- limits ------------------------------------------------------------------------------------


def test_no_read_exceeds_125_registers() -> None:
    points = [reg(f"r{i}", i) for i in range(300)]
    assert shape(plan_reads(points)) == [
        ("input_register", 0, 125),
        ("input_register", 125, 125),
        ("input_register", 250, 50),
    ]


def test_no_read_exceeds_2000_bits() -> None:
    points = [bit(f"b{i}", i) for i in range(2100)]
    assert shape(plan_reads(points)) == [("discrete_input", 0, 2000), ("discrete_input", 2000, 100)]


def test_a_lower_limit_for_a_weak_controller() -> None:
    points = [reg(f"r{i}", i) for i in range(30)]
    assert [r.count for r in plan_reads(points, max_registers=16)] == [16, 14]
    bits = [bit(f"b{i}", i, COIL) for i in range(30)]
    assert [r.count for r in plan_reads(bits, max_bits=8)] == [8, 8, 8, 6]


@pytest.mark.parametrize(
    ("gap", "max_gap", "reads"),
    [
        (DEFAULT_MAX_GAP, DEFAULT_MAX_GAP, 1),
        (DEFAULT_MAX_GAP + 1, DEFAULT_MAX_GAP, 2),
        (0, 0, 1),
        (1, 0, 2),
        (5, 5, 1),
        (6, 5, 2),
    ],
)
def test_max_gap(gap: int, max_gap: int, reads: int) -> None:
    points = [reg("a", 10, 2), reg("b", 12 + gap)]
    plan = plan_reads(points, max_gap=max_gap)
    assert len(plan) == reads
    if reads == 1:
        assert shape(plan) == [("input_register", 10, 3 + gap)]


def test_reads_never_leave_a_block() -> None:
    blocks = (Block(IR, 0, 10), Block(IR, 10, 10))
    # Adjacent addresses, but the controller maps them as two separate blocks.
    plan = plan_reads([reg("a", 8, 2), reg("b", 10)], blocks=blocks)
    assert shape(plan) == [("input_register", 8, 2), ("input_register", 10, 1)]
    # Without blocks, one read.
    assert len(plan_reads([reg("a", 8, 2), reg("b", 10)])) == 1


def test_blocks_are_per_table() -> None:
    blocks = (Block(HR, 0, 20), Block(IR, 0, 5), Block(IR, 5, 15))
    plan = plan_reads(
        [reg("a", 1), reg("b", 6), reg("c", 1, table=HR), reg("d", 6, table=HR)], blocks=blocks
    )
    assert shape(plan) == [
        ("input_register", 1, 1),
        ("input_register", 6, 1),
        ("holding_register", 1, 6),
    ]


def test_overlapping_blocks_allow_a_read_inside_either() -> None:
    blocks = (Block(IR, 0, 10), Block(IR, 5, 20))
    # 6 lies in both blocks; a read 6..12 lies inside the second one.
    assert shape(plan_reads([reg("a", 6), reg("b", 12)], blocks=blocks)) == [
        ("input_register", 6, 7)
    ]


def test_a_wanted_point_outside_every_block_is_an_error() -> None:
    with pytest.raises(LocalProtocolError, match=r"'stray'.*outside every readable block"):
        plan_reads([reg("a", 1), reg("stray", 50)], blocks=(Block(IR, 0, 10),))
    with pytest.raises(LocalProtocolError, match="outside every readable block"):
        plan_reads([reg("straddle", 9, 2)], blocks=(Block(IR, 0, 10), Block(IR, 10, 10)))


def test_write_only_points_are_rejected() -> None:
    with pytest.raises(LocalProtocolError, match="'reset_request' is write-only"):
        plan_reads(REFERENCE_MAP.points)
    rw = Point("rw", HR, 0, DataType.U16, access=Access.RW)
    assert len(plan_reads([rw])) == 1


def test_a_point_wider_than_a_read_is_rejected() -> None:
    wide = reg("wide", 0, 10)
    with pytest.raises(LocalProtocolError, match="'wide' spans 10 addresses, more than one read"):
        plan_reads([wide], max_registers=8)
    assert shape(plan_reads([wide], max_registers=10)) == [("input_register", 0, 10)]
    biggest = Point("big", IR, 0, DataType.STRING, length=MAX_REGISTERS_PER_READ + 1)
    with pytest.raises(LocalProtocolError, match="more than one read"):
        plan_reads([biggest])


@pytest.mark.parametrize(
    ("max_gap", "max_registers", "max_bits"),
    [
        (-1, MAX_REGISTERS_PER_READ, MAX_BITS_PER_READ),
        (DEFAULT_MAX_GAP, 0, MAX_BITS_PER_READ),
        (DEFAULT_MAX_GAP, MAX_REGISTERS_PER_READ + 1, MAX_BITS_PER_READ),
        (DEFAULT_MAX_GAP, MAX_REGISTERS_PER_READ, 0),
        (DEFAULT_MAX_GAP, MAX_REGISTERS_PER_READ, MAX_BITS_PER_READ + 1),
    ],
)
def test_limits_outside_the_protocol_are_rejected(
    max_gap: int, max_registers: int, max_bits: int
) -> None:
    with pytest.raises(LocalProtocolError):
        plan_reads([reg("a", 0)], max_gap=max_gap, max_registers=max_registers, max_bits=max_bits)


def test_nothing_wanted_means_no_reads() -> None:
    assert plan_reads([]) == ()


def test_duplicates_and_aliases() -> None:
    a = reg("a", 0, 2)
    alias = reg("a_high", 0)  # the high word of `a`, read under another name
    plan = plan_reads([a, a, alias])
    assert shape(plan) == [("input_register", 0, 2)]
    assert sorted(p.name for p in plan[0].points) == ["a", "a_high"]


def test_tables_are_never_mixed() -> None:
    plan = plan_reads([reg("i", 0), reg("h", 1, table=HR), bit("d", 0), bit("c", 1, COIL)])
    assert [r.table for r in plan] == [COIL, DI, IR, HR]


# -- optimality against brute force ------------------------------------------------------------


@st.composite
def planning_problems(
    draw: st.DrawFn,
) -> tuple[list[Point], int, int, tuple[Block, ...]]:
    max_gap = draw(st.integers(0, 12))
    max_registers = draw(st.integers(5, 40))
    tables = draw(st.sampled_from([[IR], [IR], [IR, HR]]))
    blocks: tuple[Block, ...] = ()
    if draw(st.booleans()):  # possibly overlapping blocks, as a profile may declare
        blocks = tuple(
            Block(
                draw(st.sampled_from(tables)), draw(st.integers(0, 280)), draw(st.integers(4, 60))
            )
            for _ in range(draw(st.integers(1, 4)))
        )
    points = []
    for i in range(draw(st.integers(1, 7))):
        width = draw(st.integers(1, 4))
        if blocks:
            block = draw(st.sampled_from(blocks))
            address = draw(st.integers(block.start, block.end - width))
            table = block.table
        else:
            address = draw(st.integers(0, 300))
            table = draw(st.sampled_from(tables))
        points.append(reg(f"p{i}", address, width, table))
    return points, max_gap, max_registers, blocks


def read_is_valid(
    group: Sequence[Point], max_gap: int, limit: int, blocks: Sequence[Block]
) -> bool:
    """Whether one read may fetch exactly `group`, by the definition, not the algorithm."""
    if len({p.table for p in group}) != 1:
        return False
    table = group[0].table
    start, end = min(p.address for p in group), max(p.end for p in group)
    if end - start > limit:
        return False
    if blocks and not any(b.table is table and b.start <= start and end <= b.end for b in blocks):
        return False
    fetched = {a for p in group for a in range(p.address, p.end)}
    hole = longest = 0
    for address in range(start, end):
        hole = 0 if address in fetched else hole + 1
        longest = max(longest, hole)
    return longest <= max_gap


def fewest_reads(points: Sequence[Point], max_gap: int, limit: int, blocks: Sequence[Block]) -> int:
    """The minimum over every partition of the points into valid reads (bitmask DP)."""
    n = len(points)
    valid = [
        mask > 0
        and read_is_valid([points[i] for i in range(n) if mask >> i & 1], max_gap, limit, blocks)
        for mask in range(1 << n)
    ]

    @functools.cache
    def best(mask: int) -> int:
        if mask == 0:
            return 0
        low = mask & -mask  # the group holding the lowest remaining point
        result = n + 1
        sub = mask
        while sub:
            if sub & low and valid[sub]:
                result = min(result, 1 + best(mask & ~sub))
            sub = (sub - 1) & mask
        return result

    return best((1 << n) - 1)


@settings(max_examples=400, deadline=None)
@given(planning_problems())
@example(([reg("a", 6), reg("b", 12)], 10, 20, (Block(IR, 0, 10), Block(IR, 5, 20))))
@example(([reg("a", 0), reg("b", 1, 4), reg("c", 2), reg("d", 5)], 0, 5, ()))
def test_plan_is_minimal_and_valid(
    problem: tuple[list[Point], int, int, tuple[Block, ...]],
) -> None:
    points, max_gap, max_registers, blocks = problem
    plan = plan_reads(points, max_gap=max_gap, max_registers=max_registers, blocks=blocks)

    # Every wanted point is in exactly one read, of its table, and lies wholly inside it.
    planned = [p for read in plan for p in read.points]
    assert sorted(p.name for p in planned) == sorted(p.name for p in points)
    for read in plan:
        assert read.points, "a read that fetches nothing wanted"
        for point in read.points:
            assert point.table is read.table
            assert read.address <= point.address and point.end <= read.end
        # The read is exactly its points' span and obeys every limit.
        assert read.address == min(p.address for p in read.points)
        assert read.end == max(p.end for p in read.points)
        assert read_is_valid(read.points, max_gap, max_registers, blocks)

    assert len(plan) == fewest_reads(points, max_gap, max_registers, blocks)
