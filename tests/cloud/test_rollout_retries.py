"""Downloads that break off: a share of the simulated fleet loses its first download of the
release (a dead cell mid-download, ``download_failed``). Through the real broker and
``cloud serve``, the rollout sends them the update again instead of counting them as failed,
so a failure rate far above the rollout's limit does not halt a good release, and every
gateway ends on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud.db import transaction
from cloud.rollouts import add_release, fleet_versions
from hw_sim.fleet import FleetSettings, Identity, run_fleet
from hw_sim.fleet_lifecycle import claim_gateways
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

GATEWAYS = 20
CUT_SHARE = 0.4
"""Far above the rollout's `max_failure_rate` of 0.1 (`rollout_scenario.start`)."""


@pytest.fixture
async def stack(tmp_path: Path, broker: Broker, sqlite_url: str) -> AsyncIterator[Stack]:
    stack = lifecycle_stack(tmp_path / "cloud", broker, sqlite_url)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.close()


async def test_broken_off_downloads_are_tried_again_and_the_release_lands_everywhere(
    tmp_path: Path, stack: Stack
) -> None:
    now = int(time.time() * 1000)
    token = claim_token(stack, GATEWAYS, "b")
    with transaction(stack.sessions) as session:
        add_release(
            session,
            fake_wheel(tmp_path / "boilertwin-0.2.0-py3-none-any.whl", 16 * 1024),
            version=GOOD,
            min_agent="0.1.0",
            artifacts_dir=stack.directory / "artifacts",
            now_ms=now,
            actor="test",
        )
    claimed, _ = await claim_gateways(GATEWAYS, f"http://127.0.0.1:{stack.api_port}", token)
    settings = FleetSettings(
        broker_host=stack.broker.host,
        broker_port=stack.broker.port,
        time_scale=60.0,
        duration_s=60.0 * 3600,
        lockouts_per_day=0.0,
        cut_download_share=CUT_SHARE,
        seed=11,
    )
    stop = asyncio.Event()
    identities = [Identity(c.device_id, c.key, c.password) for c in claimed]
    fleet = asyncio.create_task(run_fleet(identities, claimed[0].cloud_keys, settings, stop))

    async def all_born() -> bool:
        with stack.sessions() as session:
            return fleet_versions(session) == {"0.1.0": GATEWAYS}

    await eventually(all_born, "every gateway's birth", timeout=60)
    rollout = await start(stack, GOOD, [50, 100])
    done = await eventually(
        lambda: rollout_in(stack, rollout, "completed"), "the rollout to complete", timeout=90
    )
    assert done["gateways"] == {"succeeded": GATEWAYS}, done
    with stack.sessions() as session:
        assert fleet_versions(session) == {GOOD: GATEWAYS}

    stop.set()
    summary = await asyncio.wait_for(fleet, 60)
    cut = summary.lifecycle.outcomes["update:download_failed"]
    assert cut >= 3, f"the cohort is too small to prove anything: {summary.lifecycle.outcomes}"
    assert done["downloads_retried"] == cut, (done, summary.lifecycle.outcomes)
    assert summary.lifecycle.outcomes["update:succeeded"] == GATEWAYS
    assert summary.versions == {GOOD: GATEWAYS}
