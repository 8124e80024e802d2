"""The broker's own figures reach Prometheus: a real Mosquitto with the project's config and
the cloud's login (its role lets it read ``$SYS/broker``, nothing more of ``$SYS``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from cloud.broker_stats import figure, run_broker_stats
from cloud.settings import CloudSettings
from tests.broker import CLOUD_PASSWORD, Broker
from tests.cloud.stack import eventually


def test_figures_are_read_from_sys_payloads() -> None:
    assert figure("$SYS/broker/store/messages/count", b"42") == ("store/messages/count", 42.0)
    assert figure("$SYS/broker/uptime", b"1234 seconds") == ("uptime", 1234.0)
    assert figure("$SYS/broker/load/messages/received/1min", b"3.52") == (
        "load/messages/received/1min",
        3.52,
    )
    assert figure("$SYS/broker/version", b"mosquitto version 2.0.11") is None
    assert figure("$SYS/broker/clients/connected", b"") is None
    assert figure("bt/v1/x/data", b"1") is None


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("boilertwin_broker", {"figure": name})


async def test_serve_exposes_the_brokers_queue_and_drop_figures(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", overrides={"sys_interval": "1"})
    broker.add_user(broker.cloud_user, CLOUD_PASSWORD)
    await broker.start()
    password = tmp_path / "cloud.password"
    password.write_text(CLOUD_PASSWORD)
    settings = CloudSettings(
        db_url="sqlite://",
        broker_host=broker.host,
        broker_port=broker.port,
        mqtt_username=broker.cloud_user,
        mqtt_password_file=password,
        mqtt_client_id="bt-cloud-stats-test",
    )
    task = asyncio.create_task(run_broker_stats(settings))
    try:

        async def connected() -> bool:
            return (gauge("clients/connected") or 0) >= 1

        await eventually(connected, "the broker's client count", timeout=15)
        assert gauge("store/messages/count") is not None
        assert gauge("publish/messages/dropped") is not None
        assert gauge("version") is None, "text figures are not gauges"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await broker.kill()
