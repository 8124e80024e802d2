"""End-to-end delivery with the real parts: ``cloud serve``, Mosquitto and the edge agent.

Two losses this closes, both while the cloud is away:

* a broker restarted forgets the shared ingest subscription (Mosquitto 2.0.11), so what the
  gateway publishes meanwhile finds no subscriber; the broker PUBACKs it with 0x10, and a
  gateway that deleted at PUBACK lost it for good. Now 0x10 is "not delivered": kept, offered
  again;
* a broker that crashes loses what it queued for the cloud's session since its last save,
  though it PUBACKed every message with success. Only the cloud's watermark can tell: the
  gateway keeps each message until a watermark covers it and sends again what it lacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloud.models import Gap, Uplink
from cloud.twin.gaps import UNEXPLAINED
from tests.broker import Broker
from tests.cloud.stack import Stack, eventually

pytestmark = pytest.mark.integration

DEV = "boiler-0001"


@pytest.mark.parametrize("broker_fails", ["restarted", "crashed"])
async def test_what_the_broker_lost_after_its_puback_still_arrives(
    tmp_path: Path, broker: Broker, db_url: str, start_sim: Any, broker_fails: str
) -> None:
    sim = await start_sim(time_scale=120.0)
    await sim.control("/demand", {"ch": "on"})  # values keep moving: a batch every 0.6 s
    stack = Stack(
        tmp_path / "cloud", broker, db_url, watermark_check_s=0.2, watermark_interval_s=1.0
    )
    gateway = stack.gateway(tmp_path / "gateway", sim.pty, DEV, outbox={"resend_after_s": 1.0})
    await stack.start()
    agent = await gateway.start()
    try:
        await eventually(_true(lambda: agent.outbox.end_to_end), "the cloud's first watermark")
        await stack.stop()
        figures = agent.uplink.figures
        if broker_fails == "restarted":
            await broker.stop()
            await broker.start()  # the shared subscription is gone until the cloud is back
            before = figures.not_delivered
            await eventually(
                _true(lambda: figures.not_delivered >= before + 3),
                "PUBACKs 0x10: nobody subscribes",
            )
            assert agent.outbox.figures.depth >= 1, "not delivered: kept, pending"
        else:
            before = figures.published
            await eventually(
                _true(lambda: figures.published >= before + 5),
                "messages queued for the cloud's session, PUBACKed with success",
            )
            assert len(agent.outbox._published) >= 5, "PUBACKed, kept until the cloud says"
            await broker.kill()  # its queue for the cloud is lost
            await broker.start()
        lost_high = agent.outbox.next_seq - 1

        await stack.start()
        await eventually(
            _true(lambda: _stored(stack, lost_high) == set(range(1, lost_high + 1))),
            "every seq up to the last one published while the cloud was away",
            timeout=30,
        )
        await eventually(
            _true(lambda: _lowest_stored_in_outbox(agent) > lost_high),
            "the gateway told they are stored, and deleting them",
            timeout=30,
        )
    finally:
        await gateway.cancel()
        await stack.close()
    with stack.sessions() as session:
        unexplained = session.scalars(
            select(Gap).where(Gap.device_id == DEV, Gap.kind == UNEXPLAINED)
        ).all()
    assert [(g.first_seq, g.last_seq) for g in unexplained if g.resolved_ms is None] == []


def _true(probe: Any) -> Any:
    async def check() -> bool:
        return bool(probe())

    return check


def _stored(stack: Stack, up_to: int) -> set[int]:
    with stack.sessions() as session:
        return set(
            session.scalars(select(Uplink.seq).where(Uplink.device_id == DEV, Uplink.seq <= up_to))
        )


def _lowest_stored_in_outbox(agent: Any) -> int:
    rows = agent.outbox._store.query("SELECT min(seq) FROM outbox")
    return int(rows[0][0] or 10**18)
