"""Device key rotation in the field, on the real stack: the cloud asks, a real agent process
makes and proves a new key, the cloud registers it (both verify during the overlap), then
tells the gateway to use it; the gateway's data keeps flowing, signed with the new key, and
nothing is quarantined. A proof made with another key is refused."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cloud.commands import Issuer
from cloud.db import transaction
from cloud.domain import Role
from cloud.key_proof import accept
from cloud.key_rotation import start
from cloud.models import Command, DeviceKey, Quarantine, ThreadEvent
from edge_agent.keys import load_device_key
from protocols.cose import generate_private_key, public_key_to_raw
from protocols.key_rotation import prove
from tests.broker import Broker
from tests.cloud.stack import Stack, eventually
from tests.edge_agent.harness import Gateway

pytestmark = pytest.mark.integration

DEV = "boiler-0001"


@pytest.fixture
async def rig(
    tmp_path: Path, broker: Broker, sqlite_url: str, start_sim: Any
) -> AsyncIterator[tuple[Stack, Gateway, Any]]:
    """On SQLite only: the database side runs on both in the test below."""
    sim = await start_sim()
    stack = Stack(tmp_path / "cloud", broker, sqlite_url)
    stack.user("ada", Role.ADMIN)
    gateway = stack.gateway(tmp_path / "gateway", sim.pty, DEV)
    await stack.start()
    await gateway.spawn()
    try:
        yield stack, gateway, sim
    finally:
        if gateway.process is not None:
            await gateway.signal(signal.SIGTERM)
        await stack.close()


def raw(key: Any) -> bytes:
    return public_key_to_raw(key.public_key())


async def test_the_cloud_rotates_a_gateways_key_with_an_overlap(
    rig: tuple[Stack, Gateway, Any],
) -> None:
    stack, gateway, sim = rig
    old = raw(gateway.key)

    async def online() -> bool:
        twin = await stack.twin("ada", DEV)
        return bool(twin["connectivity"]["state"] == "online")

    await eventually(online, "the gateway online", timeout=30)
    answer = await stack.api.post(
        f"/api/v1/boilers/{DEV}/key-rotation",
        json={"grace_s": 600},
        headers=await stack.login("ada"),
    )
    assert answer.status_code == 202, answer.text

    def keys() -> list[DeviceKey]:
        with stack.sessions() as session:
            return list(session.scalars(select(DeviceKey).where(DeviceKey.device_id == DEV)))

    async def registered() -> bool:
        return len(keys()) == 2

    await eventually(registered, "the new key registered", timeout=30)
    new = next(k.public_key for k in keys() if k.public_key != old)
    overlap = next(k for k in keys() if k.public_key == old)
    assert overlap.valid_until_ms is not None  # the old key's grace period runs

    async def switched() -> bool:
        return raw(load_device_key(gateway.directory / "device.key")) == new

    await eventually(switched, "the gateway using its new key", timeout=60)
    with stack.sessions() as session:
        use = session.scalars(select(Command).where(Command.name == "use_key")).one()

    async def use_done() -> bool:
        with stack.sessions() as session:
            row = session.get(Command, use.id)
            return row is not None and row.state == "succeeded"

    await eventually(use_done, "use_key acked (signed with the new key)", timeout=30)
    before = (await stack.twin("ada", DEV))["reported"]["flow_temp"]["ts"]
    await sim.control("/demand", {"ch": "on"})

    async def still_reporting() -> bool:
        now = await stack.twin("ada", DEV)
        return bool(now["reported"]["flow_temp"]["ts"] > before)

    await eventually(still_reporting, "data signed with the new key stored", timeout=30)
    with stack.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Quarantine)) == 0
    assert (gateway.directory / "device.key.prev").exists()


async def test_a_proof_made_with_another_key_is_refused(
    tmp_path: Path, broker: Broker, db_url: str
) -> None:
    stack = Stack(tmp_path / "cloud", broker, db_url)
    device_key = generate_private_key()
    with transaction(stack.sessions) as session:
        from cloud.registry import add_device

        add_device(session, DEV, device_key.public_key(), now_ms=1)
        command = start(session, DEV, Issuer(stack.key, 60_000, "ada"), now_ms=2)
        claimed, signer = generate_private_key(), generate_private_key()
        proof = prove(signer, DEV, command.id) | {"key": raw(claimed).hex()}
        assert not accept(session, command, proof, now_ms=3)
        assert accept(session, command, prove(claimed, DEV, command.id), now_ms=4)
        notes = [e.data.get("change") for e in session.scalars(select(ThreadEvent))]
    assert "key_refused" in notes and "key_rotated" in notes
    stack.engine.dispose()
