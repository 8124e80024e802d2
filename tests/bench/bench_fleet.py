"""Fleet benchmark: ingest through a real Mosquitto, 1 and 2 worker processes, both databases.

Run with ``make bench`` (or ``python -m tests.bench.bench_fleet``). Prints a table; asserts
nothing about speed, but counts lost and duplicated messages (they must read 0).

* For each fleet size in `GATEWAYS`: that many gateways, each with its own key and broker
  login (the production dynamic-security plugin, bulk-written before the broker starts),
  publish signed telemetry batches of 10 readings at QoS 1 from one load process (asyncio,
  one MQTT connection per gateway).
* Saturation: the fleet publishes `SATURATION_MESSAGES` (at least 3 per gateway) as fast as
  the broker acks them; the figure is messages stored per second from the first publish to
  the last commit. The gateways connect once, `CONNECTING` at a time, before any load.
* Latency: the same at a fixed offered load (a share of the saturated rate); p50 / p95 of
  publish (the message's signed ts, sealed at publish time) to store (``received_ms``).
* The raw Ed25519 verify rate is timed in the same run, over at least `VERIFY_SECONDS`.

All of it shares this machine's cores: the load process, Mosquitto, the workers and the
database. The figures are a floor for a real deployment, where they run on separate hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
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

GATEWAYS = tuple(int(n) for n in os.environ.get("BENCH_FLEET_GATEWAYS", "1000,10000").split(","))
"""Fleet sizes to measure, one after another."""
SATURATION_MESSAGES = int(os.environ.get("BENCH_FLEET_MESSAGES", "30000"))
"""Messages in the saturation run, spread over the fleet (at least 3 per gateway)."""
CONNECTING = 200
"""Gateways logging in at once while the fleet connects."""
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


class Connections:
    """One MQTT connection per gateway, opened once (at most `CONNECTING` at a time, so ten
    thousand logins do not storm the broker and the load process) and kept for every phase."""

    def __init__(self, broker: Broker, fleet: Fleet) -> None:
        self.broker, self.fleet = broker, fleet
        self.clients: dict[str, aiomqtt.Client] = {}
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Connections:
        await self._stack.__aenter__()
        gate = asyncio.Semaphore(CONNECTING)

        async def connect(device_id: str) -> None:
            client = aiomqtt.Client(
                self.broker.host,
                self.broker.port,
                username=device_id,
                password=device_id,
                identifier=device_id,
                protocol=aiomqtt.ProtocolVersion.V5,
                timeout=60,
                max_inflight_messages=20,
            )
            async with gate:
                await client.__aenter__()
            self.clients[device_id] = client

        try:
            await asyncio.gather(*(connect(d) for d in self.fleet.ids))
        finally:
            for client in self.clients.values():
                self._stack.push_async_exit(client)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.__aexit__(None, None, None)

    async def drive(self, per_gateway: int, rate: float | None) -> None:
        """Every gateway publishes `per_gateway` messages; at `rate` msgs/s for the fleet
        (None: as fast as the broker acks)."""
        ids = self.fleet.ids
        interval = None if rate is None else len(ids) / rate
        start = time.perf_counter()

        async def gateway(device_id: str, offset: float) -> None:
            client = self.clients[device_id]
            data_topic = topic(device_id, TopicKind.DATA)
            for n in range(per_gateway):
                if interval is not None:
                    due = start + (offset + n) * interval
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                await client.publish(data_topic, self.fleet.message(device_id), qos=1)

        await asyncio.gather(*(gateway(d, i / len(ids)) for i, d in enumerate(ids)))


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


async def subscribed(broker: Broker, workers: int, timeout: float = 60.0) -> None:
    """Wait until every worker's subscription is acknowledged (the broker's log says so)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        log = broker.log_file.read_text(errors="replace") if broker.log_file.exists() else ""
        if all(_last_suback(log, i) for i in range(workers)):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{workers} ingest worker(s) did not subscribe in {timeout:.0f} s")


def _last_suback(log: str, worker: int) -> str:
    marker = f"-w{worker}"
    for line in reversed(log.splitlines()):
        if "Sending SUBACK to bt-cloud-" in line and line.rstrip().endswith(marker):
            return line
    return ""


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


async def one_setup(db_url: str, gateways: int, workers: int, workdir: Path) -> dict[str, Any]:
    """Saturated rate and the latency curve for `gateways` gateways and `workers` workers."""
    broker = Broker(workdir / "broker")
    fleet = Fleet(gateways)
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
        # Before any load: a message published with no subscriber yet is answered "no
        # matching subscribers" (0x10), which this load generator does not resend.
        await subscribed(broker, workers)
        async with Connections(broker, fleet) as connections:
            per_gateway = max(3, SATURATION_MESSAGES // gateways)
            expected = gateways * per_gateway
            groups = {
                "broker": lambda: {broker.pid} if broker.pid else set(),
                "workers": lambda: resources.tree(process.pid),
                "database": (lambda: resources.named("postgres"))
                if db_url.startswith("postgresql")
                else (lambda: set()),
            }
            started = time.perf_counter()
            async with resources.Meter(groups) as meter:
                await connections.drive(per_gateway, None)
                finished = await until_stored(stack, expected)
            result["rate"] = stored(stack) / (finished - started)
            result["resources"] = {
                name: (meter.cpu[name] * 1000 / expected, meter.peak_rss[name] / 2**20)
                for name in groups
            }
            curve = []
            for share in LOAD_SHARES:
                offered = share * result["rate"]
                # about 10 s of load, and every gateway sends at least once
                per_gateway = max(1, round(offered * 10 / gateways))
                before = stored(stack)
                mark = int(time.time() * 1000)
                await connections.drive(per_gateway, offered)
                await until_stored(stack, before + gateways * per_gateway)
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
        f"  gateways with their own keys and broker logins, batches of {len(POINTS)} readings "
        f"at QoS 1 through Mosquitto, {SATURATION_MESSAGES:,} messages when saturated; load, "
        f"broker, workers and database share the {os.cpu_count()} cores"
    )
    print(
        "  | gateways | database | workers | saturated msgs/s | % of verify | latency p50/p95 "
        "at offered load | lost | duplicated |"
    )
    print("  |---|---|---|---|---|---|---|---|")
    pg = postgres_database()
    backends: list[tuple[str, Any]] = [("SQLite", None)]
    if pg is not None:
        backends.append(("PostgreSQL", pg))
    used: list[tuple[int, str, int, dict[str, tuple[float, float]]]] = []
    try:
        for gateways in GATEWAYS:
            for name, database in backends:
                for workers in (1, 2):
                    result = _run(database, gateways, workers)
                    curve = "; ".join(
                        f"{offered:,.0f}/s: {p50 * 1000:,.0f}/{p95 * 1000:,.0f} ms"
                        for offered, p50, p95 in result["curve"]
                    )
                    print(
                        f"  | {gateways:,} | {name} | {workers} | {result['rate']:,.0f} | "
                        f"{result['rate'] / rate:.1%} | {curve} | {result['lost']} | "
                        f"{result['duplicated']} |",
                        flush=True,
                    )
                    used.append((gateways, name, workers, result["resources"]))
        print("  CPU-s per 1,000 messages / peak RSS while saturated (SQLite: in the workers):")
        for gateways, name, workers, figures in used:
            told = ", ".join(
                f"{group} {cpu:.2f} CPU-s / {rss:,.0f} MiB"
                for group, (cpu, rss) in figures.items()
                if cpu or rss
            )
            print(f"    {gateways:,} gateways, {name}, {workers} worker(s): {told}")
    finally:
        if pg is not None:
            drop_database(*pg)


def _run(database: Any, gateways: int, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        if database is None:
            url = f"sqlite:///{tmp}/fleet.db"
        else:
            url = database[1]
            _reset(url)
        return asyncio.run(one_setup(url, gateways, workers, Path(tmp)))


def _reset(url: str) -> None:
    """Empty the PostgreSQL database between setups (drop every table, then migrate)."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    engine.dispose()


if __name__ == "__main__":
    main()
