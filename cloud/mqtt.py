"""The cloud's MQTT session: one persistent connection, ingest's subscriptions, reconnects.

* One MQTT 5 session per process under the stable ``mqtt_client_id``, ``clean_start=False``
  with ``mqtt_session_expiry_s``: while the worker is away (redeploy, crash) the broker queues
  its share of the fleet's QoS 1 messages instead of dropping them.
* Signed kinds are read through the shared subscription ``$share/<group>/bt/v1/+/<kind>``, so
  N workers split the fleet; ``bt/v1/+/state`` is subscribed by every worker, unshared, so
  each gets the retained states (applying one twice changes nothing).
* A QoS 1 message is acknowledged (PUBACK) only after `Ingest.handle` returned, i.e. after
  its transaction committed (or it was rejected for good). A crash, a lost
  connection or `IngestUnavailable` between receipt and commit leaves the message unacked and
  the broker delivers it again (ingest is idempotent on ``(device, seq)``). Messages are
  handled one at a time in arrival order, so PUBACKs go out in order, as MQTT requires.
* On `LinkError` (or `IngestUnavailable`) the session is dropped, logged once, and
  re-established after a capped full-jitter backoff. Cancellation is never swallowed.
* The transport is a `cloud.mqtt_link.MqttLink` opened by a `Connect` (aiomqtt in
  production, an in-memory link in logic tests).

Broker behaviour to know (Mosquitto 2.0.11, as tested): while a worker is away its persistent
session keeps being dealt its turn of the shared subscription, queued until it returns (not
handed to the other workers); and after a *broker* restart plain subscriptions of persistent
sessions are restored but shared ones are not, so until a worker has reconnected, uplinks
find no subscriber and are dropped by the broker (PUBACK 0x10). The gateways keep those
messages until the cloud's watermarks cover them and send them again (`cloud.watermarks`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from cloud.backoff import Backoff
from cloud.ingest import Ingest, IngestUnavailable
from cloud.metrics import INGEST_BATCH
from cloud.mqtt_link import Connect, Delivery, LinkError, MqttLink, connect
from cloud.settings import CloudSettings
from protocols.topics import QOS, TopicKind, shared_subscription, subscription

log = logging.getLogger(__name__)

SHARED_KINDS = (TopicKind.BIRTH, TopicKind.DATA, TopicKind.EVENT, TopicKind.HEALTH, TopicKind.ACK)
"""Signed uplink kinds, split between the workers of the ingest group."""
DEFAULT_BACKOFF = Backoff()
"""Reconnect after 0.5 s, doubling up to 30 s, with full jitter."""

Extra = Callable[[MqttLink], Awaitable[None]]
"""A job that uses the connection while it lasts (e.g. the command dispatcher)."""


def subscriptions(group: str) -> list[tuple[str, int]]:
    """Topic filters and QoS ingest subscribes to."""
    shared = [(shared_subscription(kind, group), QOS) for kind in SHARED_KINDS]
    return [*shared, (subscription(TopicKind.STATE), QOS)]


async def consume(
    link: MqttLink, ingest: Ingest, batch_max: int = 1, window_s: float = 0.0
) -> None:
    """Handle deliveries in batches (group commit), PUBACK each once its batch is stored.

    A batch is whatever has arrived while the previous one was being stored, up to
    `batch_max` (and, with `window_s` > 0, whatever arrives within that long of its first
    message): one message at a time when the load is light, no added latency; large batches
    under load. The batch is stored in one transaction in a thread (`Ingest.handle_many`),
    then acknowledged in arrival order, as MQTT requires. `IngestUnavailable` leaves the
    whole batch unacknowledged (the broker sends it again; copies are duplicates).
    """
    inbox: asyncio.Queue[Delivery | LinkError] = asyncio.Queue()

    async def receive() -> None:
        try:
            async for delivery in link.deliveries():
                inbox.put_nowait(delivery)
        except LinkError as exc:
            inbox.put_nowait(exc)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(receive(), name="receive")
        while True:
            batch = await _next_batch(inbox, batch_max, window_s)
            outcomes = await asyncio.to_thread(ingest.handle_many, batch)
            INGEST_BATCH.observe(len(batch))
            for delivery, outcome in zip(batch, outcomes, strict=True):
                log.debug("%s: %s (%s)", delivery.topic, outcome.outcome, outcome.reason)
                link.ack(delivery)


async def _next_batch(
    inbox: asyncio.Queue[Delivery | LinkError], batch_max: int, window_s: float
) -> list[Delivery]:
    """The next batch: waits for one delivery, then takes what is queued (see `consume`)."""
    batch: list[Delivery] = []
    first = await inbox.get()
    deadline = asyncio.get_running_loop().time() + window_s
    item: Delivery | LinkError | None = first
    while item is not None:
        if isinstance(item, LinkError):
            if batch:  # store what came before the break; the session is dropped after
                inbox.put_nowait(item)
                return batch
            raise item
        batch.append(item)
        if len(batch) >= batch_max:
            break
        item = await _more(inbox, deadline)
    return batch


async def _more(
    inbox: asyncio.Queue[Delivery | LinkError], deadline: float
) -> Delivery | LinkError | None:
    if not inbox.empty():
        return inbox.get_nowait()
    left = deadline - asyncio.get_running_loop().time()
    if left <= 0:
        return None
    try:
        async with asyncio.timeout(left):
            return await inbox.get()
    except TimeoutError:
        return None


class _Link:
    """Whether one session got as far as connecting."""

    up = False


def _leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


async def _extra(job: Extra, link: MqttLink) -> None:
    await job(link)


async def _session(
    settings: CloudSettings,
    ingest: Ingest,
    extra: Sequence[Extra],
    subscribe: bool,
    state: _Link,
    open_link: Connect,
) -> None:
    async with open_link(settings) as link:
        state.up = True
        log.info(
            "connected to %s:%d as %s",
            settings.broker_host,
            settings.broker_port,
            settings.mqtt_client_id,
        )
        async with asyncio.TaskGroup() as tasks:
            if subscribe:
                await link.subscribe(subscriptions(settings.ingest_group))
                batching = (settings.ingest_batch_max, settings.ingest_batch_window_s)
                tasks.create_task(consume(link, ingest, *batching), name="ingest")
            for job in extra:
                tasks.create_task(_extra(job, link), name=getattr(job, "__qualname__", "extra"))
            if not subscribe and not extra:
                tasks.create_task(asyncio.Event().wait(), name="idle")


async def run_mqtt(
    settings: CloudSettings,
    ingest: Ingest,
    extra: Sequence[Extra] = (),
    *,
    subscribe: bool = True,
    backoff: Backoff = DEFAULT_BACKOFF,
    open_link: Connect = connect,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Keep the session up forever: ingest (if `subscribe`) and every `extra` job share it.

    With ``subscribe=False`` give the process its own client id: a session that once held
    ingest's subscriptions keeps them, and their messages would never be acknowledged.
    """
    failures = 0
    while True:
        state = _Link()
        error: BaseException | None = None
        try:
            await _session(settings, ingest, extra, subscribe, state, open_link)
        except* (LinkError, IngestUnavailable) as group:
            error = _leaf(group)
        if state.up:
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
        await sleep(delay)
