"""Sends each device the cloud's watermark (topic ``stored``): what of it is durably stored.

A device is due once after each connection (its birth), so what it published before and the
broker may have dropped is sent again at once, and then at most every
`watermark_interval_s` while what is stored of it grows (new seqs, or holes filled by its
resends). A device that sends what is already stored (duplicates) did not get its last
watermark and is asking again: it is due after `ASKED_AFTER_MS` (or the interval, if
shorter). A watermark is computed from the database at send time (`cloud.twin.delivered`)
and signed with the command key; one the broker does not accept (no session: PUBACK 0x10)
is due again after the interval, or at once on the device's next connection.

State is in memory: a restarted cloud sends every active device one at once. Several cloud
processes sending is harmless (a watermark only says what is stored).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from cloud.domain import Clock, wall_ms
from cloud.keys import CommandKey
from cloud.metrics import WATERMARKS_SENT
from cloud.models import Twin
from cloud.mqtt_link import MqttLink
from cloud.settings import CloudSettings
from cloud.twin.delivered import watermark_for
from protocols.cose import seal
from protocols.topics import TopicKind, topic

log = logging.getLogger(__name__)

MAX_PER_ROUND = 500
"""Watermarks sent per round at most; the rest are due in the next round."""
ACTIVE_MIN_MS = 600_000
"""A device heard from within two intervals, or at least this long, is looked at each round
(a short interval must not make a device that is still resending look inactive)."""
ASKED_AFTER_MS = 30_000
"""A device sending duplicates gets a watermark again after this long at the earliest."""


@dataclass(frozen=True, slots=True)
class _Sent:
    """What a device was last told, by this process: the figures its watermark rested on."""

    birth_ms: int | None
    max_seq: int
    contiguous_seq: int
    duplicates: int
    at_ms: int


_NOT_TOLD = -1
"""`_Sent` figures of a watermark the broker did not accept: any figure counts as grown."""


class WatermarkSender:
    """Decides which devices are due a watermark and sends them over the cloud's link."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        key: CommandKey,
        settings: CloudSettings,
        clock: Clock = wall_ms,
    ) -> None:
        self.sessions = sessions
        self.key = key
        self.settings = settings
        self.clock = clock
        self._sent: dict[str, _Sent] = {}
        self.sent = 0

    def due(self) -> list[tuple[str, bytes, _Sent]]:
        """(device, sealed watermark, its figures) for every device due one now (database
        work)."""
        now = self.clock()
        interval_ms = int(self.settings.watermark_interval_s * 1000)
        active_since = now - max(2 * interval_ms, ACTIVE_MIN_MS)
        out: list[tuple[str, bytes, _Sent]] = []
        with self.sessions() as session:
            rows = session.execute(
                select(
                    Twin.device_id,
                    Twin.birth_ms,
                    Twin.max_seq,
                    Twin.contiguous_seq,
                    Twin.duplicates,
                ).where(Twin.max_seq.is_not(None), Twin.last_seen_ms >= active_since)
            ).all()
            for device_id, birth_ms, max_seq, contiguous, duplicates in rows:
                figures = _Sent(birth_ms, max_seq or 0, contiguous or 0, duplicates or 0, now)
                if not self._is_due(self._sent.get(device_id), figures):
                    continue
                watermark = watermark_for(session, device_id, now)
                if watermark is None:
                    continue
                out.append((device_id, seal(watermark, self.key.key, self.key.kid), figures))
                if len(out) == MAX_PER_ROUND:
                    break
        return out

    def _is_due(self, sent: _Sent | None, now: _Sent) -> bool:
        """Never told (by this process), connected anew since, more stored since (after the
        interval), or asking again with duplicates (after `ASKED_AFTER_MS`)."""
        if sent is None or sent.birth_ms != now.birth_ms:
            return True
        waited = now.at_ms - sent.at_ms
        interval_ms = int(self.settings.watermark_interval_s * 1000)
        if now.duplicates > sent.duplicates and waited >= min(interval_ms, ASKED_AFTER_MS):
            return True
        grown = now.max_seq > sent.max_seq or now.contiguous_seq > sent.contiguous_seq
        return grown and waited >= interval_ms

    async def send_due(self, link: MqttLink) -> int:
        """One round: send what is due; returns how many the broker accepted."""
        accepted = 0
        for device_id, envelope, figures in await asyncio.to_thread(self.due):
            code = await link.publish_confirmed(topic(device_id, TopicKind.STORED), envelope)
            outcome = "sent" if code < 0x80 and code != 0x10 else "not_accepted"
            WATERMARKS_SENT.labels(outcome).inc()
            if outcome == "sent":
                self._sent[device_id] = figures
                accepted += 1
                self.sent += 1
            else:
                # due again after the interval, or on its next connection or duplicate
                lost = _NOT_TOLD
                self._sent[device_id] = _Sent(
                    figures.birth_ms, lost, lost, figures.duplicates, figures.at_ms
                )
                log.debug("%s: watermark not accepted (PUBACK 0x%02x)", device_id, code)
        return accepted

    async def run(self, link: MqttLink) -> None:
        """Send watermarks for as long as `link` is connected; a database outage skips a
        round."""
        while True:
            try:
                await self.send_due(link)
            except DBAPIError as exc:
                log.warning("watermark round skipped: database unavailable (%s)", exc.orig)
            await asyncio.sleep(self.settings.watermark_check_s)
