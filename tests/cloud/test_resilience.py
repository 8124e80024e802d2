"""One device's input never takes ``boilertwin cloud serve`` down, not even across restarts.

The attack as it was found: a validly signed ``data`` message whose ``seq`` lies within 5,000
of 2**63 (legal under the uint64 contract). The cloud used to accept it, and about a minute
later its gap detector overflowed SQLite's integers, the exception ended the process, and
every restart died again. Here the real cloud process, the real broker and real signatures:
the message is refused at the door, everyone else is served throughout, and after a restart
too. A row stored before the fix (planted in the database) is quarantined instead of
failing every housekeeping round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cloud.db import transaction
from cloud.domain import Role
from cloud.models import Quarantine, Twin, Uplink
from cloud.registry import add_device
from protocols.cose import generate_private_key, seal
from protocols.messages import Reading, TelemetryBatch
from protocols.topics import TopicKind, topic
from tests.broker import DEVICE_IDS, Broker
from tests.cloud.stack import Stack, eventually

pytestmark = pytest.mark.integration

ATTACKER, HONEST, LEGACY = DEVICE_IDS
NEAR_2_63 = 2**63 - 100


class Device:
    """A registered device publishing real signed messages through the broker."""

    def __init__(self, stack: Stack, device_id: str) -> None:
        self.id = device_id
        self.key = generate_private_key()
        self.broker = stack.broker
        with transaction(stack.sessions) as session:
            add_device(session, device_id, self.key.public_key(), now_ms=int(time.time() * 1000))

    def batch(self, seq: int, value: float = 60.0) -> bytes:
        now = int(time.time() * 1000)
        message = TelemetryBatch(
            dev=self.id,
            epoch=1,
            seq=seq,
            ts=now,
            sync=True,
            readings=(Reading("flow_temp", now, value),),
        )
        return seal(message, self.key, kid=self.id)

    async def publish(self, *seqs: int) -> None:
        async with self.broker.client(self.id, identifier=self.id) as client:
            for seq in seqs:
                await client.publish(topic(self.id, TopicKind.DATA), self.batch(seq), qos=1)


@pytest.fixture
async def stack(tmp_path: Path, broker: Broker, db_url: str) -> AsyncIterator[Stack]:
    stack = Stack(tmp_path / "cloud", broker, db_url, housekeeping_interval_s=0.1, gap_grace_s=0.0)
    stack.user("sue", Role.SUPPORT)
    try:
        yield stack
    finally:
        await stack.close()


async def received(stack: Stack, device_id: str) -> int:
    with stack.sessions() as session:
        twin = session.get(Twin, device_id)
        return twin.received if twin is not None else 0


async def healthy(stack: Stack) -> dict[str, Any]:
    assert stack.process is not None and stack.process.returncode is None, stack.log_text()
    response = await stack.api.get("/healthz")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def housekeeping_rounds(stack: Stack, rounds: int = 10) -> None:
    """Let housekeeping (every 0.1 s here) run `rounds` times, counting on the wall clock."""
    await asyncio.sleep(0.1 * rounds)


async def test_the_seq_near_2_63_attack_leaves_the_cloud_serving_everyone(stack: Stack) -> None:
    attacker, honest = Device(stack, ATTACKER), Device(stack, HONEST)
    await stack.start()
    await attacker.publish(1, 2, 3, NEAR_2_63)
    await honest.publish(1, 2, 3)
    await eventually(lambda: _at_least(stack, HONEST, 3), "the honest device's messages")
    await housekeeping_rounds(stack)
    assert (await healthy(stack))["status"] == "ok"
    stats = await stack.get("sue", "/api/v1/ingest/stats")
    refused = {(c["outcome"], c["reason"]): c["count"] for c in stats["counters"]}
    assert refused[("rejected", "out_of_range")] == 1
    with stack.sessions() as session:
        stored = session.scalar(select(func.max(Uplink.seq)).where(Uplink.device_id == ATTACKER))
    assert stored == 3

    await stack.stop()
    await stack.start()
    await honest.publish(4)
    await attacker.publish(4)
    await eventually(lambda: _at_least(stack, HONEST, 4), "the honest device after a restart")
    await eventually(lambda: _at_least(stack, ATTACKER, 4), "the attacker's honest seqs too")
    await housekeeping_rounds(stack)
    assert (await healthy(stack))["status"] == "ok"
    twin = await stack.twin("sue", HONEST)
    assert twin["reported"]["flow_temp"]["value"] == 60.0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_row_stored_before_the_fix_is_quarantined_not_fatal(stack: Stack) -> None:
    honest, legacy = Device(stack, HONEST), Device(stack, LEGACY)
    await stack.start()
    await legacy.publish(1, 2, 3)
    await eventually(lambda: _at_least(stack, LEGACY, 3), "the legacy device's messages")
    with transaction(stack.sessions) as session:
        now = int(time.time() * 1000)
        session.add(
            Uplink(
                device_id=LEGACY, seq=NEAR_2_63, epoch=1, kind="data", ts_ms=now, received_ms=now
            )
        )
        twin = session.get(Twin, LEGACY)
        assert twin is not None
        twin.max_seq = NEAR_2_63
    await eventually(lambda: _held(stack, 1), "the poisoned device in quarantine", timeout=10)
    await honest.publish(1, 2)
    await eventually(lambda: _at_least(stack, HONEST, 2), "the honest device's messages")
    await housekeeping_rounds(stack)
    assert (await healthy(stack))["status"] == "ok"
    stats = await stack.get("sue", "/api/v1/ingest/stats")
    assert stats["quarantined"] == {"ingest": 0, "gaps": 1}

    await stack.stop()
    await stack.start()
    await honest.publish(3)
    await eventually(lambda: _at_least(stack, HONEST, 3), "the honest device after a restart")
    await housekeeping_rounds(stack)
    assert (await healthy(stack))["status"] == "ok"
    assert await _holds(stack) == 1  # held across the restart, not failed on again


async def _at_least(stack: Stack, device_id: str, count: int) -> bool:
    return await received(stack, device_id) >= count


async def _held(stack: Stack, count: int) -> bool:
    return await _holds(stack) == count


async def _holds(stack: Stack) -> int:
    with stack.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Quarantine)) or 0)
