"""`boilertwin sim fleet` against a real Mosquitto and a real `cloud serve` (and `cloud ingest`
workers): bulk-provisioned gateways with their own logins publish, lock out, go offline and
come back; whatever the broker does meanwhile (restart, queue overflow), the cloud ends up
with every seq of every gateway, stored once, and its watermarks confirm all of it."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

import boilertwin
from cloud.models import Alarm, Twin, Uplink
from hw_sim.fleet import (
    FleetSettings,
    Identity,
    Summary,
    load_cloud_keys,
    load_identities,
    run_fleet,
)
from tests.broker import CLOUD_PASSWORD, Broker
from tests.cloud.stack import Stack, eventually

pytestmark = pytest.mark.integration

GATEWAYS = 40


@dataclass
class Fleet:
    broker: Broker
    stack: Stack
    identities: list[Identity]

    def settings(self, **options: float) -> FleetSettings:
        return FleetSettings(
            broker_host=self.broker.host,
            broker_port=self.broker.port,
            resend_after_s=5.0,  # the agent's is 2 minutes; the cloud's watermarks come each 0.5 s
            drain_s=60.0,
            **options,  # type: ignore[arg-type]
        )

    async def run(self, settings: FleetSettings) -> Summary:
        keys = load_cloud_keys(self.stack.directory / "keys")
        return await run_fleet(self.identities, keys, settings)

    async def workers(self, log: Path, count: int) -> asyncio.subprocess.Process:
        """`cloud ingest --workers count` beside `cloud serve`, on the same shared group."""
        with log.open("wb") as out:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-c", "import boilertwin; boilertwin.main()",
                "cloud", "ingest", "--config", str(self.stack.config), "--workers", str(count),
                stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

    async def assert_stored_whole(self, summary: Summary) -> None:
        """Every seq of every gateway stored, each once, each applied once."""
        assert summary.pending == 0, summary.unconfirmed

        async def whole() -> bool:
            with self.stack.sessions() as session:
                twins = {t.device_id: t for t in session.scalars(select(Twin))}
            return all(
                twins[d].max_seq == seq and twins[d].contiguous_seq == seq
                for d, seq in summary.last_seq.items()
            )

        await eventually(whole, "every seq of every gateway stored", timeout=90)
        with self.stack.sessions() as session:
            stored = session.scalar(select(func.count()).select_from(Uplink))
            received = {t.device_id: t.received for t in session.scalars(select(Twin))}
        assert stored == sum(summary.last_seq.values()), "each seq stored once"
        assert received == summary.last_seq, "each applied once"


@asynccontextmanager
async def fleet_stack(
    tmp_path: Path,
    db_url: str,
    broker_options: Mapping[str, str] | None = None,
    gateways: int = GATEWAYS,
) -> AsyncIterator[Fleet]:
    """`gateways` simulated gateways bulk-imported (registry and broker logins), a broker with
    the project's config (and `broker_options`), and `cloud serve` with quick watermarks."""
    cli = CliRunner()
    made = cli.invoke(
        boilertwin.app,
        ["sim", "fleet", "keys", "--count", str(gateways), "--out", str(tmp_path / "fleet")],
    )
    assert made.exit_code == 0, made.output
    broker = Broker(tmp_path / "broker", overrides=broker_options)
    broker.add_user(broker.cloud_user, CLOUD_PASSWORD)
    passwords = tmp_path / "passwords.csv"
    imported = cli.invoke(
        boilertwin.app,
        [
            "cloud", "devices", "import", str(tmp_path / "fleet" / "devices.csv"),
            "--db", db_url, "--dynsec", str(broker.dynsec_file), "--passwords-out", str(passwords),
        ],
    )  # fmt: skip
    assert imported.exit_code == 0, imported.output
    await broker.start()
    stack = Stack(
        tmp_path / "cloud", broker, db_url, watermark_interval_s=0.5, watermark_check_s=0.2
    )
    try:
        await stack.start()
        identities = load_identities(tmp_path / "fleet" / "keys.csv", passwords)
        assert len(identities) == gateways
        yield Fleet(broker, stack, identities)
    finally:
        await stack.close()
        await broker.kill()
        await asyncio.sleep(0)


async def stop(process: asyncio.subprocess.Process | None) -> None:
    if process is not None and process.returncode is None:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        await process.wait()


async def test_a_simulated_fleet_is_stored_whole(tmp_path: Path, db_url: str) -> None:
    async with fleet_stack(tmp_path, db_url) as fleet:
        settings = fleet.settings(
            time_scale=600.0,  # 10 simulated minutes a second
            duration_s=3600.0,
            lockouts_per_day=40.0,
            offline_share=0.25,
            offline_s=900.0,
        )
        summary = await fleet.run(settings)
        assert summary.lockouts > 0 and summary.offline > 0 and not summary.refused
        assert summary.sent["data"] > GATEWAYS * 30 and summary.confirmed > 0
        await fleet.assert_stored_whole(summary)
        with fleet.stack.sessions() as session:
            lockouts = session.scalars(select(Alarm).where(Alarm.kind == "lockout")).all()
            online = session.scalars(select(Twin.connection)).all()
        assert len(lockouts) == summary.lockouts
        assert set(online) <= {"online", "offline"}


async def test_broker_restart_mid_stream_with_three_workers(tmp_path: Path, db_url: str) -> None:
    """The broker goes down and comes back while a fleet publishes to `cloud serve` and a
    `cloud ingest --workers 2` beside it (Mosquitto 2.0 does not restore shared subscriptions:
    what is published before the workers are back finds no subscriber)."""
    async with fleet_stack(tmp_path, db_url) as fleet:
        workers = await fleet.workers(tmp_path / "workers.log", 2)
        try:
            settings = fleet.settings(time_scale=600.0, duration_s=4800.0, lockouts_per_day=0.0)
            running = asyncio.create_task(fleet.run(settings))
            await asyncio.sleep(3.0)
            await fleet.broker.stop()
            await asyncio.sleep(1.0)
            await fleet.broker.start()
            summary = await running
            assert summary.connects > GATEWAYS, "every gateway reconnected"
            await fleet.assert_stored_whole(summary)
        finally:
            await stop(workers)


async def test_a_worker_far_behind_overflows_its_queue_and_nothing_is_lost(
    tmp_path: Path, db_url: str
) -> None:
    """A worker stops reading (SIGSTOP: a stuck process, a slow database) while the fleet
    publishes; the broker queues its share of the shared subscription up to a small
    `max_queued_messages` and then drops what it already PUBACKed to the gateways. The
    gateways keep those messages until a watermark covers them, so they are sent again."""
    options = {"max_queued_messages": "20", "sys_interval": "1"}
    async with fleet_stack(tmp_path, db_url, options) as fleet:
        workers = await fleet.workers(tmp_path / "workers.log", 1)
        try:

            async def worker_connected() -> bool:
                return "-w0 (" in fleet.broker.log_text()  # "New client connected ... as"

            await eventually(worker_connected, "the worker connected", timeout=30)
            settings = fleet.settings(time_scale=600.0, duration_s=4800.0, lockouts_per_day=0.0)
            running = asyncio.create_task(fleet.run(settings))
            await asyncio.sleep(1.0)
            workers.send_signal(signal.SIGSTOP)
            await asyncio.sleep(4.0)
            workers.send_signal(signal.SIGCONT)
            summary = await running
            assert "Outgoing messages are being dropped" in fleet.broker.log_text()
            metrics = (await fleet.stack.api.get("/metrics")).text
            dropped = [
                line
                for line in metrics.splitlines()
                if line.startswith('boilertwin_broker{figure="publish/messages/dropped"}')
            ]
            assert dropped and float(dropped[0].split()[-1]) > 0, "the drops are visible"
            assert summary.resent > 0
            await fleet.assert_stored_whole(summary)
        finally:
            await stop(workers)


async def test_a_cloud_outage_under_a_few_hundred_gateways_loses_nothing(
    tmp_path: Path, db_url: str
) -> None:
    """`cloud serve` is killed (SIGKILL, mid-batch) and stays down while 200 gateways keep
    publishing (thousands of messages queue at the broker for its persistent session), then
    comes back: everything arrives, once, and every outbox is confirmed empty."""
    async with fleet_stack(tmp_path, db_url, gateways=200) as fleet:
        settings = fleet.settings(time_scale=120.0, duration_s=3000.0, lockouts_per_day=0.0)
        running = asyncio.create_task(fleet.run(settings))
        await asyncio.sleep(4.0)
        await fleet.stack.kill()
        await asyncio.sleep(12.0)  # 24 simulated minutes of the whole fleet's traffic
        await fleet.stack.start()
        summary = await running
        assert sum(summary.sent.values()) > 200 * 20
        await fleet.assert_stored_whole(summary)
