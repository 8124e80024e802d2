"""Check-then-act rules hold under many parallel requests, on SQLite and PostgreSQL.

The finding: 8 concurrent restart requests as support, with one restart already counted,
returned 7 x 202 on SQLite, because counting the recent restarts and inserting the new one
held no write lock (``with_for_update`` is a no-op there). Every rule written with
``with_for_update()`` now takes SQLite's write lock first (`cloud.db.take_write_lock`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select

from cloud.commands import CommandRequest, CommandService
from cloud.db import make_engine, session_factory, transaction
from cloud.domain import Caller, Role
from cloud.errors import CloudError, RateLimited
from cloud.keys import keygen
from cloud.models import Command, Engineer, Twin
from cloud.registry import add_device
from cloud.settings import CloudSettings
from protocols.cose import generate_private_key
from protocols.messages import CommandName
from protocols.reference import BoilerStatus
from tests.broker import Broker
from tests.cloud.api_helpers import World, world_for
from tests.cloud.service_helpers import REPAIR, engineer, lockout_boiler, running
from tests.cloud.stack import Stack

DEV = "boiler-0001"
SUPPORT = Caller("sue", Role.SUPPORT)
PARALLEL = 16
T = TypeVar("T")


def all_at_once(count: int, call: Callable[[], T]) -> list[T | CloudError]:
    """`call` from `count` threads released together; each result or cloud error."""
    barrier = threading.Barrier(count)

    def one() -> T | CloudError:
        barrier.wait()
        try:
            return call()
        except CloudError as refused:
            return refused

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: one(), range(count)))


def online_in_lockout(sessions: Any, now: int) -> None:
    with transaction(sessions) as session:
        add_device(session, DEV, generate_private_key().public_key(), now_ms=now, actor="test")
        twin = session.get(Twin, DEV)
        assert twin is not None
        twin.connection, twin.last_seen_ms = "online", now
        twin.status = int(BoilerStatus.LOCKOUT)


@pytest.fixture
def service(db_url: str, tmp_path: Path) -> Iterator[CommandService]:
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    now = int(time.time() * 1000)
    online_in_lockout(sessions, now)
    settings = CloudSettings(db_url=db_url, restart_limit=5, restart_window_s=900)
    yield CommandService(sessions, keygen(tmp_path / "keys", "cloud-test"), settings)
    engine.dispose()


def test_the_restart_limit_holds_under_parallel_requests(service: CommandService) -> None:
    request = CommandRequest(CommandName.RESTART, {}, "F28 repaired, checked on site")
    service.create(SUPPORT, DEV, request)  # one restart already counted
    results = all_at_once(PARALLEL, lambda: service.create(SUPPORT, DEV, request))
    created = [r for r in results if not isinstance(r, CloudError)]
    refused = [r for r in results if isinstance(r, CloudError)]
    assert len(created) == 4, refused
    assert len(refused) == PARALLEL - 4 and all(isinstance(r, RateLimited) for r in refused)
    with service.sessions() as session:
        stored = session.scalar(select(func.count()).select_from(Command))
    assert stored == 5


@pytest.mark.integration
async def test_the_restart_limit_holds_through_the_http_api(
    tmp_path: Path, broker: Broker, db_url: str
) -> None:
    """The attack as it was made: parallel POSTs to a running ``cloud serve``."""
    stack = Stack(tmp_path / "cloud", broker, db_url)
    stack.user("sue", Role.SUPPORT)
    online_in_lockout(stack.sessions, int(time.time() * 1000))
    await stack.start()
    try:
        first = await stack.restart("sue", DEV)
        assert first.status_code == 202, first.text
        answers = await asyncio.gather(*(stack.restart("sue", DEV) for _ in range(8)))
    finally:
        await stack.close()
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [202] * 4 + [429] * 4, [a.text for a in answers]


@pytest.fixture
def verified(db_url: str, tmp_path: Path) -> Iterator[tuple[World, str, str]]:
    """A repair verified by live data, and the tenant's one-time evaluation token."""
    with world_for(db_url, tmp_path, verify_normal_s=60.0, newcomer_slots=0) as world:
        lockout_boiler(world)
        engineer(world, "eve", invitations=4, accepted=3, evaluated=2, cs_sum=9.0, sq_sum=8.0)
        tom, olivia, eve = world.login("tom"), world.login("olivia"), world.login("eve")
        job = world.client.post("/api/v1/jobs", json=REPAIR, headers=tom).json()
        url = f"/api/v1/jobs/{job['id']}"
        world.client.post(f"{url}/authorize", json={"approve": True}, headers=olivia)
        answer = {"available": True, "quote": 190.0, "location": {"lat": 53.47, "lon": -2.24}}
        world.client.post(f"{url}/response", json=answer, headers=eve)
        world.client.post(f"{url}/select", json={"engineer_id": "eve"}, headers=olivia)
        report = {"cause": "worn electrode", "actions": "replaced", "parts": ["electrode"]}
        assert world.client.post(f"{url}/complete", json=report, headers=eve).status_code == 200
        running(world)
        world.platform.sweep()
        world.clock.now += 61_000
        running(world)
        world.platform.sweep()
        notes = world.client.get("/api/v1/notifications", headers=tom).json()["items"]
        token = next(n["data"]["evaluation_token"] for n in notes if n["kind"] == "evaluate")
        yield world, job["id"], token


def test_a_job_is_evaluated_once_under_parallel_submissions(
    verified: tuple[World, str, str],
) -> None:
    world, job_id, token = verified
    tom = Caller("tom", Role.TENANT)
    results = all_at_once(
        PARALLEL, lambda: world.platform.evaluate(tom, job_id, token, 5, 4, "great")
    )
    assert sum(not isinstance(r, CloudError) for r in results) == 1, results
    with world.sessions() as session:
        eve = session.get(Engineer, "eve")
    assert eve is not None and (eve.evaluated, eve.cs_sum, eve.sq_sum) == (3, 14.0, 12.0)
