"""The whole chain on one machine: simulated boiler on a pty -> edge agent -> Mosquitto ->
``boilertwin cloud serve`` (its own process) -> REST API, and a restart back down.

Runs on SQLite and on PostgreSQL (``db_url``). The simulator's own reset counter proves
whether a reset really reached the boiler, and how many times.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloud.domain import Role
from protocols.reference import BoilerStatus
from tests.broker import Broker
from tests.cloud.stack import Stack, eventually
from tests.edge_agent.harness import Gateway

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

DEV = "boiler-0001"
FAULT_TO_TWIN_BOUND_S = 10.0
"""Generous bound: the agent sends a lockout event at once; ingest applies it in one commit."""


async def lock_out(sim: Any) -> None:
    """F28 (ignition failure) and enough simulated time for the boiler to lock out."""
    await sim.control("/fault", {"code": "F28"})
    await sim.control("/demand", {"ch": "on"})
    await sim.control("/advance", {"seconds": 120})
    assert (await sim.state())["status"] == BoilerStatus.LOCKOUT.label


async def resets(sim: Any) -> int:
    return int((await sim.state())["registers"]["reset_count"])


async def twin_status(stack: Stack, label: str) -> bool:
    twin = await stack.twin("sue", DEV)
    status = twin["reported"].get("status", {})
    return twin["connectivity"]["state"] == "online" and status.get("label") == label


async def open_lockout(stack: Stack) -> bool:
    """The twin shows an open F28 lockout alarm (from the agent's ``lockout`` event, which
    may arrive just after the reading that put the status in lockout)."""
    twin = await stack.twin("sue", DEV)
    return any(a["kind"] == "lockout" and a["open"] and a["name"] == "F28" for a in twin["alarms"])


async def command_in(stack: Stack, command_id: str, *states: str) -> dict[str, Any] | None:
    command = await stack.command("sue", command_id)
    return command if command["state"] in states else None


async def thread_of(stack: Stack, command_id: str) -> list[tuple[str | None, str]]:
    page = await stack.get("sue", f"/api/v1/boilers/{DEV}/thread?kind=command_state&limit=200")
    return [
        (e["data"]["from"], e["data"]["to"]) for e in page["events"] if e["subject"] == command_id
    ]


def forward_only(transitions: list[tuple[str | None, str]]) -> bool:
    order = ["created", "sent", "delivered", "executing", "succeeded"]
    ranks = [order.index(to) for _, to in transitions if to in order]
    return ranks == sorted(ranks)


class Rig:
    def __init__(self, stack: Stack, gateway: Gateway, sim: Any) -> None:
        self.stack, self.gateway, self.sim = stack, gateway, sim


@pytest.fixture
async def rig(
    tmp_path: Path, broker: Broker, db_url: str, start_sim: Any, request: pytest.FixtureRequest
) -> AsyncIterator[Rig]:
    settings = getattr(request, "param", {})
    sim = await start_sim()
    stack = Stack(tmp_path / "cloud", broker, db_url, **settings)
    stack.user("sue", Role.SUPPORT)
    gateway = stack.gateway(tmp_path / "gateway", sim.pty, DEV)
    await stack.start()
    rig = Rig(stack, gateway, sim)
    try:
        yield rig
    finally:
        if gateway.process is not None:
            gateway.process.send_signal(signal.SIGCONT)
            await gateway.signal(signal.SIGTERM)
        await gateway.cancel()
        await stack.close()


async def test_lockout_to_twin_to_restart_to_running(rig: Rig) -> None:
    stack, sim = rig.stack, rig.sim
    await rig.gateway.start()
    await eventually(lambda: twin_status(stack, "standby"), "twin online, boiler in standby")

    started = time.monotonic()
    await lock_out(sim)
    await eventually(lambda: twin_status(stack, "lockout"), "twin in lockout", timeout=30)
    latency = time.monotonic() - started
    log.warning("fault injected -> twin shows lockout: %.2f s", latency)
    print(f"\nfault -> twin lockout latency: {latency:.2f} s (bound {FAULT_TO_TWIN_BOUND_S} s)")
    assert latency < FAULT_TO_TWIN_BOUND_S
    await eventually(lambda: open_lockout(stack), "the open F28 lockout alarm")

    await sim.control("/repair", {"code": "F28"})
    before = await resets(sim)
    response = await stack.restart("sue", DEV, **{"Idempotency-Key": "ticket-4711"})
    assert response.status_code == 202, response.text
    command = response.json()
    assert response.headers["location"] == f"/api/v1/commands/{command['id']}"
    done = await eventually(
        lambda: command_in(stack, command["id"], "succeeded", "failed", "rejected", "timed_out"),
        "command outcome",
    )
    assert done["state"] == "succeeded", done
    assert done["observed"]["status"] != BoilerStatus.LOCKOUT
    assert await resets(sim) == before + 1

    async def out_of_lockout() -> bool:
        twin = await stack.twin("sue", DEV)
        return bool(twin["reported"]["status"]["label"] != "lockout")

    await eventually(out_of_lockout, "twin out of lockout")
    transitions = await thread_of(stack, command["id"])
    assert transitions == [
        (None, "created"),
        ("created", "sent"),
        ("sent", "delivered"),
        ("delivered", "executing"),
        ("executing", "succeeded"),
    ]
    # The same request again is the same command, not a second reset.
    replay = await stack.restart("sue", DEV, **{"Idempotency-Key": "ticket-4711"})
    assert replay.json()["id"] == command["id"]
    # Now the twin is out of lockout: a new restart is refused with the reason.
    refused = await stack.restart("sue", DEV)
    assert refused.status_code == 409 and refused.json()["reason"] == "not_in_lockout"
    assert await resets(sim) == before + 1


@pytest.mark.parametrize("kill_when", ["at_once", "when_sent"])
async def test_cloud_killed_with_command_in_flight(rig: Rig, kill_when: str) -> None:
    stack, sim = rig.stack, rig.sim
    await rig.gateway.start()
    await lock_out(sim)
    await eventually(lambda: twin_status(stack, "lockout"), "twin in lockout")
    await sim.control("/repair", {"code": "F28"})
    before = await resets(sim)
    response = await stack.restart("sue", DEV)
    assert response.status_code == 202, response.text
    command_id = response.json()["id"]
    if kill_when == "when_sent":
        await eventually(
            lambda: command_in(stack, command_id, "sent", "delivered", "executing", "succeeded"),
            "command sent",
            every=0.02,
        )
    await stack.kill()
    # The boiler carries on while the cloud is dead; its acks wait at the broker.
    await asyncio.sleep(2)
    await stack.start()
    done = await eventually(
        lambda: command_in(stack, command_id, "succeeded", "failed", "rejected", "timed_out"),
        "command outcome after the cloud restarted",
    )
    assert done["state"] == "succeeded", (done, stack.log_text()[-3000:])
    assert await resets(sim) == before + 1  # executed exactly once
    assert forward_only(await thread_of(stack, command_id))


@pytest.mark.parametrize("rig", [{"command_ttl_s": 2.0}], indirect=True)
async def test_device_unreachable_until_after_exp_is_expired_never_executed(rig: Rig) -> None:
    stack, sim, gateway = rig.stack, rig.sim, rig.gateway
    await gateway.spawn()
    await lock_out(sim)
    await eventually(lambda: twin_status(stack, "lockout"), "twin in lockout")
    before = await resets(sim)
    # The gateway's link goes dead without a goodbye: the twin still says online.
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGSTOP)
    response = await stack.restart("sue", DEV)
    assert response.status_code == 202, response.text
    command_id = response.json()["id"]
    await eventually(lambda: command_in(stack, command_id, "expired"), "expired verdict")
    await asyncio.sleep(0.5)
    gateway.process.send_signal(signal.SIGCONT)

    async def confirmed() -> bool:
        page = await stack.get("sue", f"/api/v1/boilers/{DEV}/thread?kind=command_state")
        return any(
            e["subject"] == command_id and e["data"].get("reason") == "expired"
            for e in page["events"]
        )

    await eventually(confirmed, "the device's own 'rejected: expired' ack")
    assert (await stack.command("sue", command_id))["state"] == "expired"
    assert await resets(sim) == before  # never executed
    assert (await sim.state())["status"] == BoilerStatus.LOCKOUT.label
