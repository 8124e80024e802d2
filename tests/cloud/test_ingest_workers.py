"""``boilertwin cloud ingest --workers 2`` as a real process tree on a real broker: a worker
killed with SIGKILL in the middle of a stream (mid-batch: messages received, not yet acked) is
restarted under its own client id, and every message is stored exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from cloud.db import transaction
from cloud.models import Sample, Twin, Uplink
from cloud.registry import add_device
from protocols.cose import generate_private_key, seal
from protocols.messages import Reading, TelemetryBatch
from protocols.topics import TopicKind, topic
from tests.broker import DEVICE_IDS, Broker, free_port
from tests.cloud.stack import Stack, eventually

pytestmark = pytest.mark.integration

PER_DEVICE = 400


def children(pid: int) -> list[int]:
    """Live worker processes of `pid` (from /proc; not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        try:
            worker = b"spawn_main" in (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and worker:
            found.append(int(entry.name))
    return sorted(found)


async def publish(broker: Broker, device_id: str, key: Ed25519PrivateKey) -> None:
    async with broker.client(device_id, identifier=device_id) as client:
        for seq in range(1, PER_DEVICE + 1):
            now = int(time.time() * 1000)
            message = TelemetryBatch(
                dev=device_id,
                epoch=1,
                seq=seq,
                ts=now,
                sync=True,
                readings=(Reading("flow_temp", now, 40.0 + seq % 20),),
            )
            payload = seal(message, key, kid=device_id)
            await client.publish(topic(device_id, TopicKind.DATA), payload, qos=1)


async def test_a_killed_worker_is_restarted_and_nothing_is_lost_or_stored_twice(
    tmp_path: Path, broker: Broker, db_url: str
) -> None:
    stack = Stack(tmp_path / "cloud", broker, db_url)
    keys = {}
    with transaction(stack.sessions) as session:
        for device_id in DEVICE_IDS:
            keys[device_id] = generate_private_key()
            add_device(
                session, device_id, keys[device_id].public_key(), now_ms=int(time.time() * 1000)
            )
    port = free_port()
    log_path = tmp_path / "ingest.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import boilertwin; boilertwin.main()",
            "cloud",
            "ingest",
            "--config",
            str(stack.config),
            "--workers",
            "2",
            "--metrics-port",
            str(port),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    try:

        async def two_workers() -> bool:
            return len(children(process.pid)) == 2

        await eventually(two_workers, "two workers", timeout=30)

        async def metrics_up() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    answers = [
                        await client.get(f"http://127.0.0.1:{port + i}/metrics") for i in (0, 1)
                    ]
            except httpx.TransportError:
                return False
            return all("boilertwin_ingest_batch_messages" in a.text for a in answers)

        await eventually(metrics_up, "both workers' metrics", timeout=90)  # slow starts under load
        publishers = [asyncio.create_task(publish(broker, d, keys[d])) for d in DEVICE_IDS]

        def stored() -> int:
            with stack.sessions() as session:
                return session.scalar(select(func.count()).select_from(Uplink)) or 0

        async def under_way() -> bool:
            return stored() > PER_DEVICE // 2

        await eventually(under_way, "ingest under way", timeout=60, every=0.01)
        victim = children(process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        await asyncio.gather(*publishers)

        async def complete() -> bool:
            with stack.sessions() as session:
                twins = session.scalars(select(Twin)).all()
                return len(twins) == len(DEVICE_IDS) and all(
                    t.contiguous_seq == PER_DEVICE for t in twins
                )

        await eventually(complete, "every seq stored", timeout=120)
        survivors = children(process.pid)
        assert len(survivors) == 2 and victim not in survivors, "the killed worker is back"
        with stack.sessions() as session:
            assert stored() == len(DEVICE_IDS) * PER_DEVICE
            samples = session.scalar(select(func.count()).select_from(Sample))
            if samples != len(DEVICE_IDS) * PER_DEVICE:  # seen once in CI (0 samples): say more
                per_device = session.execute(
                    select(Sample.device_id, func.count()).group_by(Sample.device_id)
                ).all()
                log_tail = log_path.read_text()[-4000:]
                pytest.fail(
                    f"{samples} samples for {stored()} uplinks (per device {per_device}); "
                    f"ingest log ends:\n{log_tail}"
                )
            assert all(t.received == PER_DEVICE for t in session.scalars(select(Twin)))
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
        assert "exited (code -9)" in log_path.read_text()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await stack.close()
