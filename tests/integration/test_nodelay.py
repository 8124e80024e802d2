"""Small packets go out at once: both MQTT clients switch Nagle's algorithm off, and the
shipped broker configuration does too (a command or ack held behind a delayed ACK costs a
whole round trip on a cellular link)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cloud.mosquitto import render_config
from cloud.mqtt_link import AiomqttLink
from cloud.mqtt_link import connect as cloud_connect
from cloud.settings import CloudSettings
from edge_agent.config import MqttSettings
from edge_agent.mqtt_link import AiomqttSession, Identity, connector
from protocols.topics import TopicKind, topic
from tests.broker import CLOUD_PASSWORD, Broker, device_password

pytestmark = pytest.mark.integration

DEV = "boiler-0001"
ROOT = Path(__file__).resolve().parents[2]


def nodelay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


async def test_gateway_socket_has_nodelay(broker: Broker) -> None:
    settings = MqttSettings(host=broker.host, port=broker.port, tls=False)
    identity = Identity(DEV, DEV, device_password(DEV), topic(DEV, TopicKind.STATE))
    async with connector(settings, identity)() as session:
        assert isinstance(session, AiomqttSession)
        sock = session._client._client.socket()
        assert sock is not None and nodelay(sock)  # type: ignore[arg-type]


async def test_cloud_socket_has_nodelay(broker: Broker, tmp_path: Path) -> None:
    password = tmp_path / "cloud.password"
    password.write_text(CLOUD_PASSWORD)
    settings = CloudSettings(
        broker_host=broker.host,
        broker_port=broker.port,
        mqtt_password_file=password,
        mqtt_client_id="bt-cloud-nodelay",
    )
    async with cloud_connect(settings) as link:
        assert isinstance(link, AiomqttLink)
        sock = link._client._client.socket()
        assert sock is not None and nodelay(sock)  # type: ignore[arg-type]


def test_the_shipped_broker_config_sets_nodelay(tmp_path: Path) -> None:
    shipped = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert "set_tcp_nodelay true" in shipped.splitlines()
    rendered = render_config(shipped, directory=tmp_path, host="127.0.0.1", port=1)
    assert "set_tcp_nodelay true" in rendered.splitlines(), "the tests' broker keeps it"
