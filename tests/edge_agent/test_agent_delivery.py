"""The whole agent against a real Mosquitto and a simulated boiler on a pty: what arrives.

Every test decodes and verifies the COSE envelopes that reached the broker (`CloudListener`)
and checks the delivery contract: signed, strictly increasing seq, nothing missing after
de-duplication by seq, outbox empty at the end.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from protocols.messages import Birth, EventKind, Health, Quality, TelemetryBatch
from protocols.reference import REFERENCE_MAP
from tests.broker import Broker
from tests.edge_agent.harness import Gateway, listening

pytestmark = pytest.mark.integration


@pytest.fixture
async def gateway(
    tmp_path: Path, broker: Broker, start_sim: Callable[..., Any]
) -> AsyncIterator[Gateway]:
    sim = await start_sim(time_scale=120.0)
    await sim.control("/demand", {"ch": "on"})  # heating: values keep moving past deadbands
    gw = Gateway(tmp_path / "gateway", broker, sim.pty)
    gw.sim = sim  # type: ignore[attr-defined]
    yield gw
    await gw.cancel()
    if gw.process is not None:
        gw.process.kill()
        await gw.process.wait()


def contiguous(seqs: set[int]) -> bool:
    return seqs == set(range(1, max(seqs) + 1))


def stored_rows(path: Path) -> tuple[int, int]:
    """(messages left in the outbox, highest seq ever stored) read straight from SQLite."""
    with sqlite3.connect(path) as db:
        depth = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        top = db.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
        high = db.execute("SELECT value FROM meta WHERE key = 'high_seq'").fetchone()
    return int(depth), max(int(top), int(high[0]) if high else 0)


async def test_normal_run_delivers_every_message_signed_in_seq_order(
    gateway: Gateway, broker: Broker
) -> None:
    async with listening(broker, gateway) as cloud:
        agent = await gateway.start()
        await cloud.wait_for(
            lambda c: (
                sum(isinstance(r.message, TelemetryBatch) for r in c.received) >= 4
                and any(isinstance(r.message, Health) for r in c.received)
            )
        )
        polls = agent.poller.figures.polls
        await gateway.stop()
        await cloud.wait_for(lambda c: bool(c.states) and c.states[-1] == b"offline", 5)

    assert cloud.rejected == []
    seqs = cloud.seqs()
    assert seqs == sorted(set(seqs)), "seq strictly increasing, no duplicates on a calm link"
    assert contiguous(set(seqs)), "every message the agent stored reached the cloud"
    first = cloud.received
    assert isinstance(first[0].message, type(first[0].message))
    assert any(isinstance(r.message, Birth) for r in first)
    births = [r.message for r in first if isinstance(r.message, Birth)]
    assert births[0].map_id == REFERENCE_MAP.id and births[0].map_hash == REFERENCE_MAP.digest()
    assert "restart" in births[0].capabilities
    assert next(e.kind for e in cloud.events()) is EventKind.AGENT_START
    batches = [r.message for r in first if isinstance(r.message, TelemetryBatch)]
    # the first batch carries every readable point; later ones only what changed
    assert {r.point for r in batches[0].readings} == {p.name for p in REFERENCE_MAP.readable()}
    assert all(r.quality is Quality.GOOD for b in batches for r in b.readings)
    assert all(b.dev == gateway.device_id and b.epoch == 1 and b.sync for b in batches)
    assert polls >= 4
    # graceful stop: online first, offline last, outbox empty on disk
    assert cloud.states[0] == b"online" and cloud.states[-1] == b"offline"
    depth, high = stored_rows(gateway.outbox_path)
    assert depth == 0 and high == max(seqs)


async def test_broker_outage_loses_and_duplicates_nothing(gateway: Gateway, broker: Broker) -> None:
    async with listening(broker, gateway) as cloud:
        agent = await gateway.start()
        await cloud.wait_for(
            lambda c: any(isinstance(r.message, TelemetryBatch) for r in c.received)
        )
        await broker.stop()
        stored_before = agent.outbox.next_seq
        # the boiler keeps changing (time scale 120): batches pile up in the outbox
        async with asyncio.timeout(15):
            while agent.outbox.next_seq < stored_before + 5:
                await asyncio.sleep(0.1)
        assert agent.outbox.figures.depth >= 5
        assert not agent.uplink.figures.connected
        await broker.start()
        await cloud.wait_for(lambda c: max(c.seqs()) >= stored_before + 5, 20)
        async with asyncio.timeout(15):
            while agent.outbox.figures.depth:
                await asyncio.sleep(0.05)
        assert agent.uplink.figures.connects >= 2
        await gateway.stop()

    unique = cloud.unique()  # asserts any duplicate is byte-identical
    assert contiguous(set(unique)), sorted(set(range(1, max(unique) + 1)) - set(unique))
    births = [r for r in unique.values() if isinstance(r.message, Birth)]
    assert len(births) >= 2, "a birth on every connect"
    assert stored_rows(gateway.outbox_path)[0] == 0


async def test_sigkill_during_outage_then_restart_loses_nothing(
    gateway: Gateway, broker: Broker
) -> None:
    async with listening(broker, gateway) as cloud:
        await gateway.spawn()
        await cloud.wait_for(
            lambda c: any(isinstance(r.message, TelemetryBatch) for r in c.received), 20
        )
        await broker.stop()
        await asyncio.sleep(3)  # batches are stored while the broker is away
        assert await gateway.signal(signal.SIGKILL) == -signal.SIGKILL
        waiting, high_at_kill = stored_rows(gateway.outbox_path)
        assert waiting >= 2, gateway.log_text()

        await gateway.spawn()
        await broker.start()
        await cloud.wait_for(lambda c: max(c.seqs()) > high_at_kill, 20)
        assert await gateway.signal(signal.SIGTERM) == 0, gateway.log_text()

    unique = cloud.unique()
    assert contiguous(set(unique)), sorted(set(range(1, max(unique) + 1)) - set(unique))
    assert {r.message.epoch for r in unique.values()} == {1, 2}
    # the second run re-sent the first run's messages under their own seq and epoch
    assert all(r.message.epoch == 1 for s, r in unique.items() if s <= high_at_kill)
    depth, high = stored_rows(gateway.outbox_path)
    assert depth == 0 and high == max(unique)
    assert "Traceback" not in gateway.log_text()


async def test_comms_faults_are_survived_flagged_and_recovered(
    gateway: Gateway, broker: Broker
) -> None:
    gateway.config["modbus"].update(timeout_s=0.1, retries=1)
    sim = gateway.sim  # type: ignore[attr-defined]
    async with listening(broker, gateway) as cloud:
        agent = await gateway.start()
        await cloud.wait_for(
            lambda c: any(isinstance(r.message, TelemetryBatch) for r in c.received)
        )
        # a flaky line: corrupted and slow replies are retried, the loop keeps going
        await sim.control("/comms", {"corrupt": 0.3, "delay_ms": 50})
        polls = agent.poller.figures.polls
        async with asyncio.timeout(15):
            while agent.poller.figures.polls < polls + 10:
                await asyncio.sleep(0.1)
        # the line goes dead
        await sim.control("/comms", {"drop": 1.0, "corrupt": 0.0, "delay_ms": 0})
        await cloud.wait_for(lambda c: bool(c.events(EventKind.COMMS_LOST)))
        await cloud.wait_for(
            lambda c: any(
                isinstance(r.message, TelemetryBatch)
                and any(x.quality is Quality.BAD for x in r.message.readings)
                for r in c.received
            )
        )
        await asyncio.sleep(1.0)  # still dead: no second comms_lost
        await sim.control("/comms", {"drop": 0.0})
        await cloud.wait_for(lambda c: bool(c.events(EventKind.COMMS_RESTORED)))
        await cloud.wait_for(
            lambda c: any(
                isinstance(r.message, TelemetryBatch)
                and r.message.seq > c.events(EventKind.COMMS_RESTORED)[0].seq
                and any(x.quality is Quality.GOOD for x in r.message.readings)
                for r in c.received
            )
        )
        assert not gateway.task.done()  # type: ignore[union-attr]
        figures = agent.figures()
        await gateway.stop()

    assert len(cloud.events(EventKind.COMMS_LOST)) == 1
    assert len(cloud.events(EventKind.COMMS_RESTORED)) == 1
    lost = cloud.events(EventKind.COMMS_LOST)[0]
    assert "CommsTimeout" in str(lost.detail["error"])
    assert figures["poll_errors"] > 0 and figures["comms_lost"] == 0
    assert agent.link.stats.retries > 0
    bad = [
        x
        for r in cloud.received
        if isinstance(r.message, TelemetryBatch)
        for x in r.message.readings
        if x.quality is Quality.BAD
    ]
    assert {x.point for x in bad} >= {"status", "flow_temp"}
    assert all(x.value is None for x in bad)


async def test_health_reports_agent_figures(gateway: Gateway, broker: Broker) -> None:
    async with listening(broker, gateway) as cloud:
        await gateway.start()
        await cloud.wait_for(lambda c: any(isinstance(r.message, Health) for r in c.received))
        await gateway.stop()
    health = next(r.message for r in cloud.received if isinstance(r.message, Health))
    agent = health.agent
    for key in (
        "outbox_depth",
        "outbox_evictions",
        "mqtt_reconnects",
        "poll_errors",
        "last_poll_ok_ms",
        "flash_bytes_today",
        "cpu_s",
        "max_rss_kb",
    ):
        assert key in agent, key
    assert agent["last_poll_ok_ms"] > 0 and agent["polls"] >= 1
    assert health.modem == {}  # no modem configured


async def test_uplink_over_tls_with_the_brokers_ca(
    tmp_path: Path, tls_broker: Broker, start_sim: Callable[..., Any]
) -> None:
    sim = await start_sim()
    gateway = Gateway(tmp_path / "gateway", tls_broker, sim.pty)
    assert tls_broker.tls_port is not None and tls_broker.ca_file is not None
    gateway.config["mqtt"].update(
        tls=True, port=tls_broker.tls_port, ca_file=str(tls_broker.ca_file)
    )
    async with listening(tls_broker, gateway) as cloud:
        agent = await gateway.start()
        try:
            await cloud.wait_for(
                lambda c: any(isinstance(r.message, TelemetryBatch) for r in c.received)
            )
            assert agent.uplink.figures.connects == 1
        finally:
            await gateway.stop()
    assert cloud.rejected == []


async def test_tls_refuses_a_broker_it_does_not_trust(
    tmp_path: Path, tls_broker: Broker, start_sim: Callable[..., Any]
) -> None:
    sim = await start_sim()
    gateway = Gateway(tmp_path / "gateway", tls_broker, sim.pty)
    assert tls_broker.tls_port is not None
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(Broker(tmp_path / "other", tls=True).ca_file.read_bytes())  # type: ignore[union-attr]
    gateway.config["mqtt"].update(tls=True, port=tls_broker.tls_port, ca_file=str(other_ca))
    agent = await gateway.start()
    try:
        async with asyncio.timeout(10):
            while agent.uplink.figures.connect_failures < 2:
                await asyncio.sleep(0.05)
        assert agent.uplink.figures.connects == 0
        # polling goes on regardless: the data waits in the outbox
        async with asyncio.timeout(10):
            while agent.outbox.figures.depth < 2:
                await asyncio.sleep(0.05)
    finally:
        await gateway.stop()


async def test_modem_figures_in_health(
    tmp_path: Path, broker: Broker, start_sim: Callable[..., Any]
) -> None:
    sim = await start_sim(modem_pty=str(tmp_path / "modem0"))
    gateway = Gateway(tmp_path / "gateway", broker, sim.pty)
    gateway.config["health"].update(modem_port=str(tmp_path / "modem0"))
    async with listening(broker, gateway) as cloud:
        await gateway.start()
        try:
            await cloud.wait_for(lambda c: any(isinstance(r.message, Health) for r in c.received))
        finally:
            await gateway.stop()
    health = next(r.message for r in cloud.received if isinstance(r.message, Health))
    assert health.modem["responding"] is True
    assert isinstance(health.modem["rssi_dbm"], int) and health.modem["rssi_dbm"] < 0
    assert health.modem["registration"] in ("home", "roaming")
