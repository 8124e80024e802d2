"""The cloud's MQTT session and command dispatcher on an in-memory link (no broker).

What the live-broker tests show end to end, here as logic on virtual time: PUBACK only after
ingest handled a message, nothing acked when the database is away, reconnects with capped
backoff, and the dispatcher's reading of PUBACK reason codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cloud.backoff import Backoff
from cloud.commands import CommandRequest, CommandService
from cloud.db import make_engine, session_factory, transaction
from cloud.dispatch import RETRY_S, Dispatcher
from cloud.domain import Caller, CommandState, Role
from cloud.ingest import IngestUnavailable, Outcome, Received
from cloud.keys import keygen
from cloud.models import Command, Twin
from cloud.mqtt import run_mqtt, subscriptions
from cloud.registry import add_device
from cloud.settings import CloudSettings
from protocols.cose import generate_private_key
from protocols.messages import CommandName
from protocols.reference import BoilerStatus
from protocols.topics import TopicKind, topic
from tests.clocks import FakeMsClock as Clock
from tests.cloud.memory_mqtt import MemoryBroker, MemoryLink, until

DEV = "boiler-0001"
T0 = 1_790_000_000_000
SETTINGS = CloudSettings(db_url="sqlite://", ingest_group="ingest")


class RecordingIngest:
    """Stands in for `Ingest`: records what it handled and how many acks had gone out then;
    raises `IngestUnavailable` for the next `unavailable` messages."""

    def __init__(self, link_acks: list[Any]) -> None:
        self.link_acks = link_acks
        self.handled: list[tuple[str, bytes, int]] = []
        self.batches: list[int] = []
        self.unavailable = 0

    def handle_many(self, deliveries: Sequence[Received]) -> list[Outcome]:
        if self.unavailable:
            self.unavailable -= 1
            raise IngestUnavailable("database unavailable")
        acks = len(self.link_acks)
        self.handled += [(d.topic, d.payload, acks) for d in deliveries]
        self.batches.append(len(deliveries))
        return [Outcome("accepted", "data", DEV) for _ in deliveries]


class Sleeps:
    """Virtual time for the reconnect loop: records each delay, waits none of it."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def running(coroutine: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(coroutine)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def data_topic() -> str:
    return topic(DEV, TopicKind.DATA)


# -- the ingest session -------------------------------------------------------------------------


async def test_subscribes_and_acks_each_delivery_only_after_it_was_handled() -> None:
    link = MemoryLink()
    ingest = RecordingIngest(link.acked)
    broker = MemoryBroker([link])
    async with running(run_mqtt(SETTINGS, ingest, open_link=broker)):  # type: ignore[arg-type]
        sent = [link.deliver(data_topic(), bytes([n])) for n in range(5)]
        await until(lambda: len(link.acked) == 5, "five acks")
    assert link.subscribed == subscriptions("ingest")
    assert link.acked == sent, "every delivery acked once, in arrival order"
    # when a message was handled, exactly the messages of earlier batches had been acked:
    # none ahead of its commit, none held back after theirs
    earlier = [sum(ingest.batches[:b]) for b, n in enumerate(ingest.batches) for _ in range(n)]
    assert [acks for _, _, acks in ingest.handled] == earlier
    assert sum(ingest.batches) == 5
    assert [payload for _, payload, _ in ingest.handled] == [bytes([n]) for n in range(5)]


async def test_batches_are_capped_and_acked_in_arrival_order() -> None:
    link = MemoryLink()
    ingest = RecordingIngest(link.acked)
    broker = MemoryBroker([link])
    settings = dataclasses.replace(SETTINGS, ingest_batch_max=3)
    async with running(run_mqtt(settings, ingest, open_link=broker)):  # type: ignore[arg-type]
        sent = [link.deliver(data_topic(), bytes([n])) for n in range(10)]
        await until(lambda: len(link.acked) == 10, "ten acks")
    assert link.acked == sent
    assert max(ingest.batches) == 3 and sum(ingest.batches) == 10


async def test_database_away_leaves_the_message_unacked_and_the_session_comes_back() -> None:
    first, second = MemoryLink(), MemoryLink()
    acks: list[Any] = []
    ingest = RecordingIngest(acks)
    ingest.unavailable = 1
    broker = MemoryBroker([first, second])
    sleeps = Sleeps()
    session = run_mqtt(SETTINGS, ingest, open_link=broker, sleep=sleeps)  # type: ignore[arg-type]
    async with running(session):
        first.deliver(data_topic(), b"m1")
        await until(lambda: broker.connects == 2, "a new session")
        assert first.acked == [], "not handled: the broker must send it again"
        second.deliver(data_topic(), b"m1")  # the broker's redelivery
        await until(lambda: len(second.acked) == 1, "the redelivery acked")
    assert [payload for _, payload, _ in ingest.handled] == [b"m1"]
    assert len(sleeps.delays) == 1 and 0 <= sleeps.delays[0] <= Backoff().min_s


async def test_refused_subscription_and_a_broker_down_back_off_capped_then_reconnect() -> None:
    refusing, good = MemoryLink(), MemoryLink()
    refusing.refused.add(subscriptions("ingest")[0][0])
    broker = MemoryBroker([refusing, good])
    backoff = Backoff(0.5, 4.0)
    sleeps = Sleeps()

    async def sleep(seconds: float) -> None:
        await sleeps(seconds)
        if len(sleeps.delays) == 1:
            broker.down = True  # after the refusal, the broker goes away for a while
        elif len(sleeps.delays) == 8:
            broker.down = False

    ingest = RecordingIngest(good.acked)
    session = run_mqtt(SETTINGS, ingest, open_link=broker, backoff=backoff, sleep=sleep)  # type: ignore[arg-type]
    async with running(session):
        await until(lambda: broker.connects == 2, "the second session")
        good.deliver(data_topic(), b"after")
        await until(lambda: len(good.acked) == 1, "served after reconnecting")
    assert refusing.acked == [] and broker.failed_connects == 7
    # the refused session had connected (failure 1); each failed connect doubles the cap
    caps = [min(4.0, 0.5 * 2 ** (n - 1)) for n in range(1, 9)]
    assert all(0 <= d <= cap for d, cap in zip(sleeps.delays, caps, strict=True)), sleeps.delays


async def test_cancel_ends_the_session_at_once() -> None:
    link = MemoryLink()
    broker = MemoryBroker([link])
    task = asyncio.create_task(run_mqtt(SETTINGS, RecordingIngest([]), open_link=broker))  # type: ignore[arg-type]
    await until(lambda: broker.connects == 1, "connected")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- the command dispatcher ---------------------------------------------------------------------


@pytest.fixture
def commands(db_url: str, tmp_path: Path) -> Any:
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    clock = Clock()
    settings = CloudSettings(db_url=db_url, command_ttl_s=600)
    service = CommandService(sessions, keygen(tmp_path / "keys", "cloud-test"), settings, clock)
    with transaction(sessions) as session:
        add_device(session, DEV, generate_private_key().public_key(), now_ms=T0, actor="test")
        twin = session.get(Twin, DEV)
        assert twin is not None
        twin.connection, twin.last_seen_ms = "online", T0
        twin.status = int(BoilerStatus.LOCKOUT)
    yield service, sessions, clock, settings
    engine.dispose()


def restart(service: CommandService) -> str:
    request = CommandRequest(CommandName.RESTART, {}, "F28 repaired on site")
    row, _ = service.create(Caller("sue", Role.SUPPORT), DEV, request)
    return str(row.id)


def command(sessions: sessionmaker[Session], command_id: str) -> Command:
    with sessions() as session:
        row = session.get(Command, command_id)
        assert row is not None
        return row


async def test_accepted_puback_marks_the_command_sent(commands: Any) -> None:
    service, sessions, clock, settings = commands
    command_id = restart(service)
    link = MemoryLink()
    assert await Dispatcher(sessions, settings, clock).dispatch_once(link) == 1
    assert link.published == [(topic(DEV, TopicKind.CMD), command(sessions, command_id).envelope)]
    row = command(sessions, command_id)
    assert (row.state, row.publish_attempts) == (CommandState.SENT.value, 1)


@pytest.mark.parametrize("code", [0x10, 0x87, 0x97])
async def test_no_subscriber_or_refusal_keeps_it_created_and_offers_it_again_later(
    commands: Any, code: int
) -> None:
    service, sessions, clock, settings = commands
    command_id = restart(service)
    answers = [code]
    link = MemoryLink(puback=lambda _: answers[0])
    dispatcher = Dispatcher(sessions, settings, clock)
    assert await dispatcher.dispatch_once(link) == 0
    row = command(sessions, command_id)
    assert (row.state, row.publish_attempts) == (CommandState.CREATED.value, 1)
    assert await dispatcher.dispatch_once(link) == 0 and len(link.published) == 1, "not yet due"
    clock.now += int(RETRY_S * 1000)
    answers[0] = 0  # the device's session exists now
    assert await dispatcher.dispatch_once(link) == 1
    row = command(sessions, command_id)
    assert (row.state, row.publish_attempts) == (CommandState.SENT.value, 2)


async def test_a_running_dispatcher_sends_a_new_command_when_the_service_wakes_it(
    commands: Any,
) -> None:
    service, sessions, clock, settings = commands
    link = MemoryLink()
    dispatcher = Dispatcher(sessions, settings, clock)
    service.wake = dispatcher.wake
    async with running(dispatcher.run(link)):
        await until(lambda: dispatcher._event is not None, "the dispatcher running")
        command_id = await asyncio.to_thread(restart, service)
        await until(lambda: len(link.published) == 1, "the command published")
        await until(lambda: command(sessions, command_id).state == CommandState.SENT.value, "sent")
