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
import time
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


RESTART_ROUNDS = 20
TERMINAL = ("succeeded", "failed", "rejected", "expired", "cancelled")


async def restarts_under_load(db_url: str, tmp: Path) -> str:
    """Restart round trips (API 202 to ``succeeded``) to locked-out gateways of the fleet
    while the whole fleet publishes: the cloud, broker and workers loaded, the gateway side
    simulated (it acks at once; the real agent's read-back is in bench_cloud)."""
    from cloud.domain import Role
    from tests.bench.bench_cloud import _summary

    async with fleet_stack(tmp, db_url, None, gateways=GATEWAYS) as fleet:
        workers = await fleet.workers(tmp / "workers.log", 2)
        fleet.stack.user("sue", Role.SUPPORT)
        try:
            await asyncio.sleep(3.0)
            settings = fleet.settings(
                time_scale=TIME_SCALE, duration_s=2 * DURATION_S, lockouts_per_day=6.0
            )
            running = asyncio.create_task(fleet.run(settings))
            await asyncio.sleep(6.0)
            times: list[float] = []
            tried: set[str] = set()
            while len(times) < RESTART_ROUNDS and not running.done():
                with fleet.stack.sessions() as session:
                    locked = [
                        d
                        for d in session.scalars(select(Twin.device_id).where(Twin.status == 7))
                        if d not in tried
                    ]
                if not locked:
                    await asyncio.sleep(0.2)
                    continue
                tried.add(locked[0])
                started = time.perf_counter()
                response = await fleet.stack.restart("sue", locked[0])
                if response.status_code != 202:
                    continue  # e.g. the lockout cleared meanwhile: not a round
                command_id = response.json()["id"]
                while True:
                    command = await fleet.stack.command("sue", command_id)
                    if command["state"] in TERMINAL:
                        break
                    await asyncio.sleep(0.01)
                if command["state"] == "succeeded":
                    times.append(time.perf_counter() - started)
            summary = await running
            told = _summary(times)[0] if times else "no round completed"
            sent = sum(summary.sent.values())
            return (
                f"  restart round trip while {GATEWAYS} gateways publish ({sent:,} "
                f"messages in {settings.duration_s / TIME_SCALE:.0f} s), {len(times)} rounds: "
                f"{told}"
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
                url = _fresh(pg, tmp)
                print(asyncio.run(one(url, fault, options, Path(tmp))), flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            url = _fresh(pg, tmp)
            print(asyncio.run(restarts_under_load(url, Path(tmp))), flush=True)
    finally:
        if pg is not None:
            drop_database(*pg)


def _fresh(pg: tuple[str, str] | None, tmp: str) -> str:
    """An empty, migrated database: SQLite in `tmp`, or the bench's PostgreSQL emptied."""
    if pg is None:
        url = f"sqlite:///{tmp}/faults.db"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url
    _reset(pg[1])
    return pg[1]


def _reset(url: str) -> None:
    """An empty, migrated PostgreSQL database for the next row."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    upgrade(engine)
    engine.dispose()


if __name__ == "__main__":
    main()
