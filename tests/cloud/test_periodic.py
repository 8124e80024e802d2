"""`cloud.periodic.every` on virtual time: rounds, a database outage skipped, a bug ends it."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import OperationalError

from cloud.periodic import every


class Stop(Exception):
    """Ends the loop from inside `work` once the test has seen enough."""


async def test_rounds_come_every_interval_and_an_outage_skips_only_its_round() -> None:
    slept: list[float] = []
    rounds: list[int] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    def work() -> None:
        rounds.append(len(slept))
        if len(rounds) == 2:
            raise OperationalError("SELECT 1", {}, Exception("database is away"))
        if len(rounds) == 4:
            raise Stop

    with pytest.raises(Stop):
        await every(30.0, work, "test", sleep=sleep)
    assert rounds == [1, 2, 3, 4], "a round after every interval, the failed one included"
    assert slept == [30.0] * 4


async def test_without_wait_first_the_first_round_is_at_once() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    def work() -> None:
        if slept:
            raise Stop

    with pytest.raises(Stop):
        await every(5.0, work, "test", wait_first=False, sleep=sleep)
    assert slept == [5.0]
