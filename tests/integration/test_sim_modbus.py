"""pymodbus and a raw serial master talk to the running simulator over a real pty and TCP.

pymodbus's serial transport applies its line settings twice on open; on a pty with Debian's
glibc the second call fails when parity is asked for (see hw_sim/pty.py), so the pymodbus
masters here use 8N1 on the pty. Even-parity (8E1) masters are covered by the raw pyserial
tests below and by libmodbus's mbpoll in test_cli.py.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import serial
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException as PymodbusError
from pymodbus.pdu import ExceptionResponse

from hw_sim.rtu import frame
from protocols.codecs import decode
from protocols.reference import REFERENCE_MAP, BoilerStatus

pytestmark = pytest.mark.integration

WORDS = REFERENCE_MAP.word_order


def value(name: str, registers: list[int], start: int) -> Any:
    point = REFERENCE_MAP.point(name)
    return decode(point, registers[point.address - start : point.end - start], WORDS)


async def rtu_client(path: str, *, timeout: float = 1.0) -> AsyncModbusSerialClient:
    client = AsyncModbusSerialClient(path, baudrate=19200, parity="N", timeout=timeout, retries=0)
    assert await client.connect()
    return client


async def tcp_client(port: int, *, timeout: float = 1.0) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=timeout, retries=0)
    assert await client.connect()
    return client


@pytest.fixture
async def sim(start_sim: Any) -> AsyncIterator[Any]:
    yield await start_sim(time_scale=20.0)


@pytest.mark.parametrize("transport", ["rtu", "tcp"])
async def test_reads_status_temperatures_counters_and_identity(sim: Any, transport: str) -> None:
    client = await (rtu_client(sim.pty) if transport == "rtu" else tcp_client(sim.tcp_port))
    try:
        reply = await client.read_input_registers(0, count=19, device_id=1)
        assert not reply.isError(), reply
        regs = reply.registers
        truth = (await sim.state())["registers"]
        assert value("status", regs, 0) in {s.value for s in BoilerStatus}
        assert value("burner_starts", regs, 0) == truth["burner_starts"] > 65535
        assert value("operating_hours", regs, 0) == truth["operating_hours"]
        assert abs(value("outdoor_temp", regs, 0) - truth["outdoor_temp"]) < 0.5
        assert 0.9 < value("ch_pressure", regs, 0) < 2.5
        ident = await client.read_input_registers(100, count=21, device_id=1)
        assert value("serial_number", ident.registers, 100) == "BT24C-000001"
        assert value("model", ident.registers, 100) == "BT-24C"
        bits = await client.read_discrete_inputs(0, count=8, device_id=1)
        assert len(bits.bits) >= 8
    finally:
        client.close()


@pytest.mark.parametrize("transport", ["rtu", "tcp"])
async def test_writes_and_exception_responses(sim: Any, transport: str) -> None:
    client = await (rtu_client(sim.pty) if transport == "rtu" else tcp_client(sim.tcp_port))
    try:
        assert not (await client.write_register(200, 555, device_id=1)).isError()
        assert (await client.read_holding_registers(200, count=1, device_id=1)).registers == [555]
        assert (await sim.state())["registers"]["ch_setpoint"] == 55.5
        out_of_range = await client.write_register(200, 950, device_id=1)
        assert isinstance(out_of_range, ExceptionResponse) and out_of_range.exception_code == 3
        unmapped = await client.read_input_registers(50, count=2, device_id=1)
        assert isinstance(unmapped, ExceptionResponse) and unmapped.exception_code == 2
        coils = await client.read_coils(0, count=1, device_id=1)
        assert isinstance(coils, ExceptionResponse) and coils.exception_code == 1
        bad_reset = await client.write_register(210, 7, device_id=1)
        assert isinstance(bad_reset, ExceptionResponse) and bad_reset.exception_code == 3
    finally:
        client.close()


async def test_f28_lockout_reset_and_repair_story_over_modbus(start_sim: Any) -> None:
    sim = await start_sim(time_scale=40.0)
    client = await rtu_client(sim.pty)

    async def status() -> BoilerStatus:
        reply = await client.read_input_registers(0, count=2, device_id=1)
        return BoilerStatus(reply.registers[0])

    async def wait_for(wanted: BoilerStatus, limit_s: float = 20.0) -> None:
        deadline = time.monotonic() + limit_s
        while (current := await status()) is not wanted:
            assert time.monotonic() < deadline, f"still {current.name}, wanted {wanted.name}"
            await asyncio.sleep(0.05)

    try:
        await sim.control("/demand", {"ch": "on", "dhw": "off"})
        await sim.control("/fault", {"code": "F28"})
        await wait_for(BoilerStatus.LOCKOUT)
        state = await sim.state()
        assert state["fault_code"] == "F28" and state["registers"]["failed_ignitions"] == 3
        starts = state["registers"]["burner_starts"]

        assert not (await client.write_register(210, 1, device_id=1)).isError()
        await wait_for(BoilerStatus.IGNITION)
        await wait_for(BoilerStatus.LOCKOUT)
        assert (await sim.state())["registers"]["failed_ignitions"] == 6

        await sim.control("/repair")
        assert (await status()) is BoilerStatus.LOCKOUT, "repair alone does not reset"
        assert not (await client.write_register(210, 1, device_id=1)).isError()
        await wait_for(BoilerStatus.RUNNING)
        state = await sim.state()
        assert state["registers"]["burner_starts"] == starts + 1
        assert state["registers"]["reset_count"] == 2 and state["last_reset"] == "accepted"
    finally:
        client.close()


def raw_exchange(path: str, request: bytes, *, expect: int, timeout: float = 0.5) -> bytes:
    """Send bytes with an 8E1 pyserial master; return what comes back (up to `expect`)."""
    with serial.Serial(path, 19200, parity=serial.PARITY_EVEN, timeout=timeout) as port:
        port.reset_input_buffer()
        port.write(request)
        return bytes(port.read(expect))


async def test_8e1_master_bad_crc_is_ignored_and_other_units_stay_silent(sim: Any) -> None:
    good = frame(1, struct.pack(">BHH", 4, 0, 2))
    reply = await asyncio.to_thread(raw_exchange, sim.pty, good, expect=9)
    assert reply[:3] == bytes([1, 4, 4]) and len(reply) == 9
    corrupted = bytearray(good)
    corrupted[-1] ^= 0xFF
    assert (
        await asyncio.to_thread(raw_exchange, sim.pty, bytes(corrupted), expect=9, timeout=0.3)
        == b""
    )
    other_unit = frame(7, struct.pack(">BHH", 4, 0, 2))
    assert await asyncio.to_thread(raw_exchange, sim.pty, other_unit, expect=9, timeout=0.3) == b""
    unknown_function = frame(1, bytes([0x41, 0, 0]))
    reply = await asyncio.to_thread(raw_exchange, sim.pty, unknown_function, expect=5)
    assert reply == frame(1, bytes([0xC1, 0x01]))
    rtu = (await sim.state())["rtu"]
    assert rtu["crc_errors"] == 1 and rtu["other_unit_frames"] == 1


async def test_broadcast_write_is_executed_without_reply(sim: Any) -> None:
    request = frame(0, struct.pack(">BHH", 6, 201, 450))
    assert await asyncio.to_thread(raw_exchange, sim.pty, request, expect=8, timeout=0.3) == b""
    assert (await sim.state())["registers"]["dhw_setpoint"] == 45.0


async def test_dropped_replies_time_out_and_service_resumes(sim: Any) -> None:
    client = await rtu_client(sim.pty, timeout=0.3)
    try:
        await sim.control("/comms", {"drop": 1.0})
        with pytest.raises(PymodbusError):
            await client.read_input_registers(0, count=2, device_id=1)
        await sim.control("/comms", {"drop": 0.0})
        client.close()
        client = await rtu_client(sim.pty)
        assert not (await client.read_input_registers(0, count=2, device_id=1)).isError()
        assert (await sim.state())["comms"]["dropped"] >= 1
    finally:
        client.close()


async def test_corrupted_replies_fail_the_crc_check_at_the_master(sim: Any) -> None:
    await sim.control("/comms", {"corrupt": 1.0})
    request = frame(1, struct.pack(">BHH", 4, 0, 2))
    reply = await asyncio.to_thread(raw_exchange, sim.pty, request, expect=9)
    assert len(reply) == 9 and reply != frame(1, reply[1:-2]), "reply arrives but its CRC is wrong"
    assert (await sim.state())["comms"]["corrupted"] == 1


async def test_slow_replies_are_delayed(sim: Any) -> None:
    await sim.control("/comms", {"delay_ms": 300})
    client = await tcp_client(sim.tcp_port, timeout=2.0)
    try:
        started = time.monotonic()
        assert not (await client.read_input_registers(0, count=2, device_id=1)).isError()
        assert time.monotonic() - started >= 0.3
    finally:
        client.close()


async def test_bad_comms_settings_are_rejected_with_a_reason(sim: Any) -> None:
    from tests.conftest import http

    status, body = await http(sim.url + "/comms", "POST", {"drop": 1.5})
    assert status == 400 and "drop" in body["error"]
    status, body = await http(sim.url + "/fault", "POST", {"code": "F99"})
    assert status == 400 and "F28" in body["error"]
    status, body = await http(sim.url + "/fault", "POST", raw=b"{not json")
    assert status == 400 and "JSON" in body["error"]
    status, body = await http(sim.url + "/nope", "GET")
    assert status == 404 and "POST /fault" in body["endpoints"]
    status, body = await http(sim.url + "/state", "POST", {})
    assert status == 405


async def test_line_timing_emulation_holds_replies_for_the_wire_time(start_sim: Any) -> None:
    from hw_sim.rtu_server import LineSettings

    line = LineSettings(baud=9600, emulate_timing=True)
    sim = await start_sim(line=line)
    request = frame(1, struct.pack(">BHH", 4, 100, 21))
    started = time.monotonic()
    reply = await asyncio.to_thread(raw_exchange, sim.pty, request, expect=5 + 42, timeout=1.0)
    elapsed = time.monotonic() - started
    assert len(reply) == 47
    assert elapsed >= line.exchange_time_s(len(request), len(reply))  # about 63 ms at 9600 8E1


async def test_power_cycle_silences_the_controller_and_keeps_the_lockout(sim: Any) -> None:
    await sim.control("/demand", {"ch": "on"})
    await sim.control("/fault", {"code": "F28"})
    await sim.control("/advance", {"seconds": 60})
    assert (await sim.state())["status"] == "lockout"
    await sim.control("/power-cycle", {"off_s": 0.5})
    request = frame(1, struct.pack(">BHH", 4, 0, 2))
    assert await asyncio.to_thread(raw_exchange, sim.pty, request, expect=9, timeout=0.2) == b""
    await asyncio.sleep(0.5)
    reply = await asyncio.to_thread(raw_exchange, sim.pty, request, expect=9)
    assert struct.unpack(">H", reply[3:5])[0] == BoilerStatus.LOCKOUT


async def test_tcp_unknown_unit_and_broken_mbap(sim: Any) -> None:
    client = await tcp_client(sim.tcp_port)
    try:
        reply = await client.read_input_registers(0, count=1, device_id=9)
        assert isinstance(reply, ExceptionResponse) and reply.exception_code == 0x0B
    finally:
        client.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.tcp_port)
    writer.write(struct.pack(">HHHB", 1, 7, 6, 1) + struct.pack(">BHH", 4, 0, 1))  # protocol id 7
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b"", "server closes the connection"
    writer.close()
    assert (await sim.state())["tcp"]["protocol_errors"] == 1


async def test_degrade_starts_a_slow_fault_that_the_registers_then_show(sim: Any) -> None:
    from tests.conftest import http

    status, body = await http(sim.url + "/degrade", "POST", {"mode": "leak", "rate": 2.0})
    assert status == 200, body
    assert body["state"]["degradations"]["leak"]["rate_per_day"] == 2.0
    await sim.control("/advance", {"seconds": 86_400})
    state = await sim.state()
    assert state["degradations"]["leak"]["progress"] >= 2.0
    assert state["fault_code"] == "F22"
    await sim.control("/repair", {"code": "F22"})
    state = await sim.state()
    assert state["degradations"] == {}


async def test_bad_degradations_are_rejected_with_a_reason(sim: Any) -> None:
    from tests.conftest import http

    status, body = await http(sim.url + "/degrade", "POST", {"mode": "rust"})
    assert status == 400 and "electrode" in body["error"]
    status, body = await http(sim.url + "/degrade", "POST", {"mode": "leak", "rate": -1})
    assert status == 400 and "rate" in body["error"]
    status, body = await http(sim.url + "/degrade", "POST", {"mode": "leak", "rate": "fast"})
    assert status == 400 and "rate" in body["error"]
    status, body = await http(sim.url + "/degrade", "POST", {"rate": 1})
    assert status == 400 and "mode" in body["error"]
