"""The cloud's half of a key rotation's second step: register the new key a ``rotate_key``
ack proves (`protocols.key_rotation`), in the ingest transaction that stores the ack. The
other steps are `cloud.key_rotation`'s."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from cloud import thread
from cloud.errors import Conflict
from cloud.models import Command
from cloud.registry import rotate_key
from protocols.cose import public_key_from_raw
from protocols.errors import ProtocolError
from protocols.key_rotation import check

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 86_400
"""How long the old key still verifies after the new one is registered."""


def accept(session: Session, row: Command, observed: dict[str, Any], now_ms: int) -> bool:
    """Register the key a ``rotate_key`` ack proves (False, and a thread note, if the proof
    does not hold)."""
    try:
        raw = check(observed, row.device_id, row.id)
        public = public_key_from_raw(raw)
    except ProtocolError as exc:
        log.warning("%s: new key refused: %s", row.device_id, exc)
        thread.record(
            session,
            device_id=row.device_id,
            kind=thread.ThreadKind.DEVICE,
            ts_ms=now_ms,
            recorded_ms=now_ms,
            actor="cloud",
            subject=row.id,
            data={"change": "key_refused", "why": str(exc)[:200]},
        )
        return False
    grace = row.args.get("grace_s", DEFAULT_GRACE_S)
    try:
        rotate_key(
            session,
            row.device_id,
            public,
            now_ms=now_ms,
            grace_s=float(grace),
            actor=f"device:{row.device_id}",
        )
    except Conflict:
        return True  # registered by an earlier copy of this ack
    return True
