"""Sends each device the cloud's watermark (topic ``stored``): what of it is durably stored.

A device is due once after each connection (its birth), so what it published before and the
broker may have dropped is sent again at once, and then at most every
`watermark_interval_s` while what is stored of it grows (new seqs, or holes filled by its
resends). A device that sends what is already stored (duplicates) did not get its last
watermark and is asking again: it is due after `ASKED_AFTER_MS` (or the interval, if
shorter). A watermark is computed from the database at send time (`cloud.twin.delivered`)
and signed with the command key; one the broker does not accept (no session: PUBACK 0x10)
is due again after the interval, or at once on the device's next connection.

State is in memory: a restarted cloud sends every active device one at once. Each round reads
only the twins heard from since the previous round; the devices that are heard from but not
yet due wait in memory, in order of when they may be due (`WatermarkSender.due`). Several cloud
processes sending is harmless (a watermark only says what is stored).
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
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
RESCAN_SLACK_MS = 10_000
"""Each round also rereads devices heard from this long before the previous round began."""
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


def _same(a: _Sent, b: _Sent) -> bool:
    """The same figures, whenever they were read."""
    return (a.birth_ms, a.max_seq, a.contiguous_seq, a.duplicates) == (
        b.birth_ms,
        b.max_seq,
        b.contiguous_seq,
        b.duplicates,
    )


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
        self._latest: dict[str, _Sent] = {}
        """Each device heard from since it was last told: its newest figures."""
        self._wake: list[tuple[int, str]] = []
        """(when, device): when a device in `_latest` may next be due (a heap)."""
        self._scanned_to: int | None = None
        self.sent = 0

    def due(self) -> list[tuple[str, bytes, _Sent]]:
        """(device, sealed watermark, its figures) for every device due one now (database
        work).

        The first round reads every device heard from within the active window; later rounds
        only those heard from since the previous round (less `RESCAN_SLACK_MS`, for
        transactions that were still committing). Devices heard from but not yet due wait in
        memory, ordered by when they may become due, so a round costs what changed, not the
        fleet."""
        now = self.clock()
        interval_ms = int(self.settings.watermark_interval_s * 1000)
        active_since = now - max(2 * interval_ms, ACTIVE_MIN_MS)
        since = active_since
        if self._scanned_to is not None:
            since = max(active_since, self._scanned_to - RESCAN_SLACK_MS)
        out: list[tuple[str, bytes, _Sent]] = []
        with self.sessions() as session:
            rows = session.execute(
                select(
                    Twin.device_id,
                    Twin.birth_ms,
                    Twin.max_seq,
                    Twin.contiguous_seq,
                    Twin.duplicates,
                ).where(Twin.max_seq.is_not(None), Twin.last_seen_ms >= since)
            ).all()
            self._scanned_to = now
            for device_id, birth_ms, max_seq, contiguous, duplicates in rows:
                figures = _Sent(birth_ms, max_seq or 0, contiguous or 0, duplicates or 0, now)
                held = self._latest.get(device_id)
                if held is not None and _same(held, figures):
                    continue  # reread (slack), nothing new: its wake-up is queued already
                self._latest[device_id] = figures
                when = self._due_at(self._sent.get(device_id), figures)
                if when is not None:
                    heapq.heappush(self._wake, (when, device_id))
            chosen: set[str] = set()
            while self._wake and self._wake[0][0] <= now and len(out) < MAX_PER_ROUND:
                _, device_id = heapq.heappop(self._wake)
                latest = self._latest.get(device_id)
                if latest is None or device_id in chosen:
                    continue  # told already, or twice in the heap
                chosen.add(device_id)
                figures = dataclasses.replace(latest, at_ms=now)
                if not self._is_due(self._sent.get(device_id), figures):
                    continue
                watermark = watermark_for(session, device_id, now)
                if watermark is None:
                    continue
                out.append((device_id, seal(watermark, self.key.key, self.key.kid), figures))
        return out

    def _due_at(self, sent: _Sent | None, now: _Sent) -> int | None:
        """When a device with figures `now` becomes due (see `_is_due`); None: not unless
        it is heard from again."""
        if sent is None or sent.birth_ms != now.birth_ms:
            return now.at_ms
        interval_ms = int(self.settings.watermark_interval_s * 1000)
        times = []
        if now.duplicates > sent.duplicates:
            times.append(sent.at_ms + min(interval_ms, ASKED_AFTER_MS))
        if now.max_seq > sent.max_seq or now.contiguous_seq > sent.contiguous_seq:
            times.append(sent.at_ms + interval_ms)
        return min(times) if times else None

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
                latest = self._latest.get(device_id)
                if latest is not None and _same(latest, figures):
                    del self._latest[device_id]  # nothing newer heard meanwhile
                accepted += 1
                self.sent += 1
            else:
                # due again after the interval, or on its next connection or duplicate
                lost = _NOT_TOLD
                self._sent[device_id] = _Sent(
                    figures.birth_ms, lost, lost, figures.duplicates, figures.at_ms
                )
                retry = self._due_at(self._sent[device_id], figures)
                if retry is not None:
                    heapq.heappush(self._wake, (retry, device_id))
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
