"""Fleet benchmark: ingest through a real Mosquitto, 1 and 2 worker processes, both databases.

Run with ``make bench`` (or ``python -m tests.bench.bench_fleet``). Prints a table; asserts
nothing about speed, but counts lost and duplicated messages (they must read 0).

* `GATEWAYS` gateways, each with its own key and broker login (the production dynamic-security
  plugin, bulk-written before the broker starts), publish signed telemetry batches of 10
  readings at QoS 1 from one load process (asyncio, one MQTT connection per gateway).
* Saturation: every gateway publishes `PER_GATEWAY` messages as fast as the broker acks
  them; the figure is messages stored per second from the first publish to the last commit.
* Latency: the same at a fixed offered load (a share of the saturated rate); p50 / p95 of
  publish (the message's signed ts, sealed at publish time) to store (``received_ms``).
* The raw Ed25519 verify rate is timed in the same run, over at least `VERIFY_SECONDS`.

All of it shares this machine's cores: the load process, Mosquitto, the workers and the
database. The figures are a floor for a real deployment, where they run on separate hosts.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from cloud.db import make_engine, transaction, upgrade
from cloud.dynsec import DynsecFile
from cloud.models import Sample, Uplink
from cloud.registry import add_device
from protocols.cose import generate_private_key, seal
from protocols.messages import Quality, Reading, TelemetryBatch
from protocols.topics import TopicKind, topic
from tests.bench import resources
from tests.bench.bench_cloud import (
    POINTS,
    VERIFY_SECONDS,
    drop_database,
    postgres_database,
    verify_rate,
)
from tests.broker import CLOUD_PASSWORD, Broker
from tests.cloud.stack import Stack

GATEWAYS = int(os.environ.get("BENCH_FLEET_GATEWAYS", "200"))
PER_GATEWAY = int(os.environ.get("BENCH_FLEET_MESSAGES", "60"))
LOAD_SHARES = (0.25, 0.5, 0.8)


class Fleet:
    """Gateways with keys, registered in the cloud and on the broker."""

    def __init__(self, count: int) -> None:
        self.ids = [f"fleet-{i:05d}" for i in range(count)]
        self.keys: dict[str, Ed25519PrivateKey] = {d: generate_private_key() for d in self.ids}
        self.seq = dict.fromkeys(self.ids, 0)

    def broker_logins(self, broker: Broker) -> None:
        document = DynsecFile.load(broker.dynsec_file)
        document.set_cloud(broker.cloud_user, CLOUD_PASSWORD)
        for device_id in self.ids:
            document.set_device(device_id, device_id)
        document.save(broker.dynsec_file)

    def register(self, stack: Stack) -> None:
        now = int(time.time() * 1000)
        with transaction(stack.sessions) as session:
            for device_id in self.ids:
                add_device(session, device_id, self.keys[device_id].public_key(), now_ms=now)

    def message(self, device_id: str) -> bytes:
        self.seq[device_id] += 1
        seq, ts = self.seq[device_id], int(time.time() * 1000)
        batch = TelemetryBatch(
            dev=device_id,
            epoch=1,
            seq=seq,
            ts=ts,
            sync=True,
            readings=tuple(
                Reading(point, ts - 500, float(i + seq % 5), Quality.GOOD)
                for i, point in enumerate(POINTS)
            ),
        )
        return seal(batch, self.keys[device_id], kid=device_id)


async def drive(broker: Broker, fleet: Fleet, per_gateway: int, rate: float | None) -> None:
    """Every gateway publishes `per_gateway` messages; at `rate` msgs/s for the fleet (None:
    as fast as the broker acks)."""
    interval = None if rate is None else len(fleet.ids) / rate

    async def gateway(device_id: str, offset: float) -> None:
        async with aiomqtt.Client(
            broker.host,
            broker.port,
            username=device_id,
            password=device_id,
            identifier=device_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            timeout=30,
        ) as client:
            await ready.wait()
            if interval is not None:
                await asyncio.sleep(offset * interval)
            start = time.perf_counter()
            for n in range(per_gateway):
                if interval is not None:
                    await asyncio.sleep(max(0.0, start + n * interval - time.perf_counter()))
                data_topic = topic(device_id, TopicKind.DATA)
                await client.publish(data_topic, fleet.message(device_id), qos=1)

    ready = asyncio.Event()
    count = len(fleet.ids)
    tasks = [asyncio.create_task(gateway(d, i / count)) for i, d in enumerate(fleet.ids)]
    await asyncio.sleep(1.0 + count / 200)  # connections up
    ready.set()
    await asyncio.gather(*tasks)


async def start_ingest(stack: Stack, workers: int, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import boilertwin; boilertwin.main()",
            "cloud",
            "ingest",
            "--config",
            str(stack.config),
            "--workers",
            str(workers),
            "--log-level",
            "WARNING",
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )


def stored(stack: Stack) -> int:
    with stack.sessions() as session:
        return session.scalar(select(func.count()).select_from(Uplink)) or 0


async def until_stored(stack: Stack, expected: int, timeout: float = 600) -> float:
    """Wait until `expected` uplinks are stored (or `timeout`); returns when, perf_counter."""
    deadline = time.perf_counter() + timeout
    while stored(stack) < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
    return time.perf_counter()


def latencies(stack: Stack, after_ms: int) -> list[float]:
    with stack.sessions() as session:
        rows = session.execute(
            select(Uplink.received_ms - Uplink.ts_ms).where(Uplink.ts_ms >= after_ms)
        ).all()
    return sorted(r[0] / 1000 for r in rows)


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, round(share * (len(values) - 1)))] if values else 0.0


async def one_setup(db_url: str, workers: int, workdir: Path) -> dict[str, Any]:
    """Saturated rate and the latency curve for `workers` workers on `db_url`."""
    broker = Broker(workdir / "broker")
    fleet = Fleet(GATEWAYS)
    fleet.broker_logins(broker)
    await broker.start()
    engine = make_engine(db_url)
    upgrade(engine)
    engine.dispose()
    stack = Stack(workdir / "cloud", broker, db_url, ingest_batch_max=200)
    fleet.register(stack)
    process = await start_ingest(stack, workers, workdir / "ingest.log")
    result: dict[str, Any] = {}
    try:
        await asyncio.sleep(3.0)  # the workers subscribe
        expected = GATEWAYS * PER_GATEWAY
        groups = {
            "broker": lambda: {broker.pid} if broker.pid else set(),
            "workers": lambda: resources.tree(process.pid),
            "database": (lambda: resources.named("postgres"))
            if db_url.startswith("postgresql")
            else (lambda: set()),
        }
        started = time.perf_counter()
        async with resources.Meter(groups) as meter:
            await drive(broker, fleet, PER_GATEWAY, None)
            finished = await until_stored(stack, expected, timeout=60)
        result["rate"] = stored(stack) / (finished - started - 1.0 - GATEWAYS / 200)
        result["resources"] = {
            name: (meter.cpu[name] * 1000 / expected, meter.peak_rss[name] / 2**20)
            for name in groups
        }
        curve = []
        for share in LOAD_SHARES:
            offered = share * result["rate"]
            per_gateway = max(5, int(offered * 10 / GATEWAYS))  # about 10 s of load
            before = stored(stack)
            mark = int(time.time() * 1000)
            await drive(broker, fleet, per_gateway, offered)
            await until_stored(stack, before + GATEWAYS * per_gateway, timeout=60)
            values = latencies(stack, mark)
            curve.append((offered, percentile(values, 0.5), percentile(values, 0.95)))
        result["curve"] = curve
        sent = sum(fleet.seq.values())
        with stack.sessions() as session:
            samples = session.scalar(select(func.count()).select_from(Sample)) or 0
        result["lost"] = sent - stored(stack)
        result["duplicated"] = samples // len(POINTS) - stored(stack)
    finally:
        process.terminate()
        await process.wait()
        await stack.close()
        await broker.kill()
    return result


def main() -> None:
    print(f"fleet bench on {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    rate = verify_rate()
    print(f"  raw Ed25519 verify, 1 core, timed over {VERIFY_SECONDS:.0f} s: {rate:,.0f} /s")
    print(
        f"  {GATEWAYS} gateways (own keys and broker logins), batches of {len(POINTS)} "
        f"readings at QoS 1 through Mosquitto; load, broker, workers and database share the "
        f"{os.cpu_count()} cores"
    )
    print(
        "  | database | workers | saturated msgs/s | % of verify | latency p50/p95 at offered "
        "load | lost | duplicated |"
    )
    print("  |---|---|---|---|---|---|---|")
    pg = postgres_database()
    backends: list[tuple[str, Any]] = [("SQLite", None)]
    if pg is not None:
        backends.append(("PostgreSQL", pg))
    used: list[tuple[str, int, dict[str, tuple[float, float]]]] = []
    try:
        for name, database in backends:
            for workers in (1, 2):
                with tempfile.TemporaryDirectory() as tmp:
                    if database is None:
                        url = f"sqlite:///{tmp}/fleet.db"
                    else:
                        url = database[1]
                        _reset(url)
                    result = asyncio.run(one_setup(url, workers, Path(tmp)))
                curve = "; ".join(
                    f"{offered:,.0f}/s: {p50 * 1000:,.0f}/{p95 * 1000:,.0f} ms"
                    for offered, p50, p95 in result["curve"]
                )
                print(
                    f"  | {name} | {workers} | {result['rate']:,.0f} | "
                    f"{result['rate'] / rate:.1%} | {curve} | {result['lost']} | "
                    f"{result['duplicated']} |"
                )
                used.append((name, workers, result["resources"]))
        print("  CPU-s per 1,000 messages / peak RSS while saturated (SQLite: in the workers):")
        for name, workers, figures in used:
            told = ", ".join(
                f"{group} {cpu:.2f} CPU-s / {rss:,.0f} MiB"
                for group, (cpu, rss) in figures.items()
                if cpu or rss
            )
            print(f"    {name}, {workers} worker(s): {told}")
    finally:
        if pg is not None:
            drop_database(*pg)


def _reset(url: str) -> None:
    """Empty the PostgreSQL database between setups (drop every table, then migrate)."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    engine.dispose()


if __name__ == "__main__":
    main()
