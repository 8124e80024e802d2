"""Benchmark: how long one poll cycle of the reference map takes over the simulated RTU line.

Run with ``make bench``. Prints figures; asserts nothing (timing goals live here, not in tests).
A poll cycle is the planner's reads for every readable point of the reference map.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pymodbus.client import AsyncModbusSerialClient

from hw_sim.rtu_server import LineSettings
from hw_sim.runner import SimSettings, Simulator
from protocols.planner import plan_reads
from protocols.reference import REFERENCE_MAP

CYCLES = 40


async def measure(line: LineSettings, plan: tuple, workdir: Path) -> list[float]:
    sim = Simulator(SimSettings(pty=str(workdir / f"b{line.baud}{line.emulate_timing}"), line=line))
    ready = asyncio.Event()
    task = asyncio.create_task(sim.run(ready=lambda _: ready.set()))
    await ready.wait()
    assert sim.rtu is not None
    client = AsyncModbusSerialClient(
        sim.rtu.path, baudrate=line.baud, parity="N", timeout=2, retries=0
    )
    await client.connect()
    readers = {
        1: client.read_coils,
        2: client.read_discrete_inputs,
        3: client.read_holding_registers,
        4: client.read_input_registers,
    }
    cycles = []
    try:
        for _ in range(CYCLES):
            started = time.perf_counter()
            for request in plan:
                reply = await readers[request.function_code](
                    request.address, count=request.count, device_id=1
                )
                assert not reply.isError(), reply
            cycles.append(time.perf_counter() - started)
    finally:
        client.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return cycles


async def main() -> None:
    points = REFERENCE_MAP.readable()
    plan = plan_reads(points, blocks=REFERENCE_MAP.blocks)
    naive = len(points)
    registers = sum(r.count for r in plan)
    print(
        f"reference map: {len(points)} readable points -> {len(plan)} planned reads "
        f"({registers} registers/bits) instead of {naive} one-point reads"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for line in (
            LineSettings(emulate_timing=False),
            LineSettings(baud=19200, emulate_timing=True),
            LineSettings(baud=9600, emulate_timing=True),
        ):
            cycles = await measure(line, plan, Path(tmp))
            label = f"{line.describe()} timing {'on ' if line.emulate_timing else 'off'}"
            median = statistics.median(cycles) * 1000
            print(
                f"  {label}: poll cycle median {median:6.1f} ms, p95 "
                f"{sorted(cycles)[int(0.95 * len(cycles))] * 1000:6.1f} ms, "
                f"{len(plan) / statistics.median(cycles):6.1f} requests/s"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
