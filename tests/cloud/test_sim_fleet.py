"""`boilertwin sim fleet` against a real Mosquitto and a real `cloud serve` (and `cloud ingest`
workers): bulk-provisioned gateways with their own logins publish, lock out, go offline and
come back; whatever the broker does meanwhile (restart, queue overflow), the cloud ends up
with every seq of every gateway, stored once, and its watermarks confirm all of it."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from sqlalchemy import select

from cloud.models import Alarm, Twin
from tests.cloud.fleet_stack import GATEWAYS, fleet_stack, stop
from tests.cloud.stack import eventually

pytestmark = pytest.mark.integration


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
