"""Which time the cloud orders a message by: the device's, or its own receipt time.

The twin keeps the newest value of each point, newest by timestamp; a message is trusted
with that only when the gateway says its clock was synchronised (``sync``) and its time is
not ahead of the cloud's clock by more than ``max_clock_ahead_s`` (5 minutes by default).
Otherwise one reading stamped in the year 2100 would shadow every honest reading after it,
and the twin would show "running" through a lockout.

* An untrusted message (``sync`` false, or ``ts`` too far ahead) is re-timed as a whole: its
  ``ts`` becomes the cloud's receipt time, and each reading is placed as far before receipt
  as it was before the message was built (never later than receipt, never before 1970), so
  a batch keeps its shape.
* A trusted message with a single reading too far ahead has just that reading re-timed to
  receipt.

Nothing is thrown away: the device's own value is kept as evidence (``uplinks.ts_ms`` always;
``device_ts_ms`` on samples and latest values; ``device_ts`` and ``clock`` in thread events),
and re-timed messages are counted by reason. Pure: no I/O, no clock of its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from protocols.messages import Reading, TelemetryBatch, UplinkMessage

UNTRUSTED = "clock_untrusted"
"""The gateway said its clock was not synchronised when it built the message."""
AHEAD = "clock_ahead"
"""The message's time is ahead of the cloud's clock by more than the allowance."""


@dataclass(frozen=True, slots=True)
class Timing:
    """A message as the cloud orders it, and what the device said."""

    message: UplinkMessage
    reason: str | None = None
    """Why the header was re-timed (`UNTRUSTED`, `AHEAD`), None if it was not."""
    device_ts: int | None = None
    """The device's own ``ts`` when the header was re-timed."""
    reading_ts: tuple[int | None, ...] = ()
    """Per reading (telemetry only): the device's own ts where that reading was re-timed."""

    @property
    def evidence(self) -> dict[str, Any]:
        """What thread events add to their data when the header was re-timed (else empty)."""
        if self.reason is None:
            return {}
        return {"clock": self.reason, "device_ts": self.device_ts}


def order_time(message: UplinkMessage, now_ms: int, max_ahead_ms: int) -> Timing:
    """`message` with timestamps the cloud can order by (see the module docstring)."""
    limit = now_ms + max_ahead_ms
    if message.sync and message.ts <= limit:
        if not isinstance(message, TelemetryBatch):
            return Timing(message)
        if all(reading.ts <= limit for reading in message.readings):
            return Timing(message)
        readings = tuple(
            r if r.ts <= limit else dataclasses.replace(r, ts=now_ms) for r in message.readings
        )
        originals = tuple(None if r.ts <= limit else r.ts for r in message.readings)
        return Timing(dataclasses.replace(message, readings=readings), reading_ts=originals)
    reason = UNTRUSTED if not message.sync else AHEAD
    if not isinstance(message, TelemetryBatch):
        return Timing(dataclasses.replace(message, ts=now_ms), reason, message.ts)
    readings = tuple(_before_receipt(r, message.ts, now_ms) for r in message.readings)
    retimed = dataclasses.replace(message, ts=now_ms, readings=readings)
    return Timing(retimed, reason, message.ts, tuple(r.ts for r in message.readings))


def _before_receipt(reading: Reading, built_ms: int, now_ms: int) -> Reading:
    """`reading` as long before receipt as it was before its message was built."""
    before = max(0, built_ms - reading.ts)
    return dataclasses.replace(reading, ts=max(0, now_ms - before))
