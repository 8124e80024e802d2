"""End-to-end delivery: the cloud's watermarks (topic ``stored``) applied to the outbox.

A PUBACK only says the broker has a message; a broker that drops a slow subscriber's queue or
loses a shared subscription on restart would lose what the gateway already deleted. Once the
cloud confirms storage (`protocols.messages.Watermark`), the outbox keeps every message until
a watermark covers it, sends again what the cloud lists as missing, and what the cloud has not
reached `RESEND_AFTER_S` after its PUBACK.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.errors import OutboxError
from edge_agent.outbox import Outbox
from protocols.cose import open_watermark
from protocols.errors import RemoteProtocolError

log = logging.getLogger(__name__)

RESEND_AFTER_S = 120.0
"""A published message the cloud's watermark does not reach this long after its PUBACK is sent
again (the cloud ingests within seconds; a duplicate costs a message, a loss costs data)."""


@dataclass(slots=True)
class DeliveryFigures:
    """Counters reported in ``health``."""

    watermarks: int = 0
    rejected: int = 0
    confirmed: int = 0
    resent: int = 0


class Confirmations:
    """Verifies the cloud's watermarks and applies them to the outbox."""

    def __init__(
        self,
        *,
        device_id: str,
        cloud_keys: Mapping[str, Ed25519PublicKey],
        outbox: Outbox,
        resend_after_s: float = RESEND_AFTER_S,
    ) -> None:
        self.device_id = device_id
        self._keys = cloud_keys  # the agent's pinned set, as a pin_keys command leaves it
        self._outbox = outbox
        self._resend_after_ms = int(resend_after_s * 1000)
        self.figures = DeliveryFigures()

    def handle(self, envelope: bytes) -> None:
        """Apply one envelope received on the ``stored`` topic; never raises for bad input."""
        try:
            watermark = open_watermark(envelope, self.device_id, self._keys)
        except RemoteProtocolError as exc:
            self.figures.rejected += 1
            log.warning("%s: watermark rejected: %s", self.device_id, exc)
            return
        try:
            done = self._outbox.confirm(watermark, self._resend_after_ms)
        except OutboxError as exc:
            log.error("%s: could not apply a watermark: %s", self.device_id, exc)
            return
        self.figures.watermarks += 1
        self.figures.confirmed += done.deleted
        self.figures.resent += done.resend
        log.debug(
            "%s: watermark up to %d (%d missing range(s)): %d confirmed, %d to send again",
            self.device_id,
            watermark.upto,
            len(watermark.missing),
            done.deleted,
            done.resend,
        )
