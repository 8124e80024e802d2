"""Device registry: register, list, revoke, rotate keys (broker logins: `cloud.dynsec`)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud import thread
from cloud.dynsec import CLOUD_CLIENT_PREFIX
from cloud.errors import Conflict, InvalidInput, NotFound
from cloud.models import Device, DeviceKey
from cloud.mosquitto import ADMIN_USER, CLOUD_USER
from cloud.twin.rows import new_twin
from protocols.cose import public_key_from_pem, public_key_to_raw
from protocols.errors import ProtocolError
from protocols.topics import is_device_id

log = logging.getLogger(__name__)

RESERVED_IDS = frozenset({CLOUD_USER, ADMIN_USER})
"""Broker user names that must never be issued to a device."""
RESERVED_PREFIXES = (CLOUD_CLIENT_PREFIX, "bt-admin-")
"""Client-id prefixes of the cloud's processes and admin tools: a device bound to such an
id could take over their sessions."""


@dataclass(frozen=True, slots=True)
class Location:
    """WGS 84 latitude and longitude in degrees."""

    lat: float
    lon: float

    @classmethod
    def parse(cls, text: str) -> Location:
        """``"lat,lon"``; `InvalidInput` when it is not a place on Earth."""
        try:
            lat_text, lon_text = text.split(",")
            location = cls(float(lat_text), float(lon_text))
        except ValueError as exc:
            raise InvalidInput(
                f"location must be 'lat,lon', got {text!r}", field="location"
            ) from exc
        if not (-90 <= location.lat <= 90 and -180 <= location.lon <= 180):
            raise InvalidInput(f"location {text!r} is off the globe", field="location")
        return location


def fingerprint(raw: bytes) -> str:
    """Short, stable name of a public key (first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(raw).hexdigest()[:16]


def read_public_key(path: Path) -> Ed25519PublicKey:
    """A device's Ed25519 public key from a PEM file."""
    try:
        return public_key_from_pem(path.read_bytes())
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", field="public_key") from exc
    except ProtocolError as exc:
        raise InvalidInput(f"{path}: {exc}", field="public_key") from exc


def check_device_id(device_id: str) -> str:
    """`device_id` if it can be a topic level, a broker user and a COSE kid."""
    if not is_device_id(device_id):
        raise InvalidInput(
            f"device id {device_id!r} must match [a-z0-9][a-z0-9-]{{2,62}}", field="id"
        )
    if device_id in RESERVED_IDS or device_id.startswith(RESERVED_PREFIXES):
        raise InvalidInput(f"device id {device_id!r} is reserved", field="id")
    return device_id


def _install_date(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError as exc:
        raise InvalidInput(
            f"install date must be YYYY-MM-DD, got {text!r}", field="install_date"
        ) from exc


def add_device(
    session: Session,
    device_id: str,
    public_key: Ed25519PublicKey,
    *,
    now_ms: int,
    actor: str = "cli",
    model: str | None = None,
    serial: str | None = None,
    install_date: str | None = None,
    location: Location | None = None,
    address: str | None = None,
    known_new: bool = False,
) -> Device:
    """Register a device with its key (and an empty twin); `Conflict` if it exists (a bulk
    caller that checked all ids at once passes `known_new`)."""
    check_device_id(device_id)
    if not known_new and session.get(Device, device_id) is not None:
        raise Conflict(f"device {device_id} is already registered", device_id=device_id)
    raw = public_key_to_raw(public_key)
    device = Device(
        id=device_id,
        model=model,
        serial=serial,
        install_date=_install_date(install_date),
        lat=location.lat if location else None,
        lon=location.lon if location else None,
        address=address,
        revoked=False,
        created_ms=now_ms,
    )
    session.add(device)
    session.add(DeviceKey(device_id=device_id, public_key=raw, created_ms=now_ms))
    new_twin(session, device_id)
    thread.record(
        session,
        device_id=device_id,
        kind=thread.ThreadKind.DEVICE,
        ts_ms=now_ms,
        recorded_ms=now_ms,
        actor=actor,
        data={"change": "registered", "key": fingerprint(raw), "model": model, "serial": serial},
    )
    log.info("%s: registered (key %s)", device_id, fingerprint(raw))
    return device


def get_device(session: Session, device_id: str) -> Device:
    """A registered device; `NotFound` otherwise."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device {device_id}", device_id=device_id)
    return device


def revoke_device(session: Session, device_id: str, *, now_ms: int, actor: str = "cli") -> Device:
    """Refuse everything from `device_id` from now on (messages are rejected as revoked)."""
    device = get_device(session, device_id)
    if not device.revoked:
        device.revoked = True
        device.revoked_ms = now_ms
        thread.record(
            session,
            device_id=device_id,
            kind=thread.ThreadKind.DEVICE,
            ts_ms=now_ms,
            recorded_ms=now_ms,
            actor=actor,
            data={"change": "revoked"},
        )
        log.info("%s: revoked", device_id)
    return device


def rotate_key(
    session: Session,
    device_id: str,
    public_key: Ed25519PublicKey,
    *,
    now_ms: int,
    grace_s: float = 86_400.0,
    actor: str = "cli",
) -> DeviceKey:
    """Make `public_key` current; older keys stay valid for `grace_s` (queued messages)."""
    device = get_device(session, device_id)
    if device.revoked:
        raise Conflict(f"device {device_id} is revoked", device_id=device_id)
    raw = public_key_to_raw(public_key)
    keys = list(session.scalars(select(DeviceKey).where(DeviceKey.device_id == device_id)))
    if any(k.public_key == raw for k in keys):
        raise Conflict(f"{device_id} already has key {fingerprint(raw)}", device_id=device_id)
    until = now_ms + int(grace_s * 1000)
    for key in keys:
        if key.valid_until_ms is None or key.valid_until_ms > until:
            key.valid_until_ms = until
    new = DeviceKey(device_id=device_id, public_key=raw, created_ms=now_ms)
    session.add(new)
    thread.record(
        session,
        device_id=device_id,
        kind=thread.ThreadKind.DEVICE,
        ts_ms=now_ms,
        recorded_ms=now_ms,
        actor=actor,
        data={"change": "key_rotated", "key": fingerprint(raw), "old_keys_valid_until": until},
    )
    log.info("%s: key rotated to %s", device_id, fingerprint(raw))
    return new


def list_devices(session: Session) -> list[tuple[Device, list[DeviceKey]]]:
    """Every device with its keys, newest key first."""
    devices = list(session.scalars(select(Device).order_by(Device.id)))
    keys: dict[str, list[DeviceKey]] = {}
    for key in session.scalars(select(DeviceKey).order_by(DeviceKey.id.desc())):
        keys.setdefault(key.device_id, []).append(key)
    return [(d, keys.get(d.id, [])) for d in devices]
