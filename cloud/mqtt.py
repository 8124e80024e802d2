"""The cloud's MQTT session: one persistent connection, ingest's subscriptions, reconnects.

* One MQTT 5 session per process under the stable ``mqtt_client_id``, ``clean_start=False``
  with ``mqtt_session_expiry_s``: while the worker is away (redeploy, crash) the broker queues
  its share of the fleet's QoS 1 messages instead of dropping them.
* Signed kinds are read through the shared subscription ``$share/<group>/bt/v1/+/<kind>``, so
  N workers split the fleet; ``bt/v1/+/state`` is subscribed by every worker, unshared, so
  each gets the retained states (applying one twice changes nothing).
* A QoS 1 message is acknowledged (PUBACK) only after `Ingest.handle` returned, i.e. after
  its transaction committed (or it was rejected for good). paho's ``manual_ack`` is switched
  on through aiomqtt's underlying client, which aiomqtt 2.5 does not expose. A crash, a lost
  connection or `IngestUnavailable` between receipt and commit leaves the message unacked and
  the broker delivers it again (ingest is idempotent on ``(device, seq)``). Messages are
  handled one at a time in arrival order, so PUBACKs go out in order, as MQTT requires.
* On `aiomqtt.MqttError` (or `IngestUnavailable`) the session is dropped, logged once, and
  re-established after a capped full-jitter backoff. Cancellation is never swallowed.

Broker behaviour to know (Mosquitto 2.0.11, as tested): while a worker is away its persistent
session keeps being dealt its turn of the shared subscription, queued until it returns (not
handed to the other workers); and after a *broker* restart plain subscriptions of persistent
sessions are restored but shared ones are not, so until a worker has reconnected, uplinks
find no subscriber and are dropped by the broker. Ingest flags those seqs as unexplained gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.backoff import Backoff
from cloud.ingest import Ingest, IngestUnavailable
from cloud.settings import CloudSettings
from protocols.topics import QOS, TopicKind, shared_subscription, subscription

log = logging.getLogger(__name__)

SHARED_KINDS = (TopicKind.BIRTH, TopicKind.DATA, TopicKind.EVENT, TopicKind.HEALTH, TopicKind.ACK)
"""Signed uplink kinds, split between the workers of the ingest group."""
CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 30
RECEIVE_MAXIMUM = 100
"""Unacknowledged QoS 1 messages the broker may have in flight to us (MQTT 5): with acks sent
only after each commit, this bounds what a worker holds in memory."""

_T = TypeVar("_T")
DEFAULT_BACKOFF = Backoff()
"""Reconnect after 0.5 s, doubling up to 30 s, with full jitter."""

Extra = Callable[[aiomqtt.Client], Awaitable[None]]
"""A job that uses the connection while it lasts (e.g. the command dispatcher)."""


def subscriptions(group: str) -> list[tuple[str, int]]:
    """Topic filters and QoS ingest subscribes to."""
    shared = [(shared_subscription(kind, group), QOS) for kind in SHARED_KINDS]
    return [*shared, (subscription(TopicKind.STATE), QOS)]


def make_client(settings: CloudSettings) -> aiomqtt.Client:
    """An unconnected client for `settings`: MQTT 5, persistent session, manual PUBACKs."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = settings.mqtt_session_expiry_s
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    tls_context = settings.mqtt_tls_context()
    client = aiomqtt.Client(
        settings.broker_host,
        settings.broker_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password(),
        identifier=settings.mqtt_client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=properties,
        tls_context=tls_context,
        timeout=CONNECT_TIMEOUT_S,
        keepalive=KEEPALIVE_S,
    )
    # aiomqtt has no manual-ack option; paho's client (set before connecting) does.
    client._client.manual_ack_set(True)
    return client


async def _subscribe(client: aiomqtt.Client, group: str) -> None:
    filters = subscriptions(group)
    granted = await client.subscribe(filters)
    for (topic_filter, _), code in zip(filters, granted, strict=False):
        value = getattr(code, "value", code)
        if isinstance(value, int) and value >= 0x80:
            raise aiomqtt.MqttCodeError(value, f"subscription to {topic_filter} refused")


def _payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


async def _consume(client: aiomqtt.Client, ingest: Ingest) -> None:
    """Handle messages one at a time (in a thread: DB work), PUBACK each once handled."""
    async for message in client.messages:
        outcome = await asyncio.to_thread(
            ingest.handle, str(message.topic), _payload(message), message.retain
        )
        log.debug("%s: %s (%s)", message.topic, outcome.outcome, outcome.reason)
        client._client.ack(message.mid, message.qos)


async def _honouring_cancel(step: Awaitable[_T]) -> _T:
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


class _Link:
    """Whether one session got as far as connecting."""

    up = False


def _leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


async def _extra(job: Extra, client: aiomqtt.Client) -> None:
    await job(client)


async def _session(
    settings: CloudSettings,
    ingest: Ingest,
    extra: Sequence[Extra],
    subscribe: bool,
    link: _Link,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        client = await _honouring_cancel(stack.enter_async_context(make_client(settings)))
        link.up = True
        log.info(
            "connected to %s:%d as %s",
            settings.broker_host,
            settings.broker_port,
            settings.mqtt_client_id,
        )
        async with asyncio.TaskGroup() as tasks:
            if subscribe:
                await _honouring_cancel(_subscribe(client, settings.ingest_group))
                tasks.create_task(_consume(client, ingest), name="ingest")
            for job in extra:
                tasks.create_task(_extra(job, client), name=getattr(job, "__qualname__", "extra"))
            if not subscribe and not extra:
                tasks.create_task(asyncio.Event().wait(), name="idle")


async def run_mqtt(
    settings: CloudSettings,
    ingest: Ingest,
    extra: Sequence[Extra] = (),
    *,
    subscribe: bool = True,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> None:
    """Keep the session up forever: ingest (if `subscribe`) and every `extra` job share it.

    With ``subscribe=False`` give the process its own client id: a session that once held
    ingest's subscriptions keeps them, and their messages would never be acknowledged.
    """
    failures = 0
    while True:
        link = _Link()
        error: BaseException | None = None
        try:
            await _session(settings, ingest, extra, subscribe, link)
        except* (aiomqtt.MqttError, IngestUnavailable) as group:
            error = _leaf(group)
        if link.up:
            failures = 0  # it was up: this is a new outage, start the backoff afresh
        failures += 1
        delay = backoff.delay(failures)
        if failures == 1:
            log.warning(
                "MQTT session with %s:%d ended or failed (%s); reconnecting",
                settings.broker_host,
                settings.broker_port,
                error if error is not None else "closed",
            )
        else:
            log.debug("reconnect attempt %d failed (%s); next in %.1f s", failures, error, delay)
        await asyncio.sleep(delay)
