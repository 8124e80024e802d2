"""The uplink on an in-memory MQTT session and virtual time (no broker, no real waiting).

The live-broker tests (`test_agent_delivery.py`) prove delivery end to end; these pin the
uplink's own rules: online, subscribe, birth, then the outbox oldest first, each message
acknowledged only on its PUBACK; what was in flight when a connection died goes again; the
reconnect backoff is capped; commands reach the queue, and a full queue is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge_agent.config import MqttSettings
from edge_agent.outbox import Outbox
from edge_agent.store import Store
from edge_agent.uplink import Uplink
from protocols.cose import generate_private_key, open_uplink, seal
from protocols.messages import Birth, Quality, Reading, TelemetryBatch
from protocols.topics import STATE_OFFLINE, STATE_ONLINE, TopicKind, topic
from tests.clocks import FakeClock
from tests.edge_agent.memory_mqtt import MemoryBroker, MemorySession, until

DEV = "boiler-0001"
SETTINGS = MqttSettings(inflight=4, reconnect_min_s=1.0, reconnect_max_s=60.0)


class Rig:
    """An uplink over a real outbox (SQLite in a temp dir) and an in-memory broker."""

    def __init__(self, directory: Path, broker: MemoryBroker, queue_size: int = 4) -> None:
        self.watermarks: list[bytes] = []
        self.clock = FakeClock(step=1.0)
        self.key = generate_private_key()
        self.store = Store(
            directory / "outbox.db", wall_ms=lambda: int(self.clock.wall() * 1000), device_id=DEV
        )
        self.outbox = Outbox.open(
            self.store,
            device_id=DEV,
            seal=lambda message: seal(message, self.key),
            max_bytes=1 << 20,
            wall_ms=lambda: int(self.clock.wall() * 1000),
            clock_trusted=lambda: True,
        )
        self.commands: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_size)
        self.broker = broker
        self.uplink = Uplink(
            SETTINGS,
            device_id=DEV,
            username=DEV,
            password=None,
            outbox=self.outbox,
            make_birth=self.birth,
            commands=self.commands,
            clock=self.clock,
            connect=broker,
            on_stored=self.watermarks.append,
        )

    def birth(self) -> Birth:
        return Birth(
            dev=DEV,
            epoch=0,
            seq=0,
            ts=int(self.clock.wall() * 1000),
            sync=True,
            agent_version="test",
            map_id="bt-ref-1",
            map_hash="0" * 64,
            capabilities=("restart",),
        )

    def data(self, value: float) -> int:
        """Store a telemetry batch; its seq."""
        ts = int(self.clock.wall() * 1000)
        batch = TelemetryBatch(
            dev=DEV,
            epoch=0,
            seq=0,
            ts=ts,
            sync=True,
            readings=(Reading("flow_temp", ts, value, Quality.GOOD),),
        )
        return self.outbox.append(batch).seq

    def seqs(self, session: MemorySession, kind: TopicKind, acknowledged: bool = True) -> list[int]:
        wanted = topic(DEV, kind)
        messages = session.acknowledged if acknowledged else session.published
        return [
            open_uplink(m.payload, m.topic, lambda kid: self.key.public_key()).seq
            for m in messages
            if m.topic == wanted
        ]


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


@contextlib.asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(rig.uplink.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        rig.store.close()


async def test_a_session_says_online_subscribes_births_then_drains_oldest_first(
    directory: Path,
) -> None:
    session = MemorySession()
    rig = Rig(directory, MemoryBroker(session))
    waiting = [rig.data(float(n)) for n in range(10)]  # stored while offline
    async with running(rig):
        await until(lambda: rig.outbox.figures.depth == 0, "the outbox drained")
    first = session.published[0]
    assert (first.topic, first.payload, first.retain) == (
        topic(DEV, TopicKind.STATE),
        STATE_ONLINE,
        True,
    )
    assert session.subscribed == [topic(DEV, TopicKind.CMD), topic(DEV, TopicKind.STORED)]
    assert rig.seqs(session, TopicKind.DATA) == waiting, "oldest first, each once"
    assert rig.seqs(session, TopicKind.BIRTH) == [waiting[-1] + 1], "birth stored after them"
    assert rig.uplink.figures.published == 11
    assert rig.broker.connects == 1 and rig.uplink.figures.connected


async def test_unacknowledged_messages_stay_stored_and_go_again_after_a_lost_connection(
    directory: Path,
) -> None:
    lost, next_session = MemorySession(), MemorySession()
    lost.hold = topic(DEV, TopicKind.DATA)  # no PUBACK for data on the first connection
    rig = Rig(directory, MemoryBroker(lost, next_session))
    seqs = [rig.data(float(n)) for n in range(6)]
    async with running(rig):
        await until(lambda: len(lost.published) >= 1 + SETTINGS.inflight, "a full window in flight")
        assert len(rig.outbox.in_flight) == SETTINGS.inflight, "no more than inflight at once"
        assert rig.outbox.figures.depth == 7, "nothing acknowledged: all still stored"
        lost.drop()
        await until(lambda: rig.outbox.figures.depth == 0, "drained on the next connection")
    assert rig.seqs(lost, TopicKind.DATA) == []
    assert rig.seqs(next_session, TopicKind.DATA) == seqs, "what was in flight went again"
    assert rig.uplink.figures.disconnects == 1 and rig.uplink.figures.connects == 2
    assert rig.clock.slept and rig.clock.slept[0] <= SETTINGS.reconnect_min_s


async def test_broker_down_backs_off_capped_and_counts_failures(directory: Path) -> None:
    session = MemorySession()
    broker = MemoryBroker(session)
    broker.down = True
    rig = Rig(directory, broker)
    async with running(rig):
        await until(lambda: broker.refused >= 12, "a dozen refused connects")
        broker.down = False
        await until(lambda: broker.connects == 1, "connected once the broker is back")
    assert rig.uplink.figures.connect_failures == broker.refused
    caps = [min(SETTINGS.reconnect_max_s, SETTINGS.reconnect_min_s * 2**n) for n in range(12)]
    waits = _backoff_waits(rig.clock.slept)[:12]
    assert len(waits) == 12
    assert all(0 <= wait <= cap for wait, cap in zip(waits, caps, strict=True)), waits


def _backoff_waits(slept: list[float]) -> list[float]:
    """Whole backoff delays from the uplink's sleeps (it sleeps at most 5 s at a time)."""
    waits, current = [], 0.0
    for seconds in slept:
        current += seconds
        if seconds < 5.0:
            waits.append(current)
            current = 0.0
    return waits


async def test_commands_reach_the_queue_and_a_full_queue_is_counted(directory: Path) -> None:
    session = MemorySession()
    rig = Rig(directory, MemoryBroker(session), queue_size=2)
    async with running(rig):
        await until(lambda: session.subscribed != [], "subscribed")
        session.deliver(topic("boiler-0002", TopicKind.CMD), b"not ours")
        for n in range(3):
            session.deliver(topic(DEV, TopicKind.CMD), bytes([n]))
        await until(lambda: rig.uplink.figures.commands_dropped == 1, "the third dropped")
    assert [rig.commands.get_nowait() for _ in range(2)] == [b"\x00", b"\x01"]
    assert rig.uplink.figures.commands_received == 3


async def test_the_clouds_watermarks_go_to_delivery_not_to_the_command_queue(
    directory: Path,
) -> None:
    session = MemorySession()
    rig = Rig(directory, MemoryBroker(session))
    async with running(rig):
        await until(lambda: len(session.subscribed) == 2, "subscribed")
        session.deliver(topic(DEV, TopicKind.STORED), b"watermark")
        await until(lambda: rig.watermarks == [b"watermark"], "handed to delivery")
    assert rig.commands.empty() and rig.uplink.figures.commands_received == 0


async def test_stopping_says_offline_before_leaving(directory: Path) -> None:
    session = MemorySession()
    rig = Rig(directory, MemoryBroker(session))
    async with running(rig):
        await until(lambda: session.subscribed != [], "subscribed")
    last = session.published[-1]
    assert (last.topic, last.payload, last.retain) == (
        topic(DEV, TopicKind.STATE),
        STATE_OFFLINE,
        True,
    )


@pytest.mark.parametrize("code", [0x10, 0x87])
async def test_a_message_the_broker_did_not_pass_on_is_kept_and_offered_again(
    directory: Path, code: int
) -> None:
    answers = {"code": code}
    session = MemorySession(
        puback=lambda name: answers["code"] if name == topic(DEV, TopicKind.DATA) else 0
    )
    rig = Rig(directory, MemoryBroker(session))
    seqs = [rig.data(1.0), rig.data(2.0)]
    async with running(rig):
        await until(lambda: rig.uplink.figures.not_delivered >= 4, "offered again and again")
        assert rig.outbox.figures.depth == 2, "both kept (the birth went through)"
        answers["code"] = 0  # a subscriber is back
        await until(lambda: rig.outbox.figures.depth == 0, "delivered at last")
    assert rig.seqs(session, TopicKind.DATA) == seqs
    waits = [s for s in rig.clock.slept if s >= SETTINGS.reconnect_min_s]
    assert waits, "a backoff between offers, not a tight loop"
