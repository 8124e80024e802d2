"""The gateway lifecycle on a simulated fleet through the real broker and ``cloud serve``
(`tests.cloud.rollout_scenario`): claims, a configuration change, a good rollout in waves,
a bad one that halts itself and sends back every gateway it reached. ``make bench`` runs
the same story with 1,000 gateways."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.broker import Broker
from tests.cloud.rollout_scenario import GOOD, fake_wheel, lifecycle_stack, run_story
from tests.cloud.stack import Stack

pytestmark = pytest.mark.integration

GATEWAYS = 120


@pytest.fixture
async def stack(tmp_path: Path, broker: Broker, sqlite_url: str) -> AsyncIterator[Stack]:
    stack = lifecycle_stack(tmp_path / "cloud", broker, sqlite_url)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.close()


async def test_claims_config_and_waves_on_a_fleet_and_a_bad_release_undone(
    tmp_path: Path, stack: Stack
) -> None:
    wheel = fake_wheel(tmp_path / "boilertwin-0.2.0-py3-none-any.whl", 64 * 1024)
    figures = await run_story(stack, GATEWAYS, wheel)
    print("\n".join(["", *figures.lines()]))
    assert figures.versions_after == {GOOD: GATEWAYS}
    assert figures.bad_failed >= 1 and figures.bad_reached < GATEWAYS
    assert figures.bad_failed + figures.rolled_back == figures.bad_reached
    # every gateway downloaded each release it was sent exactly once, whole
    assert figures.artifact_bytes <= figures.downloaded_per_update <= figures.bad_artifact_bytes
