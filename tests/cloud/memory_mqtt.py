"""An in-memory `cloud.mqtt_link.MqttLink` and `Connect`, like httpx's MockTransport.

Logic tests of the cloud's MQTT session and the command dispatcher run on these (no broker,
no sockets); the live-broker tests stay next to them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from cloud.mqtt_link import Delivery, LinkError, MqttLink
from cloud.settings import CloudSettings


class MemoryLink:
    """One in-memory session: deliveries are queued by the test, acks and publishes recorded."""

    def __init__(self, puback: Callable[[str], int] = lambda topic: 0) -> None:
        self.puback = puback
        """PUBACK reason code the "broker" answers for a publish to a topic."""
        self.refused: set[str] = set()
        """Filters the broker refuses (SUBACK >= 0x80)."""
        self.subscribed: list[tuple[str, int]] = []
        self.acked: list[Delivery] = []
        self.published: list[tuple[str, bytes]] = []
        self._inbox: asyncio.Queue[Delivery | LinkError] = asyncio.Queue()
        self._mid = 0

    # -- what the test does -----------------------------------------------------------------

    def deliver(self, topic: str, payload: bytes, retain: bool = False) -> Delivery:
        """Queue a QoS 1 delivery, with a fresh packet id."""
        self._mid += 1
        delivery = Delivery(topic, payload, retain, 1, self._mid)
        self._inbox.put_nowait(delivery)
        return delivery

    def drop(self, reason: str = "connection lost") -> None:
        """End the session after what is queued so far."""
        self._inbox.put_nowait(LinkError(reason))

    # -- MqttLink ---------------------------------------------------------------------------

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> None:
        for topic_filter, qos in filters:
            if topic_filter in self.refused:
                raise LinkError(f"subscription to {topic_filter} refused (0x87)", 0x87)
            self.subscribed.append((topic_filter, qos))

    async def deliveries(self) -> AsyncIterator[Delivery]:
        while True:
            item = await self._inbox.get()
            if isinstance(item, LinkError):
                raise item
            yield item

    def ack(self, delivery: Delivery) -> None:
        self.acked.append(delivery)

    async def publish_confirmed(self, topic: str, payload: bytes) -> int:
        self.published.append((topic, payload))
        await asyncio.sleep(0)
        return self.puback(topic)


class MemoryBroker:
    """A `Connect` handing out `links` one per connection; with none left (or while
    `down`) connecting fails with `LinkError`."""

    def __init__(self, links: Sequence[MemoryLink] = ()) -> None:
        self.links = list(links)
        self.down = False
        self.connects = 0
        self.failed_connects = 0
        self.connected = asyncio.Event()

    def __call__(self, settings: CloudSettings) -> contextlib.AbstractAsyncContextManager[MqttLink]:
        return self._session()

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[MqttLink]:
        if self.down or not self.links:
            self.failed_connects += 1
            raise LinkError("connection refused")
        self.connects += 1
        link = self.links.pop(0)
        self.connected.set()
        yield link


async def until(condition: Callable[[], bool], what: str, limit_s: float = 10.0) -> None:
    """Let the loop (and ingest's worker threads) run until `condition` holds; a guard
    against a hang, not a timing check: it fails only if it never holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.001)
