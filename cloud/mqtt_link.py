"""The cloud's MQTT transport: a small `MqttLink` protocol and its aiomqtt adapter.

Everything the cloud needs from a connected session is here, behind `MqttLink`: subscribe
(a refused filter is an error), deliveries in arrival order, a manual PUBACK per delivery,
and a QoS 1 publish that returns the broker's PUBACK reason code. The session logic
(`cloud.mqtt`) and the command dispatcher (`cloud.dispatch`) see only the protocol, so tests
run them on an in-memory link; this module is the one place that touches aiomqtt's and paho's
internals, and translates their errors into `LinkError` once, at the boundary:

* manual PUBACKs: paho's ``manual_ack`` (aiomqtt 2.5 has no option for it) is switched on
  before connecting; `AiomqttLink.ack` sends the PUBACK once the message was handled;
* PUBACK reason codes: aiomqtt keeps them to itself, so paho's ``on_publish`` callback is
  wrapped to hand each one to the publish waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.settings import CloudSettings
from protocols.topics import QOS

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 30
RECEIVE_MAXIMUM = 100
"""Unacknowledged QoS 1 messages the broker may have in flight to us (MQTT 5), at least; twice
``ingest_batch_max`` if that is more, so the next batch fills while one is stored. With acks
sent only after each commit, this bounds what a worker holds in memory."""
PUBACK_TIMEOUT_S = 10.0

_T = TypeVar("_T")


class LinkError(Exception):
    """The MQTT session failed or was refused something; the session must be re-established.
    `reason_code` is the MQTT reason code when there is one."""

    def __init__(self, detail: str, reason_code: int | None = None) -> None:
        super().__init__(detail)
        self.reason_code = reason_code


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message the broker delivered to us."""

    topic: str
    payload: bytes
    retain: bool = False
    qos: int = QOS
    mid: int = 0
    """Packet id, for the PUBACK."""


class MqttLink(Protocol):
    """One connected MQTT session, as the cloud uses it."""

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> None:
        """Subscribe to every (filter, qos); `LinkError` if the broker refuses any."""
        ...

    def deliveries(self) -> AsyncIterator[Delivery]:
        """Messages in arrival order, until the session ends (`LinkError`)."""
        ...

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge (PUBACK) a QoS 1 delivery: the broker will not send it again."""
        ...

    async def publish_confirmed(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1; the PUBACK reason code (< 0x80 is success). `LinkError` when
        no PUBACK comes: a live connection answers."""
        ...


Connect = Callable[[CloudSettings], AbstractAsyncContextManager[MqttLink]]
"""Opens a session for the settings; leaving the context closes it."""


def make_client(settings: CloudSettings) -> aiomqtt.Client:
    """An unconnected client for `settings`: MQTT 5, persistent session, manual PUBACKs."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = settings.mqtt_session_expiry_s
    properties.ReceiveMaximum = max(RECEIVE_MAXIMUM, 2 * settings.ingest_batch_max)
    client = aiomqtt.Client(
        settings.broker_host,
        settings.broker_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password(),
        identifier=settings.mqtt_client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=properties,
        tls_context=settings.mqtt_tls_context(),
        timeout=CONNECT_TIMEOUT_S,
        keepalive=KEEPALIVE_S,
    )
    # aiomqtt has no manual-ack option; paho's client (set before connecting) does.
    client._client.manual_ack_set(True)
    _no_delay(client)
    return client


def _no_delay(client: aiomqtt.Client) -> None:
    """Switch off Nagle's algorithm on the client's socket once it is open: acks and commands
    are small and must not wait for a delayed ACK (a whole round trip on a cellular link).
    aiomqtt sets paho's ``on_socket_open``; this wraps it (paho keeps the socket to itself)."""
    paho = client._client
    opened: Any = paho.on_socket_open

    def on_socket_open(c: Any, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if opened is not None:
            opened(c, userdata, sock)

    paho.on_socket_open = on_socket_open


async def honouring_cancel(step: Awaitable[_T]) -> _T:
    """Await `step`; if the task was cancelled meanwhile but the cancel got lost, raise it.

    aiomqtt waits for CONNACK and SUBACK with `asyncio.wait_for`, which on Python 3.11
    returns the result, and drops the cancellation, when the packet lands in the same loop
    iteration as the cancel. The session would then run on as if never cancelled, and
    shutdown would wait for it forever (seen under test: about one cancel in a hundred
    during a reconnect). A cancel request made during the step shows in `Task.cancelling`.
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    result = await step
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result


@contextlib.asynccontextmanager
async def connect(settings: CloudSettings) -> AsyncIterator[MqttLink]:
    """An aiomqtt session for `settings` (the production `Connect`)."""
    try:
        async with contextlib.AsyncExitStack() as stack:
            client = await honouring_cancel(stack.enter_async_context(make_client(settings)))
            yield AiomqttLink(client)
    except aiomqtt.MqttError as exc:
        raise LinkError(str(exc), _code(exc)) from exc


def _code(error: aiomqtt.MqttError) -> int | None:
    rc = getattr(error, "rc", None)
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else None


class AiomqttLink:
    """`MqttLink` over a connected `aiomqtt.Client` (one per connection)."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._paho = client._client  # manual acks and PUBACK reason codes live in paho
        self._waiting: dict[int, asyncio.Future[int]] = {}
        self._early: dict[int, int] = {}
        original: Any = self._paho.on_publish

        def on_publish(c: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
            if original is not None:
                original(c, userdata, mid, reason_code, properties)
            code = int(getattr(reason_code, "value", reason_code) or 0)
            future = self._waiting.pop(mid, None)
            if future is None:
                self._early[mid] = code
            elif not future.done():
                future.set_result(code)

        self._paho.on_publish = on_publish

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> None:
        try:
            granted = await honouring_cancel(self._client.subscribe(list(filters)))
        except aiomqtt.MqttError as exc:
            raise LinkError(str(exc), _code(exc)) from exc
        for (topic_filter, _), code in zip(filters, granted, strict=False):
            value = getattr(code, "value", code)
            if isinstance(value, int) and value >= 0x80:
                raise LinkError(f"subscription to {topic_filter} refused (0x{value:02x})", value)

    async def deliveries(self) -> AsyncIterator[Delivery]:
        try:
            async for message in self._client.messages:
                yield Delivery(
                    str(message.topic), _payload(message), message.retain, message.qos, message.mid
                )
        except aiomqtt.MqttError as exc:
            raise LinkError(str(exc), _code(exc)) from exc

    def ack(self, delivery: Delivery) -> None:
        self._paho.ack(delivery.mid, delivery.qos)

    async def publish_confirmed(self, topic: str, payload: bytes) -> int:
        info = self._paho.publish(topic, payload, qos=QOS)
        if info.rc != 0:
            raise LinkError(f"could not publish to {topic} (rc {info.rc})", info.rc)
        if info.mid in self._early:
            return self._early.pop(info.mid)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[info.mid] = future
        try:
            async with asyncio.timeout(PUBACK_TIMEOUT_S):
                return await future
        except TimeoutError as exc:
            # No PUBACK on a live connection means it is not live: let the session reconnect.
            raise LinkError(f"no PUBACK for {topic} in {PUBACK_TIMEOUT_S} s") from exc
        finally:
            self._waiting.pop(info.mid, None)


def _payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()
