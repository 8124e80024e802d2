"""Signed agent updates on real processes: real wheels of this project (built with another
version), real virtual environments, a ``current`` link and the guard, run under a small
supervisor that does what systemd does (guard, start, restart on exit). A good release is
installed beside the running one, switched to, confirmed healthy; a release that crashes at
start is rolled back by the guard; forged, wrong-hash, truncated and downgrade manifests are
refused with the agent running on and nothing lost."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge_agent.updater import CRASH_FILE_ENV, EXIT_RESTART
from protocols.cose import generate_private_key
from protocols.messages import AckState, Birth, CommandName, RejectReason
from tests.broker import Broker
from tests.edge_agent.harness import CloudListener, Gateway, listening, publish_command, toml_text

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GUARD = ROOT / "edge_agent" / "guard.py"
TERMINAL = {AckState.SUCCEEDED, AckState.FAILED, AckState.REJECTED}


def build_release(work: Path, version: str, *, broken: bool = False) -> bytes:
    """This project's wheel, as release `version` (one that dies at start if `broken`)."""
    source = work / f"src-{version}"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "tests", "run", "__pycache__", "*.egg-info", "build", "node_modules"
        ),
    )
    init = source / "edge_agent" / "__init__.py"
    init.write_text(init.read_text().replace('"0.1.0"', f'"{version}"'))
    if broken:
        with (source / "edge_agent" / "agent.py").open("a") as f:
            f.write('\nraise RuntimeError("this release is broken")\n')
    out = work / f"wheel-{version}"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return next(out.glob("*.whl")).read_bytes()


class Artifacts:
    """A tiny HTTP server for artifacts, with ``Range`` (and a path that sends too little)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        files, requests = self.files, self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append((self.path, self.headers.get("Range")))
                data = files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                wanted = self.headers.get("Range")
                if wanted:
                    start = int(wanted.split("=")[1].split("-")[0])
                body = data[start:]
                self.send_response(206 if wanted else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def close(self) -> None:
        self.server.shutdown()


class Supervisor:
    """What systemd does for the agent: guard, start ``current``, restart whenever it ends."""

    def __init__(self, gateway: Gateway, current: Path) -> None:
        self.gateway, self.current = gateway, current
        self.crash_file = gateway.directory / "crash-at"
        """Name an update step in this file and the agent dies there once (`crash_point`)."""
        self.exits: list[int] = []
        self.guard_said: list[str] = []
        self.stopping = False
        self.process: asyncio.subprocess.Process | None = None
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        config = self.gateway.directory / "edge.toml"
        config.write_text(toml_text(self.gateway.config))
        log = self.gateway.directory / "agent.log"
        while not self.stopping:
            guard = await asyncio.create_subprocess_exec(
                sys.executable,
                str(GUARD),
                "--state-dir",
                str(self.gateway.directory / "state"),
                stderr=asyncio.subprocess.PIPE,
            )
            _, said = await guard.communicate()
            self.guard_said.append(said.decode().strip())
            self.process = await asyncio.create_subprocess_exec(
                str(self.current / "bin" / "python"),
                "-c",
                "import boilertwin; boilertwin.main()",
                "edge",
                "run",
                "--config",
                str(config),
                stdout=open(log, "ab"),  # noqa: SIM115
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.gateway.directory,
                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
                | {"PYTHONUNBUFFERED": "1", CRASH_FILE_ENV: str(self.crash_file)},
            )
            self.exits.append(await self.process.wait())
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        self.stopping = True
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
        await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def rig(
    tmp_path: Path, broker: Broker, start_sim: Callable[..., Any]
) -> AsyncIterator[tuple[Gateway, CloudListener, Supervisor, Artifacts]]:
    sim = await start_sim()
    current = tmp_path / "current"
    current.symlink_to(Path(sys.prefix))
    gateway = Gateway(
        tmp_path / "gateway",
        broker,
        sim.pty,
        update={
            "releases_dir": str(tmp_path / "releases"),
            "current_link": str(current),
            "trial_s": 60,
            "max_starts": 2,
        },
    )
    artifacts = Artifacts()
    async with listening(broker, gateway) as cloud:
        supervisor = Supervisor(gateway, current)
        await cloud.wait_for(births(1), timeout=30)
        try:
            yield gateway, cloud, supervisor, artifacts
        finally:
            await supervisor.stop()
            artifacts.close()


def births(count: int, version: str | None = None) -> Callable[[CloudListener], bool]:
    return lambda c: (
        sum(
            isinstance(r.message, Birth) and version in (None, r.message.agent_version)
            for r in c.received
        )
        >= count
    )


async def update(
    gateway: Gateway,
    broker: Broker,
    cloud: CloudListener,
    args: dict[str, Any],
    *,
    key: Any = None,
) -> tuple[list[AckState], Any]:
    command = replace(gateway.command(name=CommandName.UPDATE, ttl_ms=600_000), args=args)
    await publish_command(broker, gateway.device_id, gateway.signed(command, key))
    await cloud.wait_for(lambda c: any(s in TERMINAL for s in c.ack_states(command.id)), 120)
    acks = cloud.acks(command.id)
    return [a.state for a in acks], acks[-1] if acks else None


def manifest(
    artifacts: Artifacts, name: str, data: bytes, version: str, **over: Any
) -> dict[str, Any]:
    artifacts.files[name] = data
    return {
        "version": version,
        "url": artifacts.url(name),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "min_agent": "0.1.0",
        "rollout": 1,
    } | over


async def test_an_update_is_installed_beside_switched_confirmed_and_a_broken_one_undone(
    tmp_path: Path, rig: tuple[Gateway, CloudListener, Supervisor, Artifacts], broker: Broker
) -> None:
    gateway, cloud, supervisor, artifacts = rig
    good, bad = await asyncio.gather(
        asyncio.to_thread(build_release, tmp_path, "0.2.0"),
        asyncio.to_thread(build_release, tmp_path, "0.3.0", broken=True),
    )
    # -- bad inputs first: each refused, nothing installed, the agent carries on -----------
    forged = replace(
        gateway.command(name=CommandName.UPDATE),
        args=manifest(artifacts, "good.whl", good, "0.2.0"),
    )
    envelope = gateway.signed(forged, generate_private_key())
    await publish_command(broker, gateway.device_id, envelope)
    downgrade = manifest(artifacts, "good.whl", good, "0.1.0")
    states, last = await update(gateway, broker, cloud, downgrade)
    assert (
        states == [AckState.DELIVERED, AckState.REJECTED] and last.reason is RejectReason.DOWNGRADE
    )
    wrong = manifest(artifacts, "good.whl", good, "0.2.0", sha256="00" * 32)
    states, last = await update(gateway, broker, cloud, wrong)
    assert states == [AckState.DELIVERED, AckState.REJECTED]
    assert last.reason is RejectReason.BAD_ARTIFACT
    artifacts.files["short.whl"] = good[: len(good) // 2]
    truncated = manifest(artifacts, "good.whl", good, "0.2.0") | {"url": artifacts.url("short.whl")}
    states, last = await update(gateway, broker, cloud, truncated)
    assert last.reason is RejectReason.BAD_ARTIFACT
    assert cloud.acks(forged.id) == []  # a forged manifest is not even acknowledged
    assert not (tmp_path / "releases").exists() or not any((tmp_path / "releases").iterdir())
    assert supervisor.exits == []

    # -- a good release: installed beside, switched, restarted, confirmed ------------------
    states, last = await update(
        gateway, broker, cloud, manifest(artifacts, "good.whl", good, "0.2.0")
    )
    assert states == [AckState.DELIVERED, AckState.EXECUTING, AckState.SUCCEEDED], states
    assert last.observed["agent_version"] == "0.2.0"
    assert os.readlink(tmp_path / "current") == str(tmp_path / "releases" / "0.2.0")
    assert supervisor.exits == [EXIT_RESTART]
    await cloud.wait_for(births(1, "0.2.0"), 30)

    # -- a release that dies at start: the guard takes it back after max_starts -------------
    states, last = await update(
        gateway, broker, cloud, manifest(artifacts, "bad.whl", bad, "0.3.0")
    )
    assert states == [AckState.DELIVERED, AckState.EXECUTING, AckState.FAILED], states
    assert last.reason is RejectReason.ROLLED_BACK and last.observed["agent_version"] == "0.2.0"
    assert os.readlink(tmp_path / "current") == str(tmp_path / "releases" / "0.2.0")
    assert any("rolled back to 0.2.0" in said for said in supervisor.guard_said)
    await cloud.wait_for(births(2, "0.2.0"), 30)
    seqs = sorted({r.message.seq for r in cloud.received if r.kind.value != "state"})
    assert seqs == list(range(1, len(seqs) + 1)), "a message went missing across the updates"
    with contextlib.suppress(FileNotFoundError):
        assert not (gateway.directory / "state" / "update-pending.json").exists()
