"""Remote configuration on a real agent process (``boilertwin edge run``), a real broker and a
simulated boiler on a pty: a cloud-signed ``configure`` is checked, kept and applied without
losing a reading; every bad one is rejected with its reason and the configuration in force
stays, across a SIGKILL too."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from protocols.messages import AckState, CommandName, Health, RejectReason, TelemetryBatch
from tests.broker import Broker
from tests.edge_agent.harness import CloudListener, Gateway, listening, publish_command

pytestmark = pytest.mark.integration

TERMINAL = {AckState.SUCCEEDED, AckState.FAILED, AckState.REJECTED}


@pytest.fixture
async def rig(
    tmp_path: Path, broker: Broker, start_sim: Callable[..., Any]
) -> AsyncIterator[tuple[Gateway, CloudListener]]:
    sim = await start_sim()
    gateway = Gateway(tmp_path / "gateway", broker, sim.pty)
    async with listening(broker, gateway) as cloud:
        await gateway.spawn()
        await cloud.wait_for(births(1), timeout=30)
        yield gateway, cloud
        if gateway.process is not None:
            await gateway.signal(signal.SIGTERM)


def births(count: int) -> Callable[[CloudListener], bool]:
    return lambda c: sum(r.kind.value == "birth" for r in c.received) >= count


async def configure(
    gateway: Gateway, broker: Broker, cloud: CloudListener, version: object, config: object
) -> tuple[list[AckState], dict[str, Any]]:
    text = config if isinstance(config, str) else json.dumps(config)
    command = replace(
        gateway.command(name=CommandName.CONFIGURE),
        args={"version": version, "config": text},  # type: ignore[dict-item]
    )
    await publish_command(broker, gateway.device_id, gateway.signed(command))
    await cloud.wait_for(lambda c: any(s in TERMINAL for s in c.ack_states(command.id)), 30)
    acks = cloud.acks(command.id)
    return [a.state for a in acks], {"reason": acks[-1].reason, **acks[-1].observed}


def kept(gateway: Gateway) -> dict[str, Any]:
    path = gateway.directory / "state" / "remote-config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def contiguous(cloud: CloudListener) -> bool:
    seqs = sorted({r.message.seq for r in cloud.received if r.kind.value != "state"})
    return seqs == list(range(1, len(seqs) + 1))


async def test_a_configuration_is_applied_and_bad_ones_change_nothing(
    rig: tuple[Gateway, CloudListener], broker: Broker
) -> None:
    gateway, cloud = rig
    good = {"report": {"poll_interval_s": 0.3, "heartbeat_s": 1200}, "health": {"interval_s": 1}}
    states, observed = await configure(gateway, broker, cloud, 1, good)
    assert states == [AckState.DELIVERED, AckState.SUCCEEDED]
    assert observed["config_version"] == 1
    assert kept(gateway)["version"] == 1
    # applied: the agent restarted its loops (a new birth) and reports the version in force
    await cloud.wait_for(births(2), timeout=30)

    def health_says(version: int) -> Callable[[CloudListener], bool]:
        return lambda c: any(
            isinstance(r.message, Health) and r.message.agent.get("config_version") == version
            for r in c.received
        )

    await cloud.wait_for(health_says(1), timeout=30)

    bad: list[tuple[object, object, str]] = [
        (2, {"report": {"batch_interval_s": 0.1}}, "batch_interval_s"),  # below the poll
        (2, {"mqtt": {"host": "evil.example"}}, "not a setting the cloud may set"),
        (2, {"commands": {"max_resets": 500}}, "not a section the cloud may set"),
        (2, {"report": {"deadband": {"no_such_point": 1}}}, "not a readable point"),
        (2, "{not json", "not JSON"),
        (1, good, "not newer"),  # a replayed old version
        ("2", good, "not newer"),
    ]
    for version, config, why in bad:
        states, observed = await configure(gateway, broker, cloud, version, config)
        assert states == [AckState.DELIVERED, AckState.REJECTED], (config, states)
        assert observed["reason"] is RejectReason.INVALID_ARGS
        assert why in str(observed["error"]), (why, observed)
        assert kept(gateway)["version"] == 1
    assert gateway.process is not None and gateway.process.returncode is None

    # a power cut right after: the kept configuration is the one in force at the next start
    await gateway.signal(signal.SIGKILL)
    await gateway.spawn()
    await cloud.wait_for(births(3), timeout=30)
    restarted = len(cloud.received)
    await cloud.wait_for(
        lambda c: any(isinstance(r.message, TelemetryBatch) for r in c.received[restarted:]), 30
    )
    # started on the kept configuration: polling every 0.3 s (edge.toml says 0.2 s)
    assert gateway.log_text().count("polling 4 request(s) every 0.3 s") == 2
    assert contiguous(cloud), "a seq went missing across the reloads"
    assert "configuration v1 kept" in gateway.log_text()
