"""The gateway's MQTT transport: a small `MqttSession` protocol and its aiomqtt adapter.

The uplink (`edge_agent.uplink`) sees only `MqttSession` (publish at QoS 1, subscribe, the
messages that arrive) and a `Connect` that opens one; tests run it on an in-memory session.
This module is the one place that builds aiomqtt clients (MQTT 5, persistent session, last
will, TLS) and translates their errors, and OS errors while connecting (a TLS handshake
failure is an `ssl.SSLError`, an `OSError`), into `LinkError`, once, at the boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.config import MqttSettings
from protocols.topics import STATE_OFFLINE

log = logging.getLogger(__name__)

T = TypeVar("T")


class LinkError(Exception):
    """The MQTT session could not be opened, or failed: reconnect."""


@dataclass(frozen=True, slots=True)
class Message:
    """A message the broker delivered."""

    topic: str
    payload: bytes


NO_MATCHING_SUBSCRIBERS = 0x10
"""PUBACK reason code: the broker took the message but nobody subscribes to it."""


def delivered(reason_code: int) -> bool:
    """Whether a PUBACK reason code means the broker passed the message on: success, and not
    "no matching subscribers" (0x10) or an error (0x80 and up)."""
    return reason_code < 0x80 and reason_code != NO_MATCHING_SUBSCRIBERS


class MqttSession(Protocol):
    """One connected MQTT session, as the gateway uses it (every publish is QoS 1)."""

    async def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = math.inf
    ) -> int:
        """Publish at QoS 1 and wait for the PUBACK (up to `timeout` s); its reason code
        (see `delivered`). `LinkError` if the session fails first."""
        ...

    async def subscribe(self, topic_filter: str) -> None:
        """Subscribe at QoS 1."""
        ...

    def messages(self) -> AsyncIterator[Message]:
        """Delivered messages in arrival order, until the session fails (`LinkError`)."""
        ...


Connect = Callable[[], AbstractAsyncContextManager[MqttSession]]
"""Opens one session; leaving the context disconnects cleanly (no last will)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the gateway is to the broker, and the retained state topic its will clears."""

    device_id: str
    username: str
    password: str | None
    state_topic: str


def connector(settings: MqttSettings, identity: Identity, clock_scale: float = 1.0) -> Connect:
    """The production `Connect`: aiomqtt sessions for `settings` as `identity`."""

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[MqttSession]:
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = await _honouring_cancel(
                    stack.enter_async_context(_client(settings, identity, clock_scale))
                )
                yield AiomqttSession(client)
        except (aiomqtt.MqttError, OSError) as exc:
            raise LinkError(str(exc) or type(exc).__name__) from exc

    return connect


def _client(settings: MqttSettings, identity: Identity, clock_scale: float) -> aiomqtt.Client:
    client = _new_client(settings, identity, clock_scale)
    _no_delay(client)
    return client


def _new_client(settings: MqttSettings, identity: Identity, clock_scale: float) -> aiomqtt.Client:
    s = settings
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = s.session_expiry_s
    tls_context = None
    if s.tls:
        tls_context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
        if s.cert_file and s.client_key_file:
            tls_context.load_cert_chain(s.cert_file, s.client_key_file)
    return aiomqtt.Client(
        s.host,
        s.port,
        username=identity.username,
        password=identity.password,
        identifier=identity.device_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=properties,
        keepalive=max(1, round(s.keepalive_s / clock_scale)),
        timeout=s.connect_timeout_s,
        max_inflight_messages=s.inflight,
        tls_context=tls_context,
        will=aiomqtt.Will(identity.state_topic, STATE_OFFLINE, qos=1, retain=True),
        logger=logging.getLogger("edge_agent.uplink.paho"),
    )


async def _honouring_cancel(step: Awaitable[T]) -> T:
    """Await `step`; if the task was cancelled meanwhile but the cancel got lost, raise it.

    aiomqtt waits for CONNACK and SUBACK with `asyncio.wait_for`, which on Python 3.11 returns
    the result, and drops the cancellation, when the packet lands in the same loop iteration
    as the cancel: a SIGTERM during a reconnect would leave the uplink running (the same guard
    as `cloud.mqtt_link.honouring_cancel`; the two packages share no runtime code).
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    result = await step
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result


class AiomqttSession:
    """`MqttSession` over a connected `aiomqtt.Client`.

    aiomqtt keeps PUBACK reason codes to itself, so publishes go through paho directly, with
    its ``on_publish`` callback wrapped (aiomqtt's own still runs) to hand each reason code to
    the publish waiting for it; a publish also ends when aiomqtt sees the connection drop."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._paho = client._client
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

    async def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = math.inf
    ) -> int:
        info = self._paho.publish(topic, payload, qos=1, retain=retain)
        if info.rc != 0:
            raise LinkError(f"could not publish to {topic} (rc {info.rc})")
        if info.mid in self._early:
            return self._early.pop(info.mid)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[info.mid] = future
        disconnected: asyncio.Future[Any] = self._client._disconnected
        try:
            async with asyncio.timeout(None if math.isinf(timeout) else timeout):
                await asyncio.wait({future, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError as exc:
            raise LinkError(f"no PUBACK for {topic} in {timeout} s") from exc
        finally:
            self._waiting.pop(info.mid, None)
        if not future.done():
            raise LinkError("connection lost while waiting for a PUBACK")
        return future.result()

    async def subscribe(self, topic_filter: str) -> None:
        try:
            await _honouring_cancel(self._client.subscribe(topic_filter, qos=1))
        except aiomqtt.MqttError as exc:
            raise LinkError(str(exc) or type(exc).__name__) from exc

    async def messages(self) -> AsyncIterator[Message]:
        try:
            async for message in self._client.messages:
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    payload = b"" if payload is None else str(payload).encode()
                yield Message(str(message.topic), bytes(payload))
        except aiomqtt.MqttError as exc:
            raise LinkError(str(exc) or type(exc).__name__) from exc


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
