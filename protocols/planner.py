"""Read planning: the fewest Modbus reads that fetch a set of wanted points.

On a 19200-baud RS-485 line each request costs a turnaround (request, silence, response), so
one 40-register read beats five 8-register reads. `plan_reads` groups wanted points per table
into contiguous runs and bridges the holes between them, subject to three limits:

* a read never exceeds the protocol maximum (125 registers, 2000 bits) or a lower limit
  the caller sets for a controller that cannot do that many;
* a hole bridged inside a read is at most `max_gap` unwanted registers long;
* if the map declares readable `blocks`, every read lies inside one of them (controllers
  answer "illegal data address" for a read that touches an unmapped address); a wanted point
  outside every block is an error.

Within those limits the plan has the fewest reads possible: a forced break splits the points
into independent segments, and inside a segment the greedy sweep by start address is
optimal for covering intervals with windows of bounded length (the tests check this against
brute force). Points a read bridges over are decoded for free but are not reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from protocols.codecs import Value, decode
from protocols.errors import LocalProtocolError
from protocols.registers import Access, Block, Point, Table, WordOrder

MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000
DEFAULT_MAX_GAP = 16


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read: `count` registers (or bits) of `table` from `address`."""

    table: Table
    address: int
    count: int
    points: tuple[Point, ...]

    @property
    def function_code(self) -> int:
        """The Modbus function code that performs this read."""
        return self.table.read_function

    @property
    def end(self) -> int:
        """First address after the read."""
        return self.address + self.count

    def decode(self, values: Sequence[int | bool], order: WordOrder) -> dict[str, Value]:
        """The wanted points' values from the registers (or bits) this read returned."""
        if len(values) < self.count:
            raise LocalProtocolError(
                f"read of {self.count} at {self.table} {self.address} got {len(values)} values"
            )
        out: dict[str, Value] = {}
        for point in self.points:
            offset = point.address - self.address
            out[point.name] = decode(
                point, [int(v) for v in values[offset : offset + point.count]], order
            )
        return out


def plan_reads(
    points: Iterable[Point],
    *,
    max_gap: int = DEFAULT_MAX_GAP,
    max_registers: int = MAX_REGISTERS_PER_READ,
    max_bits: int = MAX_BITS_PER_READ,
    blocks: Sequence[Block] = (),
) -> tuple[ReadRequest, ...]:
    """Plan the fewest reads covering `points` (see the module docstring for the rules)."""
    if max_gap < 0:
        raise LocalProtocolError(f"max_gap must be >= 0, got {max_gap}")
    if not 1 <= max_registers <= MAX_REGISTERS_PER_READ:
        raise LocalProtocolError(f"max_registers must be 1..{MAX_REGISTERS_PER_READ}")
    if not 1 <= max_bits <= MAX_BITS_PER_READ:
        raise LocalProtocolError(f"max_bits must be 1..{MAX_BITS_PER_READ}")
    by_table: dict[Table, list[Point]] = {}
    for point in points:
        if point.access is Access.W:
            raise LocalProtocolError(f"point {point.name!r} is write-only and cannot be read")
        by_table.setdefault(point.table, []).append(point)
    plan: list[ReadRequest] = []
    for table in Table:
        wanted = sorted(set(by_table.get(table, ())), key=lambda p: (p.address, p.end, p.name))
        limit = max_bits if table.is_bit else max_registers
        plan.extend(_plan_table(table, wanted, limit, max_gap, blocks))
    return tuple(plan)


def _plan_table(
    table: Table, wanted: list[Point], limit: int, max_gap: int, blocks: Sequence[Block]
) -> list[ReadRequest]:
    reads: list[ReadRequest] = []
    run: list[Point] = []
    start = end = 0
    for point in wanted:
        if point.count > limit:
            raise LocalProtocolError(
                f"point {point.name!r} spans {point.count} addresses, more than one read ({limit})"
            )
        if blocks and not _in_a_block(blocks, table, point.address, point.end):
            raise LocalProtocolError(
                f"point {point.name!r} ({table} {point.address}..{point.end - 1}) "
                "lies outside every readable block"
            )
        if run:
            new_end = max(end, point.end)
            fits = (
                new_end - start <= limit
                and point.address - end <= max_gap
                # Any block, not just the first point's: declared blocks may overlap.
                and (not blocks or _in_a_block(blocks, table, start, new_end))
            )
            if fits:
                run.append(point)
                end = new_end
                continue
            reads.append(ReadRequest(table, start, end - start, tuple(run)))
        run, start, end = [point], point.address, point.end
    if run:
        reads.append(ReadRequest(table, start, end - start, tuple(run)))
    return reads


def _in_a_block(blocks: Sequence[Block], table: Table, start: int, end: int) -> bool:
    return any(block.contains(table, start, end) for block in blocks)


def covered(plan: Iterable[ReadRequest]) -> Mapping[str, ReadRequest]:
    """Which read fetches each planned point, by point name."""
    return {point.name: read for read in plan for point in read.points}
