"""The boiler as a Modbus device: its register map laid over the simulated controller.

Reads inside a declared block return the encoded point values (unmapped addresses read 0);
a read that touches an address outside every block answers exception 02, as a real
controller does. Writes must cover whole writable points; a value outside the point's
limits answers exception 03. The map has no coils, so coil functions answer exception 01.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from hw_sim.boiler import Boiler, ResetOutcome, SettingError
from hw_sim.modbus import ExceptionCode, ModbusException
from protocols.codecs import decode, encode
from protocols.errors import EncodeError
from protocols.reference import REFERENCE_MAP
from protocols.registers import Point, RegisterMap, Table


@dataclass(slots=True)
class BoilerDevice:
    """Implements `hw_sim.modbus.DataModel` for a `Boiler` and a register map."""

    boiler: Boiler
    register_map: RegisterMap = REFERENCE_MAP
    last_reset: ResetOutcome | None = None
    writes: int = 0
    rejected_writes: int = 0
    _tables: frozenset[Table] = field(init=False)

    def __post_init__(self) -> None:
        self._tables = frozenset(b.table for b in self.register_map.blocks)

    @property
    def online(self) -> bool:
        """Whether the controller answers at all (not while powered off or booting)."""
        return self.boiler.powered

    def supports(self, table: Table) -> bool:
        """Whether the device has any addresses in `table`."""
        return table in self._tables

    def read(self, table: Table, address: int, count: int) -> Sequence[int]:
        """Registers or bits from the live controller state."""
        self._check_block(table, address, count)
        image = self._image(table, address, address + count)
        return [image.get(a, 0) for a in range(address, address + count)]

    def write(self, table: Table, address: int, values: Sequence[int]) -> None:
        """Apply setpoint, enable and reset writes, all or nothing."""
        end = address + len(values)
        self._check_block(table, address, len(values))
        targets = [
            p
            for p in self.register_map.points
            if p.table is table and p.address < end and p.end > address
        ]
        covered: set[int] = set()
        for point in targets:
            if not point.access.writable or point.address < address or point.end > end:
                self._reject(ExceptionCode.ILLEGAL_DATA_ADDRESS, f"{point.name} not writable here")
            covered.update(range(point.address, point.end))
        if covered != set(range(address, end)):
            self._reject(
                ExceptionCode.ILLEGAL_DATA_ADDRESS, f"no writable point at {address}..{end - 1}"
            )
        decoded: list[tuple[Point, float]] = []
        for point in targets:
            registers = values[point.address - address : point.end - address]
            value = decode(point, registers, self.register_map.word_order)
            if not isinstance(value, int | float):  # writable points are all numeric
                self._reject(ExceptionCode.ILLEGAL_DATA_ADDRESS, f"{point.name} is not numeric")
            if (point.minimum is not None and value < point.minimum) or (
                point.maximum is not None and value > point.maximum
            ):
                self._reject(ExceptionCode.ILLEGAL_DATA_VALUE, f"{point.name}={value}")
            decoded.append((point, value))
        for point, value in decoded:
            if point.name == "reset_request":
                self.last_reset = self.boiler.request_reset()
            else:
                try:
                    self.boiler.write_setting(point.name, value)
                except SettingError as exc:
                    self._reject(ExceptionCode.ILLEGAL_DATA_VALUE, str(exc))
        self.writes += 1

    def identification(self) -> Mapping[int, bytes]:
        """Basic device identification objects (FC 43/14)."""
        identity = self.boiler.identity
        return {
            0: b"boilertwin",
            1: identity.model.encode("ascii"),
            2: identity.firmware.encode("ascii"),
        }

    def _check_block(self, table: Table, address: int, count: int) -> None:
        end = address + count
        if not any(b.contains(table, address, end) for b in self.register_map.blocks):
            raise ModbusException(
                ExceptionCode.ILLEGAL_DATA_ADDRESS, f"{table} {address}..{end - 1} not mapped"
            )

    def _image(self, table: Table, start: int, end: int) -> dict[int, int]:
        values = self.boiler.register_values()
        order = self.register_map.word_order
        image: dict[int, int] = {}
        for point in self.register_map.points:
            if point.table is not table or point.end <= start or point.address >= end:
                continue
            try:
                registers = encode(point, values[point.name], order)
            except EncodeError as exc:
                # A physical value beyond what the register can show: the controller fails the read.
                raise ModbusException(ExceptionCode.SERVER_DEVICE_FAILURE, str(exc)) from exc
            image.update(zip(range(point.address, point.end), registers, strict=True))
        return image

    def _reject(self, code: ExceptionCode, detail: str) -> NoReturn:
        self.rejected_writes += 1
        raise ModbusException(code, detail)
