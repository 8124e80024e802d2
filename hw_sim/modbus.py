"""A sans-I/O Modbus slave: request PDU in, response PDU out.

Transport-independent (RTU and TCP framing wrap it) and device-independent (a `DataModel`
supplies the tables). Checks follow the order of the Modbus application protocol spec
(V1.1b3, section 6): function supported -> quantity/value valid (exception 03) -> address
range valid (exception 02) -> execution (exception 04 if the device fails).

Supported function codes: 1, 2, 3, 4 (reads), 5, 6, 15, 16 (writes), 8 sub-function 0
(echo), 43/14 (read device identification, basic objects). Anything else answers 01.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Protocol

from hw_sim.errors import SimulatorError
from protocols.registers import Table

MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000
MAX_WRITE_REGISTERS = 123
MAX_WRITE_BITS = 1968


class ExceptionCode(IntEnum):
    """Modbus exception codes a slave can answer with."""

    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    SERVER_DEVICE_FAILURE = 0x04
    GATEWAY_TARGET_FAILED = 0x0B


class ModbusException(SimulatorError):
    """Raised by a `DataModel` to answer with an exception response."""

    def __init__(self, code: ExceptionCode, detail: str = "") -> None:
        super().__init__(f"{code.name}: {detail}" if detail else code.name)
        self.code = code
        self.detail = detail


class DataModel(Protocol):
    """The device behind the slave: its tables and identification."""

    def supports(self, table: Table) -> bool:
        """Whether the device has this table at all (if not: illegal function)."""
        ...

    def read(self, table: Table, address: int, count: int) -> Sequence[int]:
        """`count` registers (or bits, as 0/1) from `address`; raises `ModbusException`."""
        ...

    def write(self, table: Table, address: int, values: Sequence[int]) -> None:
        """Write registers (or bits); all or nothing; raises `ModbusException`."""
        ...

    def identification(self) -> Mapping[int, bytes]:
        """Device identification objects (0 vendor, 1 product code, 2 revision, ...)."""
        ...


_READS = {
    1: Table.COIL,
    2: Table.DISCRETE_INPUT,
    3: Table.HOLDING_REGISTER,
    4: Table.INPUT_REGISTER,
}


def exception_response(function: int, code: ExceptionCode) -> bytes:
    """The exception PDU for `function`."""
    return bytes((function | 0x80, code))


def handle_request(model: DataModel, pdu: bytes) -> bytes:
    """Process one request PDU and return the response PDU (possibly an exception)."""
    if not pdu:
        raise ValueError("empty PDU")
    function = pdu[0]
    try:
        return _dispatch(model, function, pdu[1:])
    except ModbusException as exc:
        return exception_response(function, exc.code)


def _dispatch(model: DataModel, function: int, data: bytes) -> bytes:
    if function in _READS:
        table = _READS[function]
        _require_table(model, table)
        address, count = _unpack(">HH", data)
        limit = MAX_READ_BITS if table.is_bit else MAX_READ_REGISTERS
        if not 1 <= count <= limit:
            raise ModbusException(ExceptionCode.ILLEGAL_DATA_VALUE, f"quantity {count}")
        _check_range(address, count)
        values = model.read(table, address, count)
        payload = _pack_bits(values) if table.is_bit else struct.pack(f">{count}H", *values)
        return bytes((function, len(payload))) + payload
    if function == 5:
        _require_table(model, Table.COIL)
        address, value = _unpack(">HH", data)
        if value not in (0x0000, 0xFF00):
            raise ModbusException(ExceptionCode.ILLEGAL_DATA_VALUE, f"coil value {value:#06x}")
        model.write(Table.COIL, address, [1 if value else 0])
        return bytes((function,)) + data[:4]
    if function == 6:
        _require_table(model, Table.HOLDING_REGISTER)
        address, value = _unpack(">HH", data)
        model.write(Table.HOLDING_REGISTER, address, [value])
        return bytes((function,)) + data[:4]
    if function == 15:
        _require_table(model, Table.COIL)
        address, count, byte_count = _unpack(">HHB", data)
        if not 1 <= count <= MAX_WRITE_BITS or byte_count != (count + 7) // 8:
            raise ModbusException(ExceptionCode.ILLEGAL_DATA_VALUE, "quantity/byte count")
        if len(data) != 5 + byte_count:
            raise ModbusException(ExceptionCode.ILLEGAL_DATA_VALUE, "length")
        _check_range(address, count)
        bits = [(data[5 + i // 8] >> (i % 8)) & 1 for i in range(count)]
        model.write(Table.COIL, address, bits)
        return bytes((function,)) + data[:4]
    if function == 16:
        _require_table(model, Table.HOLDING_REGISTER)
        address, count, byte_count = _unpack(">HHB", data)
        if not 1 <= count <= MAX_WRITE_REGISTERS or byte_count != 2 * count:
            raise ModbusException(ExceptionCode.ILLEGAL_DATA_VALUE, "quantity/byte count")
        if len(data) != 5 + byte_count:
            raise ModbusException(ExceptionCode.ILLEGAL_DATA_VALUE, "length")
        _check_range(address, count)
        values = list(struct.unpack(f">{count}H", data[5:]))
        model.write(Table.HOLDING_REGISTER, address, values)
        return bytes((function,)) + data[:4]
    if function == 8:
        (sub_function,) = _unpack(">H", data)
        if sub_function != 0:
            raise ModbusException(ExceptionCode.ILLEGAL_FUNCTION, f"diagnostic {sub_function}")
        return bytes((function,)) + data  # return query data: an echo
    if function == 43:
        return _device_identification(model, data)
    raise ModbusException(ExceptionCode.ILLEGAL_FUNCTION, f"function {function}")


def _device_identification(model: DataModel, data: bytes) -> bytes:
    mei_type, read_code, object_id = _unpack(">BBB", data)
    if mei_type != 0x0E:
        raise ModbusException(ExceptionCode.ILLEGAL_FUNCTION, f"MEI type {mei_type}")
    objects = dict(model.identification())
    if read_code == 1:  # basic stream, from object_id
        start = object_id if object_id in objects else 0
        wanted = [i for i in sorted(objects) if start <= i <= 2]
    elif read_code == 4:  # one individual object
        if object_id not in objects:
            raise ModbusException(ExceptionCode.ILLEGAL_DATA_ADDRESS, f"object {object_id}")
        wanted = [object_id]
    else:
        raise ModbusException(ExceptionCode.ILLEGAL_DATA_VALUE, f"read device id code {read_code}")
    body = b"".join(bytes((i, len(objects[i]))) + objects[i] for i in wanted)
    # conformity 0x01: basic identification, stream access only (plus individual).
    header = bytes((43, 0x0E, read_code, 0x81, 0x00, 0x00, len(wanted)))
    return header + body


def _require_table(model: DataModel, table: Table) -> None:
    if not model.supports(table):
        raise ModbusException(ExceptionCode.ILLEGAL_FUNCTION, f"no {table} table")


def _check_range(address: int, count: int) -> None:
    if address + count > 0x10000:
        raise ModbusException(ExceptionCode.ILLEGAL_DATA_ADDRESS, f"{address}+{count}")


def _unpack(fmt: str, data: bytes) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    if len(data) < size:
        raise ModbusException(ExceptionCode.ILLEGAL_DATA_VALUE, "request too short")
    return struct.unpack(fmt, data[:size])


def _pack_bits(values: Sequence[int]) -> bytes:
    out = bytearray((len(values) + 7) // 8)
    for i, bit in enumerate(values):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)
