"""An in-memory `edge_agent.mqtt_link.MqttSession` and `Connect`, like httpx's MockTransport.

The uplink's logic tests run on these (no broker, no sockets, virtual time); the live-broker
tests stay next to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from edge_agent.mqtt_link import LinkError, Message, MqttSession

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Published:
    """One publish the broker received (and, unless held, acknowledged)."""

    topic: str
    payload: bytes
    retain: bool


class MemorySession:
    """One in-memory session. PUBACKs come at once, except for publishes to `hold` (a topic)
    until `release`; `drop` ends the session (a held publish then fails, as on a lost
    connection). A publish's `timeout` is honoured in real seconds, as aiomqtt does."""

    def __init__(self, puback: Callable[[str], int] = lambda topic: 0) -> None:
        self.puback = puback
        """PUBACK reason code the broker answers for a publish to a topic."""
        self.published: list[Published] = []
        self.acknowledged: list[Published] = []
        self.subscribed: list[str] = []
        self.hold: str | None = None
        self._released = asyncio.Event()
        self._dropped = asyncio.Event()
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()

    # -- what the test does -----------------------------------------------------------------

    def deliver(self, topic: str, payload: bytes) -> None:
        """The broker delivers a message to the gateway."""
        self._inbox.put_nowait(Message(topic, payload))

    def release(self) -> None:
        """Send the held PUBACKs (and every later one)."""
        self.hold: str | None = None
        self._released.set()

    def drop(self) -> None:
        """The connection is lost."""
        self._dropped.set()

    # -- MqttSession ------------------------------------------------------------------------

    async def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = math.inf
    ) -> int:
        if self._dropped.is_set():
            raise LinkError("connection lost")
        message = Published(topic, payload, retain)
        self.published.append(message)
        if topic == self.hold:
            try:
                async with asyncio.timeout(None if math.isinf(timeout) else timeout):
                    await self._first(self._released.wait())
            except TimeoutError as exc:
                raise LinkError(f"no PUBACK for {topic} in {timeout} s") from exc
        code = self.puback(topic)
        if code == 0:
            self.acknowledged.append(message)
        return code

    async def subscribe(self, topic_filter: str) -> None:
        self.subscribed.append(topic_filter)

    async def messages(self) -> AsyncIterator[Message]:
        while True:
            yield await self._first(self._inbox.get())

    async def _first(self, waiting: Awaitable[T]) -> T:
        """`waiting`'s result, or `LinkError` if the connection drops first."""
        task = asyncio.ensure_future(waiting)
        dropped = asyncio.ensure_future(self._dropped.wait())
        try:
            await asyncio.wait({task, dropped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            dropped.cancel()
            if not task.done():
                task.cancel()
        if not task.done() or task.cancelled():
            raise LinkError("connection lost")
        return task.result()


class MemoryBroker:
    """A `Connect` handing out `sessions` one per connection; while `down` (or with none
    left) connecting fails with `LinkError`."""

    def __init__(self, *sessions: MemorySession) -> None:
        self.sessions = list(sessions)
        self.down = False
        self.connects = 0
        self.refused = 0

    def __call__(self) -> contextlib.AbstractAsyncContextManager[MqttSession]:
        return self._session()

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[MqttSession]:
        if self.down or not self.sessions:
            self.refused += 1
            raise LinkError("connection refused")
        self.connects += 1
        yield self.sessions.pop(0)


async def until(condition: Callable[[], bool], what: str, turns: int = 100_000) -> None:
    """Let the loop turn until `condition()` holds; no real time passes (virtual clock)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")
