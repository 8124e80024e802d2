"""The MQTT uplink: one session at a time, reconnecting for ever with capped full jitter.

Each session (MQTT 5, persistent: ``clean_start`` false and a session expiry, so commands
published while the gateway is offline wait at the broker):

1. publishes the retained ``state`` ``online`` (the last will says ``offline``);
2. subscribes to its ``cmd`` topic, handing envelopes to the command queue, and to its
   ``stored`` topic, handing the cloud's watermarks to `edge_agent.delivery`;
3. stores a ``birth`` in the outbox (it is signed and numbered like everything else);
4. drains the outbox oldest first with up to `inflight` publishes awaiting PUBACK, and
   acknowledges each message to the outbox when its PUBACK arrives (once the cloud confirms
   storage, the outbox then keeps it until a watermark covers it).

Polling never waits for any of this: the outbox is the only thing the two share. Nothing is
lost when a session dies: what was in flight stays in the outbox and goes again next time.

The transport is an `edge_agent.mqtt_link.MqttSession` opened by a `Connect` (aiomqtt in
production, an in-memory session in logic tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.clock import Clock, wall_ms
from edge_agent.config import MqttSettings
from edge_agent.mqtt_link import Connect, Identity, LinkError, MqttSession, connector, delivered
from edge_agent.outbox import Outbox, Stored
from protocols.messages import Birth
from protocols.topics import STATE_OFFLINE, STATE_ONLINE, TopicKind, topic

log = logging.getLogger(__name__)

IDLE_WAKE_S = 5.0
"""How often an idle session looks up (and shows the watchdog it is alive)."""
OFFLINE_NOTICE_S = 2.0
"""How long a graceful shutdown waits to publish ``state: offline``."""


@dataclass(slots=True)
class UplinkFigures:
    """Counters reported in ``health``."""

    connected: bool = False
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    published: int = 0
    commands_received: int = 0
    commands_dropped: int = 0
    not_delivered: int = 0
    """PUBACKs saying the broker passed a message on to nobody, or refused it."""
    last_publish_ms: int = 0


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Capped full-jitter backoff: uniform in [0, min(high, low * 2**attempt)]."""
    return rng.uniform(0.0, min(high, low * 2.0 ** min(attempt, 32)))


def _link_error(group: BaseExceptionGroup[BaseException]) -> LinkError | None:
    """The first link error in a task group's failure, if link errors are all it holds."""
    rest = group.subgroup(lambda e: not isinstance(e, LinkError | BaseExceptionGroup))
    if rest is not None:
        return None
    errors = group.subgroup(LinkError)
    while errors is not None and isinstance(errors.exceptions[0], BaseExceptionGroup):
        errors = errors.exceptions[0]
    first = errors.exceptions[0] if errors is not None else None
    return first if isinstance(first, LinkError) else None


class Uplink:
    """Keeps one device's MQTT session alive and the outbox flowing through it."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        device_id: str,
        username: str,
        password: str | None,
        outbox: Outbox,
        make_birth: Callable[[], Birth],
        commands: asyncio.Queue[bytes],
        clock: Clock,
        progress: Callable[[], None] = lambda: None,
        rng: random.Random | None = None,
        connect: Connect | None = None,
        on_stored: Callable[[bytes], None] = lambda envelope: None,
    ) -> None:
        self.settings = settings
        self.device_id = device_id
        self._outbox = outbox
        self._make_birth = make_birth
        self._commands = commands
        self._clock = clock
        self._progress = progress
        self._rng = rng or random.Random()
        self.figures = UplinkFigures()
        self._state_topic = topic(device_id, TopicKind.STATE)
        self._cmd_topic = topic(device_id, TopicKind.CMD)
        self._stored_topic = topic(device_id, TopicKind.STORED)
        self._on_stored = on_stored
        self._last_error: str | None = None
        self._refusals = 0
        identity = Identity(device_id, username, password, self._state_topic)
        self._connect = connect or connector(settings, identity, clock.scale)

    async def run(self) -> None:
        """Connect, serve, reconnect; returns only by cancellation."""
        attempt = 0
        while True:
            self._progress()
            cancelled = False
            try:
                async with self._connect() as session:
                    attempt = 0
                    try:
                        await self._session(session)
                    except asyncio.CancelledError:
                        cancelled = True
                        raise
            except LinkError as exc:
                if cancelled:
                    # the session's exit failed while we were being cancelled: stop, do
                    # not turn SIGTERM into a reconnect. (Task.cancelling() cannot tell: a
                    # 3.11 TaskGroup may leave it raised after a child failed.)
                    raise asyncio.CancelledError from exc
                self._lost(exc)
            delay = backoff_delay(
                attempt, self.settings.reconnect_min_s, self.settings.reconnect_max_s, self._rng
            )
            attempt += 1
            log.debug("%s: reconnecting in %.1f s (attempt %d)", self.device_id, delay, attempt)
            await self._back_off(delay)

    async def _back_off(self, delay: float) -> None:
        """Sleep `delay`, in slices that show the watchdog this loop is alive and waiting."""
        deadline = self._clock.monotonic() + delay
        while (left := deadline - self._clock.monotonic()) > 0:
            await self._clock.sleep(min(left, IDLE_WAKE_S))
            self._progress()

    def _lost(self, exc: BaseException) -> None:
        message = str(exc) or type(exc).__name__
        if self.figures.connected:
            self.figures.connected = False
            self.figures.disconnects += 1
            log.warning("%s: MQTT connection lost: %s", self.device_id, message)
        else:
            self.figures.connect_failures += 1
            if message != self._last_error:
                log.warning("%s: MQTT connect failed: %s", self.device_id, message)
        self._last_error = message

    async def _session(self, client: MqttSession) -> None:
        self.figures.connected = True
        self.figures.connects += 1
        self._last_error = None
        log.info(
            "%s: MQTT connected to %s:%d", self.device_id, self.settings.host, self.settings.port
        )
        try:
            await client.publish(self._state_topic, STATE_ONLINE, retain=True)
            await client.subscribe(self._cmd_topic)
            # the cloud's watermarks; a broker whose ACL predates them refuses this quietly,
            # and the outbox keeps deleting at PUBACK
            await client.subscribe(self._stored_topic)
            self._outbox.append(self._make_birth())
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._drain(client), name="uplink-drain")
                    tasks.create_task(self._receive(client), name="uplink-receive")
            except BaseExceptionGroup as group:
                error = _link_error(group)
                if error is None:
                    raise
                raise error from None
        except asyncio.CancelledError:
            await self._say_offline(client)
            raise
        finally:
            self._outbox.in_flight.clear()

    async def _say_offline(self, client: MqttSession) -> None:
        """A graceful disconnect suppresses the will, so say ``offline`` ourselves."""
        try:
            await asyncio.shield(
                client.publish(
                    self._state_topic, STATE_OFFLINE, retain=True, timeout=OFFLINE_NOTICE_S
                )
            )
        except (LinkError, asyncio.CancelledError):
            log.debug("%s: could not publish offline state", self.device_id)

    async def _drain(self, client: MqttSession) -> None:
        async with asyncio.TaskGroup() as publishes:
            while True:
                self._outbox.changed.clear()
                free = self.settings.inflight - len(self._outbox.in_flight)
                batch = self._outbox.pending(free) if free > 0 else []
                for stored in batch:
                    self._outbox.in_flight.add(stored.seq)
                    publishes.create_task(self._publish(client, stored), name=f"pub-{stored.seq}")
                if batch:
                    await asyncio.sleep(0)
                    continue
                self._progress()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that races with the event being set, and the drain would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_WAKE_S):
                        await self._outbox.changed.wait()

    async def _publish(self, client: MqttSession, stored: Stored) -> None:
        name = topic(self.device_id, stored.kind)
        code = await client.publish(name, stored.envelope, timeout=math.inf)
        if not delivered(code):
            await self._not_delivered(stored, code)
            return
        self._refusals = 0
        self._outbox.acknowledge(stored.seq)
        self._outbox.changed.set()
        self.figures.published += 1
        self.figures.last_publish_ms = wall_ms(self._clock)
        self._progress()

    async def _not_delivered(self, stored: Stored, code: int) -> None:
        """The broker took it but passed it on to nobody (0x10: no matching subscribers,
        e.g. a broker that lost the cloud's shared subscription) or refused it (>= 0x80): keep
        it, hold its slot for a backoff, then offer it again."""
        self.figures.not_delivered += 1
        self._refusals += 1
        if self._refusals == 1:
            log.warning(
                "%s: broker did not deliver seq %d (PUBACK 0x%02x): kept, sent again later",
                self.device_id,
                stored.seq,
                code,
            )
        delay = backoff_delay(
            min(self._refusals, 8), self.settings.reconnect_min_s, 60.0, self._rng
        )
        await self._clock.sleep(max(delay, self.settings.reconnect_min_s))
        self._outbox.in_flight.discard(stored.seq)
        self._outbox.changed.set()

    async def _receive(self, client: MqttSession) -> None:
        async for message in client.messages():
            if message.topic == self._stored_topic:
                self._on_stored(message.payload)
                continue
            if message.topic != self._cmd_topic:
                continue
            self.figures.commands_received += 1
            try:
                self._commands.put_nowait(message.payload)
            except asyncio.QueueFull:
                self.figures.commands_dropped += 1
                log.warning("%s: command queue full: command dropped", self.device_id)
