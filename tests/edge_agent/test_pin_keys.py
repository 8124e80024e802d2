"""Rotating the cloud's command key on a gateway (``pin_keys``): the new set is pinned with
an overlap, commands signed with the new key are accepted, and once the old key leaves the
set, what it signs is no longer even acknowledged. A set sent unsigned by a pinned key, or
a malformed one, changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from protocols.cose import generate_private_key, public_key_to_pem
from protocols.messages import AckState, CommandName, RejectReason
from tests.broker import Broker
from tests.edge_agent.harness import CLOUD_KID, CloudListener, Gateway, listening, publish_command

pytestmark = pytest.mark.integration

NEW_KID = "cloud-2027"


@pytest.fixture
async def rig(
    tmp_path: Path, broker: Broker, start_sim: Callable[..., Any]
) -> AsyncIterator[tuple[Gateway, CloudListener]]:
    sim = await start_sim()
    gateway = Gateway(tmp_path / "gateway", broker, sim.pty)
    async with listening(broker, gateway) as cloud:
        await gateway.start()
        yield gateway, cloud
        await gateway.cancel()


async def send(
    gateway: Gateway,
    broker: Broker,
    cloud: CloudListener,
    name: CommandName,
    args: dict[str, Any],
    *,
    key: Any = None,
    kid: str = CLOUD_KID,
    answered: bool = True,
) -> list[Any]:
    """The acks of the command sent (in arrival order)."""
    command = replace(gateway.command(name=name), args=args)
    await publish_command(broker, gateway.device_id, gateway.signed(command, key, kid=kid))
    if answered:
        final = {AckState.SUCCEEDED, AckState.FAILED, AckState.REJECTED}
        await cloud.wait_for(lambda c: any(s in final for s in c.ack_states(command.id)))
    else:
        await asyncio.sleep(1.0)
    return cloud.acks(command.id)


async def test_a_new_cloud_key_is_pinned_with_an_overlap_and_the_old_one_retired(
    rig: tuple[Gateway, CloudListener], broker: Broker
) -> None:
    gateway, cloud = rig
    keys_dir = Path(gateway.config["commands"]["cloud_keys_dir"])
    new_key = generate_private_key()
    old_pem = public_key_to_pem(gateway.cloud_key.public_key()).decode()
    new_pem = public_key_to_pem(new_key.public_key()).decode()
    both = {"keys": json.dumps({CLOUD_KID: old_pem, NEW_KID: new_pem})}

    # not signed by a pinned key, or malformed: nothing changes
    forged = await send(
        gateway,
        broker,
        cloud,
        CommandName.PIN_KEYS,
        both,
        key=new_key,
        kid=NEW_KID,
        answered=False,
    )
    assert forged == []
    bad = await send(gateway, broker, cloud, CommandName.PIN_KEYS, {"keys": '{"x/y": "z"}'})
    assert bad[-1].state is AckState.REJECTED
    assert sorted(p.name for p in keys_dir.glob("*.pem")) == [f"{CLOUD_KID}.pem"]

    # the overlap: both pinned; the new key's commands verify
    pinned = await send(gateway, broker, cloud, CommandName.PIN_KEYS, both)
    assert pinned[-1].state is AckState.SUCCEEDED
    assert sorted(p.name for p in keys_dir.glob("*.pem")) == [f"{CLOUD_KID}.pem", f"{NEW_KID}.pem"]
    acks = await send(gateway, broker, cloud, CommandName.RESTART, {}, key=new_key, kid=NEW_KID)
    assert [a.state for a in acks] == [AckState.DELIVERED, AckState.REJECTED]
    assert acks[-1].reason is RejectReason.NOT_IN_LOCKOUT  # signature accepted, interlock held

    # the old key retired, by a command the new key signs
    only_new = {"keys": json.dumps({NEW_KID: new_pem})}
    done = await send(
        gateway, broker, cloud, CommandName.PIN_KEYS, only_new, key=new_key, kid=NEW_KID
    )
    assert done[-1].state is AckState.SUCCEEDED
    assert sorted(p.name for p in keys_dir.glob("*.pem")) == [f"{NEW_KID}.pem"]
    assert await send(gateway, broker, cloud, CommandName.RESTART, {}, answered=False) == []
