"""Remote restart (lockout reset) end to end: cloud-signed command over a real broker, the
agent's checks and interlocks, a real write to the simulated controller, signed acks back.

The simulator's own reset counter (`reset_count` in its true state) proves whether a reset
was written: every rejection path must leave it unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.clock import SystemClock
from protocols.cose import generate_private_key
from protocols.messages import AckState, CommandName, RejectReason
from protocols.reference import BoilerStatus
from tests.broker import Broker
from tests.edge_agent.harness import CloudListener, Gateway, listening, publish_command

pytestmark = pytest.mark.integration

TERMINAL = {AckState.SUCCEEDED, AckState.FAILED, AckState.REJECTED}


@pytest.fixture
async def rig(
    tmp_path: Path, broker: Broker, start_sim: Callable[..., Any]
) -> AsyncIterator[tuple[Gateway, Any, CloudListener]]:
    sim = await start_sim()
    gateway = Gateway(tmp_path / "gateway", broker, sim.pty)
    async with listening(broker, gateway) as cloud:
        await gateway.start()
        await cloud.wait_for(lambda c: any(r.kind.value == "birth" for r in c.received))
        yield gateway, sim, cloud
        await gateway.cancel()


async def lock_out(sim: Any) -> None:
    """F28 (ignition failure) and enough simulated time for the boiler to lock out."""
    if (await sim.state())["status"] != BoilerStatus.LOCKOUT.label:
        await sim.control("/fault", {"code": "F28"})
        await sim.control("/demand", {"ch": "on"})
        await sim.control("/advance", {"seconds": 120})
    assert (await sim.state())["status"] == BoilerStatus.LOCKOUT.label


async def resets(sim: Any) -> int:
    return int((await sim.state())["registers"]["reset_count"])


async def send_and_wait(
    gateway: Gateway, broker: Broker, cloud: CloudListener, envelope: bytes, command_id: str
) -> list[AckState]:
    await publish_command(broker, gateway.device_id, envelope)
    await cloud.wait_for(lambda c: any(s in TERMINAL for s in c.ack_states(command_id)))
    return cloud.ack_states(command_id)


async def test_restart_after_repair_succeeds(
    rig: tuple[Gateway, Any, CloudListener], broker: Broker
) -> None:
    gateway, sim, cloud = rig
    await lock_out(sim)
    await sim.control("/repair", {"code": "F28"})
    before = await resets(sim)
    command = gateway.command()
    states = await send_and_wait(gateway, broker, cloud, gateway.signed(command), command.id)
    assert states == [AckState.DELIVERED, AckState.EXECUTING, AckState.SUCCEEDED]
    acks = cloud.acks(command.id)
    assert acks[1].observed["status"] == BoilerStatus.LOCKOUT  # checked live before acting
    assert acks[-1].observed["status"] != BoilerStatus.LOCKOUT  # read back after the write
    assert acks[-1].reason is None
    assert await resets(sim) == before + 1
    # the boiler really runs again: it leaves lockout and lights
    await sim.control("/advance", {"seconds": 60})
    assert (await sim.state())["status"] != BoilerStatus.LOCKOUT.label
    # acks were signed, numbered and went through the outbox like everything else
    assert all(a.dev == gateway.device_id for a in acks)
    assert [a.seq for a in acks] == sorted(a.seq for a in acks)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("bad_signature", None),
        ("unknown_key", None),
        ("other_device", RejectReason.WRONG_DEVICE),
        ("expired", RejectReason.EXPIRED),
        ("garbage", None),
    ],
)
async def test_rejected_before_delivery_and_never_executed(
    rig: tuple[Gateway, Any, CloudListener], broker: Broker, case: str, reason: RejectReason | None
) -> None:
    gateway, sim, cloud = rig
    await lock_out(sim)
    before = await resets(sim)
    command = gateway.command()
    if case == "bad_signature":  # the pinned kid, but another key signed it
        envelope = gateway.signed(command, key=generate_private_key())
    elif case == "unknown_key":
        envelope = gateway.signed(command, key=generate_private_key(), kid="attacker")
    elif case == "other_device":
        command = gateway.command(dev="boiler-0002")
        envelope = gateway.signed(command)
    elif case == "expired":
        command = gateway.command(iat_ms=1_700_000_000_000, ttl_ms=60_000)
        envelope = gateway.signed(command)
    else:
        envelope = b"\xd2\x84not a cose message"
    agent = gateway.agent
    assert agent is not None
    received = agent.executor.figures.received
    await publish_command(broker, gateway.device_id, envelope)
    async with asyncio.timeout(10):
        while agent.executor.figures.received == received:
            await asyncio.sleep(0.02)
    if reason is not None:
        await cloud.wait_for(lambda c: bool(c.acks(command.id)))
        acks = cloud.acks(command.id)
        assert [a.state for a in acks] == [AckState.REJECTED]
        assert acks[0].reason is reason
    else:
        # unauthenticated: counted and logged, but not even acknowledged
        await asyncio.sleep(0.3)
        assert cloud.acks(command.id) == []
    rejected = agent.executor.figures.rejected
    assert sum(rejected.values()) == 1
    expected = (
        reason.value
        if reason
        else {
            "bad_signature": "bad_signature",
            "unknown_key": "unknown_key",
            "garbage": "malformed",
        }[case]
    )
    assert rejected == {expected: 1}
    assert await resets(sim) == before, "never executed"
    assert not gateway.task.done()  # type: ignore[union-attr]


async def test_replayed_command_is_not_run_twice(
    rig: tuple[Gateway, Any, CloudListener], broker: Broker
) -> None:
    gateway, sim, cloud = rig
    await lock_out(sim)
    before = await resets(sim)
    command = gateway.command()
    envelope = gateway.signed(command)
    states = await send_and_wait(gateway, broker, cloud, envelope, command.id)
    assert states[-1] is AckState.FAILED or states[-1] is AckState.SUCCEEDED
    assert await resets(sim) == before + 1
    await lock_out(sim)  # locked out again (the cause was never repaired)
    await publish_command(broker, gateway.device_id, envelope)
    await cloud.wait_for(lambda c: len(c.acks(command.id)) > len(states))
    replay = cloud.acks(command.id)[len(states) :]
    assert [(a.state, a.reason) for a in replay] == [(AckState.REJECTED, RejectReason.DUPLICATE)]
    assert await resets(sim) == before + 1, "the replay wrote nothing"


async def test_replay_after_agent_restart_is_still_refused(
    rig: tuple[Gateway, Any, CloudListener], broker: Broker
) -> None:
    gateway, sim, cloud = rig
    await lock_out(sim)
    command = gateway.command()
    envelope = gateway.signed(command)
    await send_and_wait(gateway, broker, cloud, envelope, command.id)
    count = await resets(sim)
    await gateway.stop()
    await gateway.start()  # the ledger is on disk
    await lock_out(sim)
    n = len(cloud.acks(command.id))
    await publish_command(broker, gateway.device_id, envelope)
    await cloud.wait_for(lambda c: len(c.acks(command.id)) > n)
    assert cloud.acks(command.id)[-1].reason is RejectReason.DUPLICATE
    assert await resets(sim) == count


async def test_not_in_lockout_is_rejected_with_observed_state(
    rig: tuple[Gateway, Any, CloudListener], broker: Broker
) -> None:
    gateway, sim, cloud = rig
    before = await resets(sim)
    command = gateway.command()
    states = await send_and_wait(gateway, broker, cloud, gateway.signed(command), command.id)
    assert states == [AckState.DELIVERED, AckState.REJECTED]
    final = cloud.acks(command.id)[-1]
    assert final.reason is RejectReason.NOT_IN_LOCKOUT
    assert final.observed["status"] != BoilerStatus.LOCKOUT
    assert "fault_code" in final.observed
    assert await resets(sim) == before


async def test_unsupported_command_is_rejected(
    rig: tuple[Gateway, Any, CloudListener], broker: Broker
) -> None:
    gateway, _sim, cloud = rig
    command = gateway.command(name=CommandName.SET_SETPOINT)
    states = await send_and_wait(gateway, broker, cloud, gateway.signed(command), command.id)
    assert states == [AckState.DELIVERED, AckState.REJECTED]
    assert cloud.acks(command.id)[-1].reason is RejectReason.UNSUPPORTED_COMMAND


async def test_sixth_reset_within_fifteen_minutes_is_refused(
    rig: tuple[Gateway, Any, CloudListener], broker: Broker
) -> None:
    gateway, sim, cloud = rig
    before = await resets(sim)
    for _ in range(5):  # the cause is never repaired: each reset ends in lockout again
        await lock_out(sim)
        command = gateway.command()
        states = await send_and_wait(gateway, broker, cloud, gateway.signed(command), command.id)
        assert AckState.EXECUTING in states, states
    assert await resets(sim) == before + 5
    await lock_out(sim)
    sixth = gateway.command()
    states = await send_and_wait(gateway, broker, cloud, gateway.signed(sixth), sixth.id)
    assert states == [AckState.DELIVERED, AckState.REJECTED]
    final = cloud.acks(sixth.id)[-1]
    assert final.reason is RejectReason.RATE_LIMITED
    assert final.observed["status"] == BoilerStatus.LOCKOUT
    assert await resets(sim) == before + 5


class UnsyncedClock(SystemClock):
    """A gateway that booted without network time (a Pi has no RTC)."""

    def trusted(self) -> bool:
        return False


async def test_untrusted_clock_refuses_commands(
    tmp_path: Path, broker: Broker, start_sim: Callable[..., Any]
) -> None:
    sim = await start_sim()
    gateway = Gateway(tmp_path / "gateway", broker, sim.pty)
    async with listening(broker, gateway) as cloud:
        await gateway.start(clock=UnsyncedClock())
        try:
            # the birth follows the command subscription: a command sent before it is lost
            await cloud.wait_for(lambda c: any(r.kind.value == "birth" for r in c.received))
            await lock_out(sim)
            before = await resets(sim)
            command = gateway.command()
            states = await send_and_wait(
                gateway, broker, cloud, gateway.signed(command), command.id
            )
            assert states == [AckState.REJECTED]
            assert cloud.acks(command.id)[0].reason is RejectReason.CLOCK_UNTRUSTED
            assert await resets(sim) == before
            # and everything it sent says so
            assert all(not r.message.sync for r in cloud.received)
        finally:
            await gateway.cancel()
