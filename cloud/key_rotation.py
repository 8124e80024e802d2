"""Device key rotation started by the cloud, in three steps with an overlap:

1. `start` sends ``rotate_key``: the gateway makes a new key and acks it with a proof of
   possession, signed with its current key (`edge_agent.key_rotation`);
2. on that ack, in the ingest transaction (`cloud.key_proof.accept`, called by
   `cloud.commands.apply_ack`),
   the proof is checked and the new key registered (`registry.rotate_key`): from now on both
   keys verify, the old one until the grace period ends (messages sealed before the switch
   still in the outbox);
3. `follow_up` (a ``cloud serve`` loop) sends ``use_key`` once every ingest worker has
   forgotten its cached keys (`ingest.KEY_TTL_MS`, with a margin), and the gateway signs
   with the new key from then on. After the grace period only the new key verifies.

The cloud's own command keys rotate with `push_cloud_keys`: a ``pin_keys`` command with the
whole set (old and new during the overlap, then the new one alone), signed with a key the
gateways pin now.
"""

from __future__ import annotations

import json
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.commands import Issuer
from cloud.errors import Conflict, InvalidInput
from cloud.ingest import KEY_TTL_MS
from cloud.key_proof import DEFAULT_GRACE_S
from cloud.models import Command, Device, DeviceKey
from cloud.registry import get_device
from protocols.messages import CommandName

log = logging.getLogger(__name__)

SWITCH_AFTER_MS = 2 * KEY_TTL_MS
"""Wait this long after registering the new key before telling the gateway to use it: every
ingest worker's key cache has expired by then."""


def start(
    session: Session, device_id: str, issuer: Issuer, *, now_ms: int, grace_s: int = DEFAULT_GRACE_S
) -> Command:
    """Ask `device_id` for a new key (`rotate_key`)."""
    device = get_device(session, device_id)
    if device.revoked:
        raise Conflict(f"device {device_id} is revoked", device_id=device_id)
    if not 60 <= grace_s <= 30 * 86_400:
        raise InvalidInput("grace_s must be 60 s to 30 days", field="grace_s")
    return issuer.issue(
        session,
        device_id,
        CommandName.ROTATE_KEY,
        {"grace_s": grace_s},
        now_ms=now_ms,
        reason="device key rotation",
        role="key-rotation",
    )


def follow_up(session: Session, now_ms: int, issuer: Issuer) -> list[str]:
    """Send ``use_key`` for each new key registered long enough ago; the devices told."""
    proved = session.scalars(
        select(Command).where(
            Command.name == CommandName.ROTATE_KEY.value,
            Command.state == "succeeded",
            Command.updated_ms <= now_ms - SWITCH_AFTER_MS,
        )
    ).all()
    told = []
    for row in proved:
        key = str((row.observed or {}).get("key", ""))
        if not _is_hex(key):
            continue
        registered = session.scalars(
            select(DeviceKey.id).where(
                DeviceKey.device_id == row.device_id,
                DeviceKey.public_key == bytes.fromhex(key),
            )
        ).first()
        if registered is None:
            continue
        sent = session.scalars(
            select(Command.id).where(
                Command.device_id == row.device_id,
                Command.name == CommandName.USE_KEY.value,
                Command.reason == f"use the key proved in {row.id}",
            )
        ).first()
        if sent is not None:
            continue
        issuer.issue(
            session,
            row.device_id,
            CommandName.USE_KEY,
            {"key": key},
            now_ms=now_ms,
            reason=f"use the key proved in {row.id}",
            role="key-rotation",
        )
        told.append(row.device_id)
    return told


def _is_hex(text: str) -> bool:
    try:
        return len(bytes.fromhex(text)) == 32
    except ValueError:
        return False


def push_cloud_keys(
    session: Session, keys: dict[str, str], issuer: Issuer, *, now_ms: int
) -> list[str]:
    """Send every gateway the set of cloud command keys to pin (``pin_keys``), signed with
    the key commands are signed with now (which the gateways pin)."""
    if not keys:
        raise InvalidInput("no <kid>.pem in the keys folder: nothing to pin")
    text = json.dumps(keys, sort_keys=True)
    devices = session.scalars(
        select(Device.id).where(Device.revoked.is_(False)).order_by(Device.id)
    ).all()
    for device_id in devices:
        issuer.issue(
            session,
            device_id,
            CommandName.PIN_KEYS,
            {"keys": text},
            now_ms=now_ms,
            reason=f"pin cloud keys {', '.join(sorted(keys))}",
            role="key-rotation",
        )
    log.info("cloud keys %s sent to %d gateway(s)", ", ".join(sorted(keys)), len(devices))
    return list(devices)
