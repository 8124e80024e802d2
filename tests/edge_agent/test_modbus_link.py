"""ModbusLink against the real simulator, over a pty (RTU, 8N1: see hw_sim/pty.py) and TCP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest

from edge_agent.errors import CommsError, CommsTimeout, DeviceException
from edge_agent.modbus_link import ModbusLink, SerialTarget, TcpTarget
from protocols.planner import ReadRequest, plan_reads
from protocols.reference import REFERENCE_MAP, RESET_REQUEST, BoilerStatus
from protocols.registers import Table

pytestmark = pytest.mark.integration

PLAN = plan_reads(REFERENCE_MAP.readable(), blocks=REFERENCE_MAP.blocks)
STATUS = next(r for r in PLAN if REFERENCE_MAP.point("status") in r.points)
RESET_ADDRESS = REFERENCE_MAP.point("reset_request").address
TIMEOUT_S = 0.2


def link_to(sim: Any, transport: str, **options: Any) -> ModbusLink:
    target = (
        SerialTarget(sim.pty, parity="N")
        if transport == "rtu"
        else TcpTarget("127.0.0.1", sim.tcp_port)
    )
    options.setdefault("timeout_s", TIMEOUT_S)
    return ModbusLink(target, device_id="boiler-1", **options)


async def read_all(link: ModbusLink) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for request in PLAN:
        raw = await link.read(request)
        assert len(raw) == request.count
        values.update(request.decode(raw, REFERENCE_MAP.word_order))
    return values


async def status(link: ModbusLink) -> BoilerStatus:
    return BoilerStatus(
        int(STATUS.decode(await link.read(STATUS), REFERENCE_MAP.word_order)["status"])
    )


@pytest.fixture
async def sim(start_sim: Callable[..., Any]) -> Any:
    return await start_sim(time_scale=20.0)


@pytest.mark.parametrize("transport", ["rtu", "tcp"])
async def test_reads_the_whole_reference_map(sim: Any, transport: str) -> None:
    async with link_to(sim, transport) as link:
        values = await read_all(link)
        assert {r.table for r in PLAN} == {
            Table.DISCRETE_INPUT,
            Table.INPUT_REGISTER,
            Table.HOLDING_REGISTER,
        }
        assert values["status"] in {s.value for s in BoilerStatus}
        assert values["serial_number"] == "BT24C-000001"
        assert values["model"] == "BT-24C"
        assert values["map_version"] == REFERENCE_MAP.version
        assert 0.9 < values["ch_pressure"] < 2.5
        assert 30 <= values["ch_setpoint"] <= 80
        assert isinstance(values["flame_on"], bool)
        truth = (await sim.state())["registers"]
        assert values["burner_starts"] == truth["burner_starts"]
        stats = link.stats
        assert stats.requests == stats.attempts == len(PLAN) and stats.connects == 1
        assert stats.retries == stats.timeouts == stats.exceptions == 0
        assert stats.bytes_sent > 0 and stats.bytes_received > stats.bytes_sent


@pytest.mark.parametrize("transport", ["rtu", "tcp"])
async def test_reset_write_clears_a_lockout(sim: Any, transport: str) -> None:
    await sim.control("/demand", {"ch": "on"})
    await sim.control("/fault", {"code": "F28"})
    await sim.control("/advance", {"seconds": 60})
    async with link_to(sim, transport) as link:
        assert await status(link) is BoilerStatus.LOCKOUT
        await link.write_register(RESET_ADDRESS, RESET_REQUEST)
        assert await status(link) is not BoilerStatus.LOCKOUT
        state = await sim.state()
        assert state["last_reset"] == "accepted" and state["registers"]["reset_count"] == 1


@pytest.mark.parametrize("transport", ["rtu", "tcp"])
async def test_exception_response_is_raised_once_and_the_link_goes_on(
    sim: Any, transport: str
) -> None:
    outside = ReadRequest(Table.INPUT_REGISTER, 500, 2, ())
    async with link_to(sim, transport) as link:
        with pytest.raises(DeviceException) as caught:
            await link.read(outside)
        error = caught.value
        assert error.exception_code == 2
        assert (error.function_code, error.address, error.device_id) == (4, 500, "boiler-1")
        assert "boiler-1" in str(error) and "500" in str(error)
        assert link.stats.attempts == 1 and link.stats.exceptions == 1, "not retried"
        with pytest.raises(DeviceException) as caught:
            await link.write_register(RESET_ADDRESS, 7)
        assert caught.value.exception_code == 3
        assert await status(link) in set(BoilerStatus)


@pytest.mark.parametrize("transport", ["rtu", "tcp"])
async def test_dropped_replies_time_out_after_the_retries_then_recover(
    sim: Any, transport: str
) -> None:
    async with link_to(sim, transport, retries=2) as link:
        await status(link)
        await sim.control("/comms", {"drop": 1.0})
        started = time.monotonic()
        with pytest.raises(CommsTimeout) as caught:
            await link.read(STATUS)
        elapsed = time.monotonic() - started
        assert caught.value.function_code == 4 and caught.value.device_id == "boiler-1"
        assert link.stats.attempts == 1 + 3 and link.stats.retries == 2
        assert link.stats.timeouts == 3
        assert (await sim.state())["comms"]["dropped"] == 3, "pymodbus must not retry on its own"
        assert 3 * TIMEOUT_S <= elapsed < 3 * TIMEOUT_S + 0.5
        await sim.control("/comms", {"drop": 0.0})
        assert await status(link) in set(BoilerStatus)


async def test_corrupted_replies_are_retried(sim: Any) -> None:
    async with link_to(sim, "rtu", retries=2) as link:
        await sim.control("/comms", {"corrupt": 0.5})
        failures = 0
        for _ in range(12):
            try:
                await status(link)
            except CommsTimeout:  # all three replies corrupted: 1 read in 8
                failures += 1
        corrupted = (await sim.state())["comms"]["corrupted"]
        stats = link.stats
        assert stats.timeouts == corrupted > 0, "a bad CRC is silence to the master"
        assert stats.retries == corrupted - failures, "every bad reply but a last one is retried"
        assert stats.requests - failures > 0


async def test_every_corrupted_reply_ends_in_a_timeout(sim: Any) -> None:
    async with link_to(sim, "rtu", retries=1) as link:
        await sim.control("/comms", {"corrupt": 1.0})
        with pytest.raises(CommsTimeout):
            await link.read(STATUS)
        assert link.stats.attempts == 2
        assert (await sim.state())["comms"]["corrupted"] == 2


@pytest.mark.parametrize("transport", ["rtu", "tcp"])
async def test_slow_replies_time_out_and_a_late_reply_is_never_taken_for_another(
    sim: Any, transport: str
) -> None:
    bits = next(r for r in PLAN if r.table is Table.DISCRETE_INPUT)
    async with link_to(sim, transport, retries=0) as link:
        await sim.control("/comms", {"delay_ms": 300})
        with pytest.raises(CommsTimeout):
            await link.read(STATUS)
        await sim.control("/comms", {"delay_ms": 0})
        # The status reply, 100 ms late, arrives while the next read waits. A TCP master
        # tells it apart by transaction id; on RTU the link must spot the wrong function.
        if transport == "rtu":
            with pytest.raises(CommsError, match="function 4 reply") as caught:
                await link.read(bits)
            assert not isinstance(caught.value, CommsTimeout)
            assert link.stats.bad_replies == 1
        else:
            assert len(await link.read(bits)) == bits.count
        await asyncio.sleep(0.2)
        for request in PLAN:
            assert len(await link.read(request)) == request.count


@pytest.mark.parametrize("transport", ["rtu", "tcp"])
async def test_a_stopped_simulator_gives_comms_errors_not_hangs(sim: Any, transport: str) -> None:
    async with link_to(sim, transport, retries=1) as link:
        await status(link)
        sim.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sim.task
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(CommsError):
                await link.read(STATUS)
            assert time.monotonic() - started < 2 * TIMEOUT_S + 0.5


async def test_tcp_reconnects_after_the_controller_drops_the_connection(sim: Any) -> None:
    async with link_to(sim, "tcp") as link:
        await status(link)
        await sim.control("/power-cycle", {"off_s": 0.1})
        await asyncio.sleep(0.3)
        assert await status(link) in set(BoilerStatus)
        assert link.stats.connects == 2


async def test_requests_from_two_tasks_share_the_bus_in_turn(sim: Any) -> None:
    async with link_to(sim, "rtu") as link:
        results = await asyncio.gather(*(link.read(r) for r in PLAN * 3))
        assert [len(r) for r in results] == [r.count for r in PLAN * 3]
        assert link.stats.retries == 0


async def test_a_closed_link_refuses_requests(sim: Any) -> None:
    link = link_to(sim, "tcp")
    await link.read(STATUS)
    await link.aclose()
    await link.aclose()
    assert not link.connected
    with pytest.raises(RuntimeError):
        await link.read(STATUS)
