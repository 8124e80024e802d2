"""A gateway's shutdown never hangs on its MQTT session (real Mosquitto).

aiomqtt waits for CONNACK and SUBACK with `asyncio.wait_for`, which on Python 3.11 drops a
cancellation racing the packet; the uplink then ran on, and a SIGTERM waited until systemd
killed the agent. The uplink is cancelled here at moments spread over its connect and
subscribe, and must stop every time.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from edge_agent.config import MqttSettings
from edge_agent.outbox import Outbox
from edge_agent.store import Store
from edge_agent.uplink import Uplink
from protocols.cose import generate_private_key, seal
from protocols.messages import Birth
from tests.broker import Broker, device_password
from tests.clocks import FakeClock

pytestmark = pytest.mark.integration

DEV = "boiler-0001"


async def test_a_cancelled_uplink_always_stops(broker: Broker, tmp_path: Path) -> None:
    clock = FakeClock()
    key = generate_private_key()
    store = Store(tmp_path / "outbox.db", wall_ms=lambda: int(clock.wall() * 1000), device_id=DEV)
    outbox = Outbox.open(
        store,
        device_id=DEV,
        seal=lambda message: seal(message, key),
        max_bytes=1 << 20,
        wall_ms=lambda: int(clock.wall() * 1000),
        clock_trusted=lambda: True,
    )
    settings = MqttSettings(
        host=broker.host, port=broker.port, tls=False, reconnect_min_s=0.01, reconnect_max_s=0.05
    )

    def birth() -> Birth:
        return Birth(
            dev=DEV, epoch=0, seq=0, ts=int(clock.wall() * 1000), sync=True,
            agent_version="test", map_id="bt-ref-1", map_hash="0" * 64, capabilities=(),
        )  # fmt: skip

    connected = 0
    try:
        for attempt in range(150):
            uplink = Uplink(
                settings,
                device_id=DEV,
                username=DEV,
                password=device_password(DEV),
                outbox=outbox,
                make_birth=birth,
                commands=asyncio.Queue(),
                clock=clock,
                rng=random.Random(attempt),
            )
            task = asyncio.create_task(uplink.run())
            await asyncio.sleep((attempt * 0.00037) % 0.03)  # spread over connect and subscribe
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5)
            assert done, f"attempt {attempt}: the cancelled uplink is still running"
            connected += uplink.figures.connects
    finally:
        store.close()
    assert connected > 0, "some attempts got as far as a session"
