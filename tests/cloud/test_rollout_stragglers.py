"""Stragglers: gateways off the air through a configuration change and a whole rollout, long
past their commands' lifetime, catch up by themselves once they are back (real broker,
``cloud serve``, the simulated fleet with an `Outage`).

In the field a command lives ``config_command_ttl_s`` (a day by default) and a gateway may
be off for days; here the lifetime is a few seconds and the outage a little longer, which is
the same story for the cloud (it times commands by its own clock): every command meant for
an absent gateway expires undelivered, the configuration is sent again and the update is
sent again when the gateway reconnects, and the rollout neither waits for them nor forgets
them after it completes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cloud.db import transaction
from cloud.device_config import config_view
from cloud.lifecycle_models import RolloutTarget
from cloud.models import Command, Twin
from cloud.rollouts import add_release, fleet_versions
from hw_sim.fleet import FleetSettings, Identity, run_fleet
from hw_sim.fleet_lifecycle import Outage, claim_gateways
from tests.broker import Broker
from tests.cloud.rollout_scenario import (
    GOOD,
    claim_token,
    fake_wheel,
    lifecycle_stack,
    rollout_in,
    start,
)
from tests.cloud.stack import Stack, eventually

pytestmark = pytest.mark.integration

GATEWAYS = 30
ABSENT = 6
TTL_S = 4.0


@pytest.fixture
async def stack(tmp_path: Path, broker: Broker, sqlite_url: str) -> AsyncIterator[Stack]:
    stack = lifecycle_stack(
        tmp_path / "cloud",
        broker,
        sqlite_url,
        config_command_ttl_s=TTL_S,
        watermark_interval_s=0.5,  # so that the outboxes are seen to drain within the test
        watermark_check_s=0.2,
    )
    await stack.start()
    try:
        yield stack
    finally:
        await stack.close()


def query(stack: Stack, statement: Any) -> Any:
    with stack.sessions() as session:
        return session.execute(statement).all()


def config_states(stack: Stack, device_ids: list[str]) -> dict[str, str]:
    with stack.sessions() as session:
        return {d: config_view(session, d)["state"] for d in device_ids}


async def test_gateways_offline_past_their_commands_catch_up_when_back(
    tmp_path: Path, stack: Stack
) -> None:
    token = claim_token(stack, GATEWAYS, "b")
    claimed, _ = await claim_gateways(GATEWAYS, f"http://127.0.0.1:{stack.api_port}", token)
    ids = sorted(c.device_id for c in claimed)
    absent = ids[::5][:ABSENT]  # spread over the waves
    present = [d for d in ids if d not in absent]
    settings = FleetSettings(
        broker_host=stack.broker.host,
        broker_port=stack.broker.port,
        time_scale=60.0,
        duration_s=60.0 * 3600,
        lockouts_per_day=0.0,
        drain_s=30.0,
        resend_after_s=5.0,
        seed=3,
    )
    outage, stop = Outage(), asyncio.Event()
    identities = [Identity(c.device_id, c.key, c.password) for c in claimed]
    fleet = asyncio.create_task(
        run_fleet(identities, claimed[0].cloud_keys, settings, stop, outage)
    )

    def connections() -> dict[str, str]:
        return dict(query(stack, select(Twin.device_id, Twin.connection)))

    async def all_online() -> bool:
        return set(connections().values()) == {"online"} and len(connections()) == GATEWAYS

    await eventually(all_online, "every gateway online", timeout=60)

    # -- the absent ones go off the air --------------------------------------------------------
    outage.cut(absent)
    await eventually(
        lambda: asyncio.sleep(0, {connections()[d] for d in absent} == {"offline"}),
        "the absent gateways offline (their will)",
    )
    answer = await stack.api.put(
        "/api/v1/config/layers/fleet/*",
        json={"settings": {"report": {"heartbeat_s": 1200}}},
        headers=await stack.login("ada"),
    )
    assert answer.status_code == 200 and answer.json()["issued"] == GATEWAYS, answer.text
    await eventually(
        lambda: asyncio.sleep(0, set(config_states(stack, present).values()) == {"in_sync"}),
        "the present gateways configured",
    )
    with transaction(stack.sessions) as session:
        add_release(
            session,
            fake_wheel(tmp_path / "boilertwin-0.2.0-py3-none-any.whl", 32 * 1024),
            version=GOOD,
            min_agent="0.1.0",
            artifacts_dir=stack.directory / "artifacts",
            now_ms=int(time.time() * 1000),
            actor="test",
        )
    rollout = await start(stack, GOOD, [50, 100])
    done = await eventually(
        lambda: rollout_in(stack, rollout, "completed"), "the rollout to complete", timeout=90
    )
    # it did not wait for the absent ones, and it has not forgotten them
    assert done["gateways"] == {"succeeded": len(present), "straggling": ABSENT}, done
    assert set(config_states(stack, absent).values()) == {"pending"}
    expired = query(
        stack,
        select(Command.name, func.count())
        .where(Command.device_id.in_(absent), Command.state == "expired")
        .group_by(Command.name),
    )
    assert dict(expired) == {"configure": ABSENT, "update": ABSENT}, expired
    with stack.sessions() as session:
        assert fleet_versions(session) == {GOOD: len(present), "0.1.0": ABSENT}

    # -- they come back: the configuration and the update follow without anyone acting -------
    outage.restore(absent)

    async def caught_up() -> bool:
        with stack.sessions() as session:
            versions = fleet_versions(session)
        states = config_states(stack, absent)
        return versions == {GOOD: GATEWAYS} and set(states.values()) == {"in_sync"}

    await eventually(caught_up, "the stragglers updated and configured", timeout=90)

    async def all_succeeded() -> bool:
        view = await rollout_in(stack, rollout, "completed")
        return view is not None and view["gateways"] == {"succeeded": GATEWAYS}

    await eventually(all_succeeded, "the rollout to count the stragglers in")
    targets = query(
        stack,
        select(RolloutTarget.device_id, RolloutTarget.state).where(
            RolloutTarget.device_id.in_(absent)
        ),
    )
    assert sorted(targets) == [(d, "succeeded") for d in absent]

    stop.set()
    summary = await asyncio.wait_for(fleet, 60)
    # their readings waited in their outboxes through the outage and all arrived
    assert summary.pending == 0, "\n".join(summary.lines())
    assert summary.versions == {GOOD: GATEWAYS}
