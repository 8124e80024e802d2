"""``boilertwin sim fleet`` against the real thing: keys made by ``sim fleet keys``, registered
by ``cloud devices import --dynsec`` (broker logins in the production plugin), a real
Mosquitto and a real ``cloud serve``. Gateways lock out, go offline with a backlog and come
back; the cloud ends up with every seq of every gateway, and its watermarks confirm them."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

import boilertwin
from cloud.models import Alarm, Twin, Uplink
from hw_sim.fleet import FleetSettings, load_cloud_keys, load_identities, run_fleet
from tests.broker import CLOUD_PASSWORD, Broker
from tests.cloud.stack import Stack, eventually

pytestmark = pytest.mark.integration

GATEWAYS = 40


async def test_a_simulated_fleet_is_stored_whole(tmp_path: Path, db_url: str) -> None:
    cli = CliRunner()
    made = cli.invoke(
        boilertwin.app,
        ["sim", "fleet", "keys", "--count", str(GATEWAYS), "--out", str(tmp_path / "fleet")],
    )
    assert made.exit_code == 0, made.output
    broker = Broker(tmp_path / "broker")
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
        assert len(identities) == GATEWAYS
        settings = FleetSettings(
            broker_host=broker.host,
            broker_port=broker.port,
            time_scale=600.0,  # 10 simulated minutes a second
            duration_s=3600.0,
            lockouts_per_day=40.0,
            offline_share=0.25,
            offline_s=900.0,
            resend_after_s=2.0,
            drain_s=60.0,
        )
        summary = await run_fleet(identities, load_cloud_keys(stack.directory / "keys"), settings)
        assert summary.lockouts > 0 and summary.offline > 0 and not summary.refused
        assert summary.sent["data"] > GATEWAYS * 30 and summary.confirmed > 0
        assert summary.pending == 0, summary.unconfirmed

        async def whole() -> bool:
            with stack.sessions() as session:
                twins = {t.device_id: t for t in session.scalars(select(Twin))}
            return all(
                twins[d].max_seq == seq and twins[d].contiguous_seq == seq
                for d, seq in summary.last_seq.items()
            )

        await eventually(whole, "every seq of every gateway stored", timeout=60)
        with stack.sessions() as session:
            lockouts = session.scalars(select(Alarm).where(Alarm.kind == "lockout")).all()
            online = session.scalars(select(Twin.connection)).all()
        assert len(lockouts) == summary.lockouts
        assert set(online) <= {"online", "offline"}
    finally:
        await stack.close()
        await broker.kill()
        await asyncio.sleep(0)


async def test_broker_restart_mid_stream_with_three_workers(tmp_path: Path, db_url: str) -> None:
    """The broker goes down and comes back while a fleet publishes to `cloud serve` and a
    `cloud ingest --workers 2` beside it: every seq of every gateway is stored, once."""
    cli = CliRunner()
    made = cli.invoke(
        boilertwin.app,
        ["sim", "fleet", "keys", "--count", str(GATEWAYS), "--out", str(tmp_path / "fleet")],
    )
    assert made.exit_code == 0, made.output
    broker = Broker(tmp_path / "broker")
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
    workers: asyncio.subprocess.Process | None = None
    try:
        await stack.start()
        with (tmp_path / "workers.log").open("wb") as log:
            workers = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "import boilertwin; boilertwin.main()",
                "cloud", "ingest", "--config", str(stack.config), "--workers", "2",
                stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        identities = load_identities(tmp_path / "fleet" / "keys.csv", passwords)
        settings = FleetSettings(
            broker_host=broker.host,
            broker_port=broker.port,
            time_scale=600.0,
            duration_s=4800.0,  # 8 s
            lockouts_per_day=0.0,
            resend_after_s=2.0,
            drain_s=60.0,
        )
        fleet = asyncio.create_task(
            run_fleet(identities, load_cloud_keys(stack.directory / "keys"), settings)
        )
        await asyncio.sleep(3.0)
        await broker.stop()
        await asyncio.sleep(1.0)
        await broker.start()
        summary = await fleet
        assert summary.connects > GATEWAYS, "every gateway reconnected"
        assert summary.pending == 0, summary.unconfirmed

        async def whole() -> bool:
            with stack.sessions() as session:
                twins = {t.device_id: t for t in session.scalars(select(Twin))}
            return all(
                twins[d].max_seq == seq and twins[d].contiguous_seq == seq
                for d, seq in summary.last_seq.items()
            )

        await eventually(whole, "every seq of every gateway stored", timeout=90)
        with stack.sessions() as session:
            stored = session.scalar(select(func.count()).select_from(Uplink))
            received = {t.device_id: t.received for t in session.scalars(select(Twin))}
        assert stored == sum(summary.last_seq.values()), "each seq stored once"
        assert received == summary.last_seq, "each applied once"
    finally:
        if workers is not None and workers.returncode is None:
            workers.terminate()
            await workers.wait()
        await stack.close()
        await broker.kill()
