"""Cloud command-signing keys (files with key ids) and registered device keys (database)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cloud.errors import ConfigError
from cloud.models import Device, DeviceKey
from protocols.cose import (
    generate_private_key,
    private_key_from_pem,
    private_key_to_pem,
    public_key_from_raw,
    public_key_to_pem,
)
from protocols.errors import ProtocolError

KID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass(frozen=True, slots=True)
class CommandKey:
    """The private key commands are signed with, and its key id."""

    kid: str
    key: Ed25519PrivateKey

    @property
    def public_pem(self) -> bytes:
        """What gateways pin, as ``<kid>.pem``."""
        return public_key_to_pem(self.key.public_key())


def keygen(keys_dir: Path, kid: str) -> CommandKey:
    """Create ``<kid>.key`` (0600) and ``<kid>.pem`` in `keys_dir`; never overwrites."""
    if not KID_RE.fullmatch(kid):
        raise ConfigError("kid", f"must match {KID_RE.pattern}, got {kid!r}")
    keys_dir.mkdir(parents=True, exist_ok=True)
    private = keys_dir / f"{kid}.key"
    if private.exists():
        raise ConfigError("kid", f"{private} already exists: pick a new key id to rotate")
    key = CommandKey(kid, generate_private_key())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_key_to_pem(key.key))
    (keys_dir / f"{kid}.pem").write_bytes(key.public_pem)
    return key


def load_command_key(keys_dir: Path, kid: str | None = None) -> CommandKey:
    """The key `kid` from `keys_dir`, or the newest one there when `kid` is None."""
    if kid is None:
        candidates = sorted(keys_dir.glob("*.key"), key=lambda p: (p.stat().st_mtime, p.name))
        if not candidates:
            raise ConfigError("keys_dir", f"no command key in {keys_dir}: run cloud keygen")
        path = candidates[-1]
    else:
        path = keys_dir / f"{kid}.key"
    try:
        if path.stat().st_mode & 0o077:
            raise ConfigError(str(path), "private key is readable by others: chmod 600 it")
        key = private_key_from_pem(path.read_bytes())
    except FileNotFoundError as exc:
        raise ConfigError("command_kid", f"no key file {path}") from exc
    except ProtocolError as exc:
        raise ConfigError(str(path), f"not an Ed25519 private key: {exc}") from exc
    return CommandKey(path.stem, key)


def device_keys(session: Session, device_id: str, now_ms: int) -> list[Ed25519PublicKey]:
    """Keys a message from `device_id` may be signed with now; empty if unknown or revoked."""
    rows = session.execute(
        select(DeviceKey.public_key)
        .join(Device, Device.id == DeviceKey.device_id)
        .where(
            DeviceKey.device_id == device_id,
            Device.revoked.is_(False),
            or_(DeviceKey.valid_until_ms.is_(None), DeviceKey.valid_until_ms > now_ms),
        )
        .order_by(DeviceKey.id.desc())
    ).scalars()
    return [public_key_from_raw(raw) for raw in rows]
