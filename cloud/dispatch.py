"""Sends stored commands to devices (QoS 1) and runs the sweeper that times out silence.

A command is marked ``sent`` only when the broker's PUBACK says it was accepted for a
subscriber. Mosquitto answers 0x10 (no matching subscribers) when the device has no session
at all; then nothing is queued for it, so the command stays ``created`` and is offered again
every `RETRY_S` until it expires. PUBACK reason codes come from the link
(`cloud.mqtt_link.MqttLink.publish_confirmed`).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from cloud.commands import mark_sent, sweep
from cloud.db import transaction
from cloud.domain import Clock, CommandState, wall_ms
from cloud.models import Command
from cloud.mqtt_link import MqttLink
from cloud.periodic import every
from cloud.settings import CloudSettings
from protocols.topics import TopicKind, topic

log = logging.getLogger(__name__)

RETRY_S = 5.0
"""How often an unsent command is offered to the broker again."""
NO_MATCHING_SUBSCRIBERS = 0x10


class Dispatcher:
    """Publishes ``created`` commands, oldest first; woken at once by new commands."""

    def __init__(
        self, sessions: sessionmaker[Session], settings: CloudSettings, clock: Clock = wall_ms
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.clock = clock
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0

    def wake(self) -> None:
        """Ask for a dispatch round now; safe from any thread."""
        if self._loop is not None and self._event is not None:
            self._loop.call_soon_threadsafe(self._event.set)

    async def run(self, link: MqttLink) -> None:
        """Dispatch for as long as `link` is connected."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        while True:
            self._event.clear()
            try:
                await self.dispatch_once(link)
            except DBAPIError as exc:
                log.warning("dispatch round skipped: database unavailable (%s)", exc.orig)
            try:
                async with asyncio.timeout(1.0):
                    await self._event.wait()
            except TimeoutError:
                pass

    def _due(self) -> list[tuple[str, str, bytes]]:
        now = self.clock()
        retry_before = now - int(RETRY_S * 1000)
        with self.sessions() as session:
            rows = session.execute(
                select(Command.id, Command.device_id, Command.envelope)
                .where(
                    Command.state == CommandState.CREATED.value,
                    Command.exp_ms > now,
                    or_(Command.publish_attempts == 0, Command.updated_ms <= retry_before),
                )
                .order_by(Command.created_ms)
                .limit(100)
            ).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def _attempted(self, command_id: str, reason_code: int) -> None:
        now = self.clock()
        with transaction(self.sessions) as session:
            if reason_code < 0x80 and reason_code != NO_MATCHING_SUBSCRIBERS:
                mark_sent(session, command_id, now, reason_code)
            row = session.get(Command, command_id)
            if row is not None:
                row.publish_attempts += 1
                if row.state == CommandState.CREATED.value:
                    row.updated_ms = now

    async def dispatch_once(self, link: MqttLink) -> int:
        """Offer every due command to the broker once; returns how many it accepted."""
        accepted = 0
        for command_id, device_id, envelope in await asyncio.to_thread(self._due):
            code = await link.publish_confirmed(topic(device_id, TopicKind.CMD), envelope)
            if code >= 0x80 or code == NO_MATCHING_SUBSCRIBERS:
                log.warning(
                    "%s: command %s not accepted by the broker (PUBACK 0x%02x); will retry",
                    device_id,
                    command_id,
                    code,
                )
            else:
                accepted += 1
                self.published += 1
                log.info("%s: command %s sent", device_id, command_id)
            await asyncio.to_thread(self._attempted, command_id, code)
        return accepted


class Sweeper:
    """Expires undelivered commands and times out silent ones, every `sweep_interval_s`."""

    def __init__(
        self, sessions: sessionmaker[Session], settings: CloudSettings, clock: Clock = wall_ms
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.clock = clock

    def sweep_once(self) -> list[tuple[str, str]]:
        """One sweep in one transaction."""
        with transaction(self.sessions) as session:
            return sweep(session, self.clock(), self.settings)

    async def run(self) -> None:
        """Sweep forever, the first time at once."""
        await every(self.settings.sweep_interval_s, self.sweep_once, "sweep", wait_first=False)
