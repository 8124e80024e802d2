"""Ingest over a real Mosquitto (project config, ACL) into a real database, both backends.

Devices publish real signed messages with their broker accounts; two ingest workers share
the subscription; real edge agents on simulated boilers are restarted mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.backoff import Backoff
from cloud.db import make_engine, session_factory
from cloud.domain import wall_ms
from cloud.ingest import Ingest, IngestUnavailable, Outcome, Received
from cloud.models import Gap, Sample, Twin, Uplink
from cloud.mqtt import run_mqtt
from cloud.settings import CloudSettings
from cloud.twin.gaps import detect_gaps
from protocols.cose import MAX_ENVELOPE_BYTES, generate_private_key, seal
from protocols.messages import TelemetryBatch
from protocols.topics import TopicKind, topic
from tests.broker import CLOUD_PASSWORD, Broker
from tests.cloud.helpers import register, state_topic, topic_of
from tests.edge_agent.harness import Gateway

pytestmark = pytest.mark.integration

DEV, OTHER = "boiler-0001", "boiler-0002"


class RecordingIngest(Ingest):
    """Ingest that keeps every (topic, outcome), for the test to wait on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: list[tuple[str, Outcome]] = []
        self._guard = threading.Lock()

    def handle_many(self, deliveries: Sequence[Received]) -> list[Outcome]:
        outcomes = super().handle_many(deliveries)
        with self._guard:
            self.outcomes += [(d.topic, o) for d, o in zip(deliveries, outcomes, strict=True)]
        return outcomes

    def seen(self, predicate: Callable[[str, Outcome], bool]) -> int:
        with self._guard:
            return sum(1 for t, o in self.outcomes if predicate(t, o))


async def until(predicate: Callable[[], bool], timeout: float = 15, what: str = "") -> None:
    """Poll `predicate` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.05)


class Cloud:
    """Ingest workers on one database, each a `run_mqtt` task with its own client id."""

    def __init__(self, db_url: str, broker: Broker, directory: Path) -> None:
        self.engine = make_engine(db_url)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        password = directory / "cloud.password"
        password.write_text(CLOUD_PASSWORD)
        self.base = CloudSettings(
            db_url=db_url,
            broker_host=broker.host,
            broker_port=broker.port,
            mqtt_username="cloud",
            mqtt_password_file=password,
            mqtt_session_expiry_s=600,
            ingest_group="ingest",
        )
        self.workers: dict[str, RecordingIngest] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, client_id: str) -> RecordingIngest:
        settings = self.base.replace(mqtt_client_id=client_id)
        worker = self.workers.get(client_id) or RecordingIngest(self.sessions, wall_ms, settings)
        self.workers[client_id] = worker
        self.tasks[client_id] = asyncio.create_task(
            run_mqtt(settings, worker, backoff=Backoff(0.05, 0.2)), name=client_id
        )
        return worker

    async def stop(self, client_id: str) -> None:
        task = self.tasks.pop(client_id)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close(self) -> None:
        for client_id in list(self.tasks):
            await self.stop(client_id)
        self.engine.dispose()

    def outcomes(self) -> list[tuple[str, Outcome]]:
        return [item for worker in self.workers.values() for item in worker.outcomes]

    def twin(self, device_id: str) -> Twin | None:
        with self.sessions() as session:
            return session.get(Twin, device_id)

    def count(self, model: Any, device_id: str) -> int:
        with self.sessions() as session:
            query = select(func.count()).select_from(model).where(model.device_id == device_id)
            return session.scalar(query) or 0


@pytest.fixture
async def cloud(db_url: str, broker: Broker, tmp_path: Path) -> AsyncIterator[Cloud]:
    c = Cloud(db_url, broker, tmp_path)
    yield c
    await c.close()


async def subscribed(cloud: Cloud, broker: Broker, worker: RecordingIngest) -> None:
    """Wait until `worker` receives a retained state, i.e. its subscriptions are in place."""
    async with broker.client(OTHER, identifier=OTHER) as client:
        await client.publish(state_topic(OTHER), b"online", qos=1, retain=True)
    await until(lambda: worker.seen(lambda t, _: t == state_topic(OTHER)) > 0, what="subscribe")


async def test_bad_messages_are_rejected_and_the_honest_device_is_unaffected(
    cloud: Cloud, broker: Broker
) -> None:
    dev, other = register(cloud.sessions, DEV), register(cloud.sessions, OTHER)
    for d in (dev, other):
        d.ts = wall_ms()
    worker = cloud.start("ingest-a")
    await subscribed(cloud, broker, worker)

    first = [dev.data([("flow_temp", dev.ts, 60.0 + i)]) for i in range(3)]
    forged = dev.data([("flow_temp", dev.ts, 99.0)], seq=3)
    lying = TelemetryBatch(dev=DEV, epoch=1, seq=1, ts=dev.ts, sync=True, readings=())
    bad: list[tuple[str, str, bytes]] = [
        # (account, topic, payload) -> rejected
        (DEV, topic_of(forged), dev.seal(forged, generate_private_key())),
        (OTHER, topic(OTHER, TopicKind.DATA), dev.seal(first[0])),  # A's envelope, B's topic
        (OTHER, topic(OTHER, TopicKind.DATA), seal(lying, other.key, kid=OTHER)),
        (OTHER, topic(OTHER, TopicKind.EVENT), b"\xd2\x84 not cbor"),
        (OTHER, topic(OTHER, TopicKind.EVENT), b"\0" * (MAX_ENVELOPE_BYTES + 1)),
        (OTHER, state_topic(OTHER), b"hacked"),
    ]
    async with (
        broker.client(DEV, identifier=DEV) as device,
        broker.client(OTHER, identifier=OTHER) as attacker,
    ):
        for message in first:
            await device.publish(topic_of(message), dev.seal(message), qos=1)
        for account, name, payload in bad:
            await (device if account == DEV else attacker).publish(name, payload, qos=1)
        # The ACL drops B publishing under A's prefix: it never reaches ingest.
        await attacker.publish(topic_of(first[1]), other.seal(first[1]), qos=1)
        await device.publish(topic_of(first[1]), dev.seal(first[1]), qos=1)  # a replay
        last = dev.data([("flow_temp", dev.ts, 64.0)])
        await device.publish(topic_of(last), dev.seal(last), qos=1)

        await until(lambda: worker.seen(lambda _, o: o.seq == last.seq) == 1, what="last")
        await until(lambda: len(worker.outcomes) >= 1 + len(first) + len(bad) + 2, what="all")

    got = sorted((o.outcome, o.reason) for t, o in worker.outcomes if t != state_topic(OTHER))
    assert got == sorted(
        [("accepted", "data")] * 4
        + [("duplicate", "data")]
        + [("rejected", "bad_signature")]
        + [("rejected", "wrong_device")] * 2
        + [("rejected", "malformed")]
        + [("rejected", "oversized")]
    )
    assert worker.seen(lambda t, o: t == state_topic(OTHER) and o.outcome == "rejected") == 1
    twin = cloud.twin(DEV)
    assert twin is not None and (twin.received, twin.max_seq, twin.contiguous_seq) == (4, 4, 4)
    other_twin = cloud.twin(OTHER)
    assert other_twin is not None and other_twin.received == 0 and other_twin.max_seq is None
    assert cloud.count(Uplink, OTHER) == 0
    assert worker.flush_counters()
    twin = cloud.twin(DEV)
    assert twin is not None and twin.duplicates == 1


class FlakyDatabaseIngest(RecordingIngest):
    """Ingest whose database is down for the first `failures` batches of signed messages."""

    failures = 0

    def handle_many(self, deliveries: Sequence[Received]) -> list[Outcome]:
        if self.failures and any(not d.topic.endswith("/state") for d in deliveries):
            self.failures -= 1
            raise IngestUnavailable("database down (test)")
        return super().handle_many(deliveries)


async def test_a_message_is_acked_only_once_committed(cloud: Cloud, broker: Broker) -> None:
    """Database down on receipt: no PUBACK, the session is dropped, the broker re-delivers."""
    dev = register(cloud.sessions, DEV)
    dev.ts = wall_ms()
    settings = cloud.base.replace(mqtt_client_id="ingest-flaky")
    worker = FlakyDatabaseIngest(cloud.sessions, wall_ms, settings)
    cloud.workers["ingest-flaky"] = worker
    cloud.tasks["ingest-flaky"] = asyncio.create_task(
        run_mqtt(settings, worker, backoff=Backoff(0.05, 0.2))
    )
    await subscribed(cloud, broker, worker)
    worker.failures = 2
    message = dev.data([("flow_temp", dev.ts, 55.0)])
    async with broker.client(DEV, identifier=DEV) as device:
        await device.publish(topic_of(message), dev.seal(message), qos=1)
    await until(lambda: worker.seen(lambda _, o: o.seq == message.seq) == 1, what="redelivery")
    assert worker.failures == 0
    twin = cloud.twin(DEV)
    assert twin is not None and twin.received == 1


async def test_worker_reconnects_after_a_broker_restart(cloud: Cloud, broker: Broker) -> None:
    """The worker comes back by itself and subscribes again.

    Mosquitto 2.0.11 restores plain subscriptions of a persistent session after a restart
    but not shared ones: until a worker is back, data is PUBACKed with "no matching
    subscribers" and dropped. Those seqs then surface as unexplained gaps (`cloud.twin.gaps`).
    """
    dev = register(cloud.sessions, DEV)
    dev.ts = wall_ms()
    worker = cloud.start("ingest-a")
    await subscribed(cloud, broker, worker)
    await broker.restart()
    # The retained state is delivered again once the worker has re-subscribed.
    await until(lambda: worker.seen(lambda t, _: t == state_topic(OTHER)) == 2, what="back")
    message = dev.data([("flow_temp", dev.ts, 55.0)])
    async with broker.client(DEV, identifier=DEV) as device:
        await device.publish(topic_of(message), dev.seal(message), qos=1)
    await until(lambda: worker.seen(lambda _, o: o.seq == message.seq) == 1, what="message")


def outbox_state(path: Path) -> tuple[int, int]:
    """(messages left in the agent's outbox, highest seq it ever stored)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        depth = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        top = db.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
        high = db.execute("SELECT value FROM meta WHERE key = 'high_seq'").fetchone()
    return int(depth), max(int(top), int(high[0]) if high else 0)


@pytest.fixture
async def gateways(
    tmp_path: Path, broker: Broker, start_sim: Callable[..., Any]
) -> AsyncIterator[list[Gateway]]:
    made = []
    for device_id in (DEV, OTHER):
        sim = await start_sim(time_scale=120.0)
        await sim.control("/demand", {"ch": "on"})  # values keep moving: batches keep coming
        gateway = Gateway(
            tmp_path / device_id, broker, sim.pty, device_id=device_id, health={"interval_s": 0.3}
        )
        made.append(gateway)
    yield made
    for gateway in made:
        await gateway.cancel()


def accepted(cloud: Cloud, device_id: str) -> int:
    """Signed messages from `device_id` accepted so far."""
    return sum(
        o.outcome == "accepted" and o.reason != "state" and o.device_id == device_id
        for _, o in cloud.outcomes()
    )


async def more(cloud: Cloud, gateways: list[Gateway], n: int, what: str) -> None:
    """Wait until `n` more messages of every gateway have been accepted."""
    seen = {g.device_id: accepted(cloud, g.device_id) for g in gateways}
    await until(lambda: all(accepted(cloud, d) >= k + n for d, k in seen.items()), 20, what)


async def test_two_workers_store_every_seq_once_while_agents_and_workers_restart(
    cloud: Cloud, broker: Broker, gateways: list[Gateway]
) -> None:
    for gateway in gateways:
        register(cloud.sessions, gateway.device_id, key=gateway.key)
    a, b = cloud.start("ingest-a"), cloud.start("ingest-b")
    await subscribed(cloud, broker, a)
    await subscribed(cloud, broker, b)

    for gateway in gateways:
        await gateway.start()
    await more(cloud, gateways, 4, "first messages")
    # An agent dies mid-stream (its unacked messages are sent again by the next run) while
    # a worker is away: the broker keeps its share for its persistent session meanwhile.
    await gateways[0].cancel()
    await cloud.stop("ingest-b")
    await gateways[0].start()
    # (Not per device: Mosquitto keeps dealing the absent worker its turn, which can be every
    # message of one device when two devices' messages alternate.)
    total = sum(accepted(cloud, g.device_id) for g in gateways)
    await until(
        lambda: sum(accepted(cloud, g.device_id) for g in gateways) >= total + 4,
        20,
        "messages with one worker",
    )
    cloud.start("ingest-b")
    await gateways[1].cancel()
    await gateways[1].start()
    await more(cloud, gateways, 4, "messages after the restarts")
    for gateway in gateways:
        await gateway.stop()

    for gateway in gateways:
        depth, high = outbox_state(gateway.outbox_path)
        assert depth == 0, "graceful stop drained the outbox"

        def complete(device_id: str = gateway.device_id, high: int = high) -> bool:
            twin = cloud.twin(device_id)
            return twin is not None and twin.max_seq == high and twin.contiguous_seq == high

        await until(complete, 20, f"{gateway.device_id} complete")
        await until(
            lambda g=gateway: getattr(cloud.twin(g.device_id), "connection", "") == "offline"
        )
        twin = cloud.twin(gateway.device_id)
        assert twin is not None
        assert cloud.count(Uplink, gateway.device_id) == high == twin.received, "each seq once"
        assert twin.lost_accounted == 0 and cloud.count(Gap, gateway.device_id) == 0
        with cloud.sessions() as session:
            rows = session.execute(
                select(Sample.seq, Sample.point, Sample.ts_ms, func.count())
                .where(Sample.device_id == gateway.device_id)
                .group_by(Sample.seq, Sample.point, Sample.ts_ms)
                .having(func.count() > 1)
            ).all()
        assert rows == [], "no reading stored twice"
    assert detect_gaps(cloud.sessions, wall_ms() + 3_600_000, 0) == []
    assert {o.outcome for _, o in cloud.outcomes()} <= {"accepted", "duplicate"}
    for worker in (a, b):
        assert any(o.outcome == "accepted" and o.reason != "state" for _, o in worker.outcomes)


async def test_a_cancelled_session_always_stops(broker: Broker, tmp_path: Path) -> None:
    """Shutdown never hangs: a session cancelled at any moment of its connect and subscribe
    stops. (aiomqtt's waits dropped a cancel racing CONNACK/SUBACK on Python 3.11, and the
    session then ran on; it hung about one shutdown in a hundred.)"""
    password = tmp_path / "cloud.password"
    password.write_text(CLOUD_PASSWORD)
    async with broker.client(OTHER, identifier=OTHER) as device:  # something to deliver
        await device.publish(state_topic(OTHER), b"online", qos=1, retain=True)

    class Ignore:
        def handle_many(self, deliveries: Sequence[Received]) -> list[Outcome]:
            return [Outcome("ignored", "test") for _ in deliveries]

    for attempt in range(200):
        settings = CloudSettings(
            broker_host=broker.host,
            broker_port=broker.port,
            mqtt_password_file=password,
            mqtt_client_id=f"bt-cloud-cancel-{attempt % 3}",
            mqtt_session_expiry_s=60,
        )
        task = asyncio.create_task(
            run_mqtt(settings, Ignore(), backoff=Backoff(0.05, 0.2))  # type: ignore[arg-type]
        )
        await asyncio.sleep((attempt * 0.00037) % 0.03)  # spread over connect and subscribe
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done, f"attempt {attempt}: the cancelled session is still running"
