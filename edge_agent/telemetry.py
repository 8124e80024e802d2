"""From polls to uplink messages: batching, the alarm fast path and comms state.

Pure: `Telemetry.on_poll` and `Telemetry.due` take the time and return the messages to store
(header fields other than ``ts``/``sync`` are stamped by the outbox).

* Readings that pass report-by-exception wait in memory and leave as one ``data`` message
  every batch interval (or earlier, if the batch grows past `MAX_BATCH_READINGS`).
* An alarm (lockout, fault code change) leaves at once as an ``event``, preceded by the
  pending readings, so the cloud sees the values that led up to it without waiting.
* ``comms_lost`` is raised once after `comms_lost_after` polls in a row that the controller
  did not answer at all, and ``comms_restored`` once when it answers again; meanwhile the
  points are reported once with quality ``bad``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from edge_agent.poller import Poll
from edge_agent.reporter import ReportByException, alarms
from protocols.messages import (
    DetailValue,
    Event,
    EventKind,
    Quality,
    Reading,
    Scalar,
    TelemetryBatch,
    UplinkMessage,
)

log = logging.getLogger(__name__)

MAX_BATCH_READINGS = 1000
"""A batch is sealed early beyond this many readings (well under the 64 KiB payload cap)."""


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """How telemetry is batched."""

    batch_interval_ms: int
    heartbeat_ms: int
    deadbands: Mapping[str, float]
    comms_lost_after: int = 1


class Telemetry:
    """Turns polls into ``data`` and ``event`` messages for one device."""

    def __init__(self, settings: TelemetrySettings, *, device_id: str) -> None:
        self.settings = settings
        self.device_id = device_id
        self._rbe = ReportByException(settings.deadbands, settings.heartbeat_ms)
        self._pending: list[Reading] = []
        self._batch_started_ms: int | None = None
        self._last_good: dict[str, Scalar] | None = None
        self._silent_polls = 0
        self.comms_lost = False

    @property
    def pending_readings(self) -> int:
        """Readings waiting for the next batch (lost if the power goes now)."""
        return len(self._pending)

    def on_poll(self, poll: Poll, *, sync: bool) -> list[UplinkMessage]:
        """Messages to store now because of this poll (often none)."""
        out: list[UplinkMessage] = []
        ts = poll.ts_ms
        # the comms events go first: they explain the readings' quality
        if poll.reached:
            self._silent_polls = 0
            if self.comms_lost:
                self.comms_lost = False
                log.info("%s: controller answering again", self.device_id)
                out.append(self._event(EventKind.COMMS_RESTORED, {}, ts, sync))
        else:
            self._silent_polls += 1
            if not self.comms_lost and self._silent_polls >= self.settings.comms_lost_after:
                self.comms_lost = True
                reason = poll.errors[0] if poll.errors else "no answer"
                log.warning("%s: controller not answering: %s", self.device_id, reason)
                detail: dict[str, DetailValue] = {"error": reason, "polls": self._silent_polls}
                out.append(self._event(EventKind.COMMS_LOST, detail, ts, sync))
        for point, sample in poll.samples.items():
            if sample.quality is not Quality.GOOD and not self.comms_lost and not poll.reached:
                continue  # a single silent poll below the threshold: not worth a bad reading
            reading = self._rbe.offer(point, sample, ts)
            if reading is not None:
                if self._batch_started_ms is None:
                    self._batch_started_ms = ts
                self._pending.append(reading)
        good = {p: s.value for p, s in poll.samples.items() if s.quality is Quality.GOOD}
        raised = alarms(self._last_good, good) if good else []
        if good:
            self._last_good = dict(good) if self._last_good is None else self._last_good | good
        if raised:
            for kind, detail in raised:
                log.warning("%s: %s %s", self.device_id, kind, detail)
            batch = self.flush(ts, sync=sync)
            out.extend(batch)
            out.extend(self._event(kind, detail, ts, sync) for kind, detail in raised)
        elif len(self._pending) >= MAX_BATCH_READINGS:
            out.extend(self.flush(ts, sync=sync))
        return out

    def due(self, now_ms: int) -> bool:
        """Whether the batch interval has run out for the pending readings."""
        return (
            self._batch_started_ms is not None
            and now_ms - self._batch_started_ms >= self.settings.batch_interval_ms
        )

    def flush(self, now_ms: int, *, sync: bool) -> list[UplinkMessage]:
        """The pending readings as one ``data`` message (none if there are none)."""
        if not self._pending:
            return []
        readings, self._pending = tuple(self._pending), []
        self._batch_started_ms = None
        return [
            TelemetryBatch(
                dev=self.device_id, epoch=0, seq=0, ts=now_ms, sync=sync, readings=readings
            )
        ]

    def _event(
        self, kind: EventKind, detail: Mapping[str, DetailValue], ts: int, sync: bool
    ) -> Event:
        return Event(dev=self.device_id, epoch=0, seq=0, ts=ts, sync=sync, kind=kind, detail=detail)
