"""The device's signing key and the pinned cloud keys, on disk.

The private key is a PKCS#8 PEM file readable by the agent's user only (mode 0600): `keygen`
creates it that way and `load_device_key` refuses one that others can read. It is never
logged or sent; only the public key leaves the gateway, to be registered with the cloud.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.errors import ConfigError
from protocols.cose import (
    generate_private_key,
    private_key_from_pem,
    private_key_to_pem,
    public_key_from_pem,
    public_key_to_pem,
)
from protocols.errors import ProtocolError

PUBLIC_SUFFIX = ".pub"


def public_key_path(key_file: Path) -> Path:
    """Where `keygen` puts the public half: ``device.key`` -> ``device.key.pub``."""
    return key_file.with_name(key_file.name + PUBLIC_SUFFIX)


def keygen(key_file: Path, *, force: bool = False) -> Path:
    """Create a new Ed25519 key pair; returns the public key's path.

    Refuses to replace an existing key unless `force` (a new key means re-registering the
    device with the cloud).
    """
    if key_file.exists() and not force:
        raise ConfigError(str(key_file), "already exists (pass --force to replace it)")
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = generate_private_key()
    tmp = key_file.with_name(key_file.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_key_to_pem(key))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, key_file)
    public = public_key_path(key_file)
    public.write_bytes(public_key_to_pem(key.public_key()))
    return public


def load_device_key(key_file: Path) -> Ed25519PrivateKey:
    """The device's private key; `ConfigError` if missing, unreadable, not private or bad."""
    key = "device.key_file"
    try:
        mode = key_file.stat().st_mode
        pem = key_file.read_bytes()
    except OSError as exc:
        raise ConfigError(
            key,
            f"cannot read {key_file}: {exc.strerror or exc} (make one with "
            "`boilertwin edge keygen`)",
        ) from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            key, f"{key_file} is readable by others (mode {mode & 0o777:o}): chmod 600"
        )
    try:
        return private_key_from_pem(pem)
    except (ProtocolError, ValueError) as exc:
        raise ConfigError(key, f"{key_file} is not an Ed25519 private key: {exc}") from exc


def load_cloud_keys(keys_dir: Path) -> dict[str, Ed25519PublicKey]:
    """Pinned cloud command keys: every ``<kid>.pem`` in `keys_dir`, keyed by kid."""
    key = "commands.cloud_keys_dir"
    if not keys_dir.is_dir():
        raise ConfigError(key, f"{keys_dir} is not a directory")
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted(keys_dir.glob("*.pem")):
        kid = path.stem
        if not kid:
            continue
        try:
            keys[kid] = public_key_from_pem(path.read_bytes())
        except (OSError, ProtocolError, ValueError) as exc:
            raise ConfigError(key, f"{path} is not an Ed25519 public key: {exc}") from exc
    return keys


def read_secret(path: Path | None, key: str) -> str | None:
    """A one-line secret (the broker password) from a file; never logged."""
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from exc
