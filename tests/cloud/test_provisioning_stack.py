"""Zero touch, on the real stack: a gateway with only a claim token (no device id, no key, no
broker password, no pinned cloud key) is started with ``boilertwin edge run`` next to a
simulated boiler on a pty; it claims its identity from ``boilertwin cloud serve``, which
registers it with the boiler's own serial and model, makes its login on the real Mosquitto
through the dynamic-security plugin, and its data reaches the twin. Replays, forgeries and
takeover attempts are refused with reasons while the gateway carries on."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cloud.domain import Role
from cloud.models import Device, ThreadEvent
from protocols.cose import generate_private_key, sign
from protocols.provisioning import CONTENT_TYPE, make_request
from tests.broker import Broker
from tests.cloud.stack import Stack, eventually
from tests.edge_agent.harness import toml_text

pytestmark = pytest.mark.integration

SIM_SERIAL, SIM_MODEL = "BT24C-000001", "BT-24C"
"""What the simulator's identity registers say (`hw_sim.boiler.Identity`)."""


def cli(stack: Stack, *args: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import boilertwin; boilertwin.main()",
            "cloud",
            *args,
            "--config",
            str(stack.config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def unclaimed_gateway(directory: Path, stack: Stack, pty: str, token: str) -> Path:
    """An edge.toml with no identity at all: Modbus, a claim token and the cloud's URL."""
    directory.mkdir(parents=True)
    (directory / "claim.token").write_text(token + "\n")
    config = {
        "device": {"key_file": "state/device.key", "state_dir": "state"},
        "modbus": {"transport": "rtu", "port": pty, "parity": "N", "timeout_s": 0.3},
        "report": {"poll_interval_s": 0.2, "batch_interval_s": 0.6, "heartbeat_s": 3600},
        "mqtt": {
            "keepalive_s": 10,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            "connect_timeout_s": 5,
        },
        "clock": {"trust": "system"},
        "health": {"interval_s": 2},
        "provisioning": {
            "cloud_url": f"http://127.0.0.1:{stack.api_port}",
            "claim_token_file": "claim.token",
        },
    }
    path = directory / "edge.toml"
    path.write_text(toml_text(config))
    return path


async def spawn_agent(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import boilertwin; boilertwin.main()",
        "edge",
        "run",
        "--config",
        str(config),
        stdout=open(config.parent / "agent.log", "ab"),
        stderr=asyncio.subprocess.STDOUT,
        cwd=config.parent,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


@pytest.fixture
async def stack(tmp_path: Path, broker: Broker, sqlite_url: str) -> AsyncIterator[Stack]:
    """On SQLite only: the claim decision runs on both databases in test_provisioning.py."""
    stack = Stack(
        tmp_path / "cloud",
        broker,
        sqlite_url,
        broker_admin_password_file=str(broker.admin_password_file),
    )
    stack.user("sue", Role.SUPPORT)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.close()


async def post_claim(stack: Stack, body: bytes, content_type: str = CONTENT_TYPE) -> httpx.Response:
    return await stack.api.post(
        "/api/v1/provisioning/claims", content=body, headers={"Content-Type": content_type}
    )


def claim_body(token: str, dev: str, model: str = SIM_MODEL) -> bytes:
    return make_request(
        generate_private_key(),
        claim=token,
        dev=dev,
        serial="X-1",
        model=model,
        agent="0.1.0",
        iat=1,
        nonce="n",
    )


async def test_a_gateway_with_only_a_claim_token_gets_from_first_boot_to_the_twin(
    tmp_path: Path, stack: Stack, start_sim: Any
) -> None:
    sim = await start_sim()
    token = cli(stack, "claims", "create", "--count", "1", "--model", SIM_MODEL).strip()
    config = unclaimed_gateway(tmp_path / "gateway", stack, sim.pty, token)
    agent = await spawn_agent(config)
    log_path = config.parent / "agent.log"
    try:

        async def registered() -> str | None:
            if agent.returncode is not None:
                raise AssertionError(f"agent exited {agent.returncode}:\n{log_path.read_text()}")
            with stack.sessions() as session:
                return session.scalars(select(Device.id)).first()

        device_id = await eventually(registered, "the gateway registered", timeout=60)

        async def reporting() -> dict[str, Any] | None:
            twin = await stack.twin("sue", device_id)
            online = twin["connectivity"]["state"] == "online"
            return twin if online and "flow_temp" in twin["reported"] else None

        twin = await eventually(reporting, "the claimed gateway's data in the twin", timeout=60)
        assert twin["reported"]["flow_temp"]["value"] is not None
        with stack.sessions() as session:
            device = session.get(Device, device_id)
            assert device is not None
            assert (device.serial, device.model) == (SIM_SERIAL, SIM_MODEL)
            changes = [
                e.data["change"]
                for e in session.scalars(
                    select(ThreadEvent).where(ThreadEvent.device_id == device_id)
                )
                if e.kind == "device"
            ]
        assert changes[:3] == ["registered", "claimed", "broker_login"]
        identity = json.loads((config.parent / "state" / "identity.json").read_text())
        assert identity["device_id"] == device_id and identity["serial"] == SIM_SERIAL
        pinned = sorted(p.name for p in (config.parent / "state" / "cloud-keys").iterdir())
        assert pinned == ["cloud-stack.pem"]
        assert oct((config.parent / "state" / "mqtt.password").stat().st_mode & 0o777) == "0o600"

        # -- what must not work, while the gateway carries on ---------------------------
        replay = await post_claim(stack, claim_body(token, "gw-00000000dead"))
        assert replay.status_code == 403 and replay.json()["reason"] == "used_up"
        fresh = cli(stack, "claims", "create", "--count", "1").strip()
        takeover = await post_claim(stack, claim_body(fresh, device_id))
        assert takeover.status_code == 409
        assert takeover.json()["reason"] == "device_exists"
        forged_payload = json.dumps({"claim": fresh}).encode()
        forged = sign(forged_payload, generate_private_key(), kid="gw-00000000beef")
        bad = await post_claim(stack, forged)
        assert bad.status_code == 400 and bad.json()["reason"] == "bad_request"
        wrong_type = await post_claim(stack, b"{}", "application/json")
        assert wrong_type.status_code == 422 and "application/cose" in wrong_type.json()["detail"]
        scoped = cli(stack, "claims", "create", "--model", "BT-30C").strip()
        other_model = await post_claim(stack, claim_body(scoped, "gw-00000000cafe"))
        assert other_model.status_code == 403 and other_model.json()["reason"] == "wrong_model"
        with stack.sessions() as session:
            assert session.scalars(select(Device.id)).all() == [device_id]

        before = twin["reported"]["flow_temp"]["ts"]
        await sim.control("/demand", {"ch": "on"})  # the boiler fires: flow temperature moves

        async def still_reporting() -> bool:
            now = await stack.twin("sue", device_id)
            return bool(now["reported"]["flow_temp"]["ts"] > before)

        await eventually(still_reporting, "the gateway still reporting", timeout=30)
        assert agent.returncode is None
    finally:
        if agent.returncode is None:
            agent.terminate()
            await asyncio.wait_for(agent.wait(), 20)


async def test_a_gateway_with_a_spent_token_stops_with_the_reason_and_registers_nothing(
    tmp_path: Path, stack: Stack, start_sim: Any
) -> None:
    sim = await start_sim()
    token = cli(stack, "claims", "create", "--count", "1").strip()
    first = await post_claim(stack, claim_body(token, "gw-00000000f00d"))
    assert first.status_code == 201, first.text
    config = unclaimed_gateway(tmp_path / "gateway", stack, sim.pty, token)
    agent = await spawn_agent(config)
    assert await asyncio.wait_for(agent.wait(), 60) == 2
    log = (config.parent / "agent.log").read_text()
    assert "used_up" in log and "has been used already" in log
    assert not (config.parent / "state" / "identity.json").exists()
    with stack.sessions() as session:
        assert session.scalars(select(Device.id)).all() == ["gw-00000000f00d"]
