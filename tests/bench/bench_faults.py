"""Fault bench: what a fleet loses when the broker restarts, a worker is killed or stalls, or
the cloud goes down, under load. Run with ``make bench`` (or ``python -m
tests.bench.bench_faults``). Prints a table; the lost and duplicated columns must read 0.

Each row: `GATEWAYS` simulated gateways (`boilertwin sim fleet`: own keys and logins, outboxes,
the cloud's watermarks) publish through a real Mosquitto to `cloud serve` plus
``cloud ingest --workers 2`` on PostgreSQL (SQLite if ``TEST_DATABASE_URL`` is not set),
while one fault is injected; then the gateways drain until every watermark has confirmed
their outbox (or `DRAIN_S`). "Lost" counts seqs the gateways sent that the cloud never
stored; "duplicated" counts messages applied more than once (each twin's ``received`` against
its distinct stored seqs). "Resent" is what the gateways sent again because the watermarks
said it was missing or late.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import func, select

from cloud.db import make_engine, upgrade
from cloud.models import Twin, Uplink
from tests.bench import resources
from tests.bench.bench_cloud import drop_database, postgres_database
from tests.cloud.fleet_stack import Fleet, fleet_stack, stop

GATEWAYS = int(os.environ.get("BENCH_FAULT_GATEWAYS", "200"))
TIME_SCALE = 120.0
DURATION_S = 2400.0  # simulated: 20 s of wall time
DRAIN_S = 90.0

Fault = Callable[[Fleet, asyncio.subprocess.Process], Awaitable[str]]


async def broker_restart(fleet: Fleet, workers: asyncio.subprocess.Process) -> str:
    await fleet.broker.stop()
    await asyncio.sleep(2.0)
    await fleet.broker.start()
    return "broker stopped 2 s, restarted"


async def worker_killed(fleet: Fleet, workers: asyncio.subprocess.Process) -> str:
    children = sorted(resources.tree(workers.pid) - {workers.pid})
    os.kill(children[0], signal.SIGKILL)
    return "one of 2 workers SIGKILLed (restarted by its parent)"


async def worker_stalled(fleet: Fleet, workers: asyncio.subprocess.Process) -> str:
    workers.send_signal(signal.SIGSTOP)
    await asyncio.sleep(6.0)
    workers.send_signal(signal.SIGCONT)
    return "2 workers stopped 6 s (SIGSTOP), queue cap 200"


async def cloud_down(fleet: Fleet, workers: asyncio.subprocess.Process) -> str:
    await fleet.stack.kill()
    await asyncio.sleep(8.0)
    await fleet.stack.start()
    return "cloud serve SIGKILLed, down 8 s"


FAULTS: list[tuple[Fault, dict[str, str] | None]] = [
    (broker_restart, None),
    (worker_killed, None),
    (worker_stalled, {"max_queued_messages": "200"}),
    (cloud_down, None),
]


async def one(db_url: str, fault: Fault, options: dict[str, str] | None, tmp: Path) -> str:
    async with fleet_stack(tmp, db_url, options, gateways=GATEWAYS) as fleet:
        workers = await fleet.workers(tmp / "workers.log", 2)
        try:
            await asyncio.sleep(3.0)
            settings = dataclasses.replace(
                fleet.settings(time_scale=TIME_SCALE, duration_s=DURATION_S, lockouts_per_day=0.0),
                drain_s=DRAIN_S,
            )
            running = asyncio.create_task(fleet.run(settings))
            await asyncio.sleep(6.0)
            what = await fault(fleet, workers)
            summary = await running
            await asyncio.sleep(2.0)
            with fleet.stack.sessions() as session:
                stored = dict(
                    session.execute(
                        select(Uplink.device_id, func.count()).group_by(Uplink.device_id)
                    ).all()
                )
                received = {t.device_id: t.received for t in session.scalars(select(Twin))}
            sent = sum(summary.last_seq.values())
            lost = sum(max(0, last - stored.get(d, 0)) for d, last in summary.last_seq.items())
            duplicated = sum(max(0, received.get(d, 0) - n) for d, n in stored.items())
            return (
                f"  | {what} | {sent:,} | {sent - lost:,} | {lost} | {duplicated} | "
                f"{summary.resent:,} | {summary.pending} |"
            )
        finally:
            await stop(workers)


def main() -> None:
    pg = postgres_database()
    name = "PostgreSQL" if pg is not None else "SQLite"
    print(f"fault bench on {os.cpu_count()} cores, Python {sys.version.split()[0]}, {name}")
    print(
        f"  {GATEWAYS} simulated gateways at {TIME_SCALE:.0f}x for {DURATION_S / 60:.0f} "
        "simulated minutes, cloud serve + cloud ingest --workers 2, one fault each:"
    )
    print(
        "  | fault | seqs sent | stored | lost | duplicated | resent by gateways | "
        "unconfirmed at the end |"
    )
    print("  |---|---|---|---|---|---|---|")
    try:
        for fault, options in FAULTS:
            with tempfile.TemporaryDirectory() as tmp:
                if pg is None:
                    url = f"sqlite:///{tmp}/faults.db"
                    upgrade_engine = make_engine(url)
                    upgrade(upgrade_engine)
                    upgrade_engine.dispose()
                else:
                    url = pg[1]
                    _reset(url)
                print(asyncio.run(one(url, fault, options, Path(tmp))), flush=True)
    finally:
        if pg is not None:
            drop_database(*pg)


def _reset(url: str) -> None:
    """An empty, migrated PostgreSQL database for the next row."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    upgrade(engine)
    engine.dispose()


if __name__ == "__main__":
    main()
