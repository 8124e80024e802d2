"""The loop supervisor, on virtual time: failures restart the loop, never end the process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from cloud.api.app import create_app
from cloud.backoff import Backoff
from cloud.supervisor import Supervisor
from tests.cloud.api_helpers import World, world_for


class VirtualTime:
    """A monotonic clock that only moves when the supervisor sleeps (or a loop says so)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def supervisor(time: VirtualTime) -> Supervisor:
    return Supervisor(
        lambda: 1_000,
        backoff=Backoff(min_s=1.0, max_s=8.0),
        min_delay_s=0.5,
        stable_s=60.0,
        sleep=time.sleep,
        monotonic=time.monotonic,
    )


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(db_url, tmp_path) as w:
        yield w


def failures_counted(loop: str) -> float:
    return REGISTRY.get_sample_value("boilertwin_loop_failures_total", {"loop": loop}) or 0.0


async def test_a_failing_loop_is_restarted_with_growing_backoff() -> None:
    time = VirtualTime()
    sup = supervisor(time)
    runs = 0
    forever = asyncio.Event()
    before = failures_counted("flaky")

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 4:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        await forever.wait()

    task = asyncio.create_task(sup.supervise("flaky", flaky))
    while runs < 5:
        await asyncio.sleep(0)
    (state,) = sup.states()
    assert state.running and sup.healthy
    assert (state.failures, state.restarts) == (4, 4)
    assert state.last_error == "OverflowError: Python int too large to convert to SQLite INTEGER"
    assert state.last_failure_ms == 1_000
    assert failures_counted("flaky") - before == 4
    # Full jitter under a cap that doubles: 1, 2, 4, 8 s, never below the floor.
    assert len(time.sleeps) == 4
    assert all(0.5 <= delay <= cap for delay, cap in zip(time.sleeps, (1, 2, 4, 8), strict=True))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not sup.states()[0].running


async def test_a_loop_that_returns_is_restarted_too() -> None:
    time = VirtualTime()
    sup = supervisor(time)
    runs = 0

    async def quits() -> None:
        nonlocal runs
        runs += 1
        if runs > 2:
            await asyncio.Event().wait()

    task = asyncio.create_task(sup.supervise("quits", quits))
    while runs < 3:
        await asyncio.sleep(0)
    assert sup.states()[0].last_error == "the loop ended by itself"
    assert sup.states()[0].restarts == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_long_run_starts_the_failure_count_afresh() -> None:
    time = VirtualTime()
    sup = supervisor(time)
    runs = 0

    async def fails_after_a_while() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            time.now += 3600  # this run lasted an hour before failing
        if runs == 4:
            await asyncio.Event().wait()
        raise RuntimeError(f"run {runs}")

    task = asyncio.create_task(sup.supervise("long", fails_after_a_while))
    while runs < 4:
        await asyncio.sleep(0)
    state = sup.states()[0]
    assert state.failures == 1 and state.restarts == 3 and state.last_error == "RuntimeError: run 3"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancellation_is_never_swallowed() -> None:
    time = VirtualTime()
    sup = supervisor(time)
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(sup.supervise("waits", waits))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sup.states()[0].restarts == 0 and time.sleeps == []


def test_healthz_reports_a_loop_waiting_to_be_restarted(world: World) -> None:
    time = VirtualTime()
    sup = supervisor(time)

    async def broken() -> None:
        raise ValueError("poisoned row")

    async def one_failure() -> None:
        task = asyncio.create_task(sup.supervise("housekeeping", broken))
        while not time.sleeps:
            await asyncio.sleep(0)
        task.cancel()

    asyncio.run(one_failure())
    app = create_app(
        world.settings,
        world.sessions,
        world.commands,
        world.platform,
        clock=world.clock,
        supervisor=sup,
    )
    with TestClient(app) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["loops"]["housekeeping"]["running"] is False
    assert body["loops"]["housekeeping"]["last_error"] == "ValueError: poisoned row"
