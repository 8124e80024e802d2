"""A simulated fleet against a real broker and `cloud serve` (and `cloud ingest` workers):
bulk-provisioned gateways (`boilertwin sim fleet keys`, `cloud devices import`), what the
fleet tests and the fault bench share."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from typer.testing import CliRunner

import boilertwin
from cloud.models import Twin, Uplink
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
            drain_s=120.0,  # returns as soon as every outbox is confirmed
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
