"""Key rotation on the gateway: its own key (make and prove a new one, then switch to it),
and the cloud keys it pins (`KeyPinner`).

``rotate_key``: a new key is made next to the current one (``<key_file>.next``, 0600, kept
across restarts so a repeated command proves the same key) and acked with its proof of
possession (`protocols.key_rotation`). The agent keeps signing with the current key: the
cloud must know the new one first.

``use_key``: the cloud sends it once every ingest worker knows the new key. The current key
is kept as ``<key_file>.prev``, the new one renamed over ``key_file`` (atomic), and the agent
signs everything from then on with it (this command's own ``succeeded`` ack included). The
cloud accepts the old key for its grace period, so messages sealed before the switch and
still in the outbox are delivered.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.commands import Rejected
from edge_agent.keys import keygen, load_device_key
from protocols.cose import public_key_from_pem, public_key_to_raw
from protocols.errors import ProtocolError
from protocols.key_rotation import prove
from protocols.messages import Command, RejectReason, Scalar

log = logging.getLogger(__name__)

KID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
"""A cloud key id (the cloud's own rule, `cloud.keys.KID_RE`)."""


class KeyRotator:
    """The ``rotate_key`` and ``use_key`` handlers for one device key file."""

    def __init__(self, key_file: Path, use: Callable[[Ed25519PrivateKey], None]) -> None:
        self.key_file = key_file
        self.next_file = key_file.with_name(key_file.name + ".next")
        self.use_key = use

    async def rotate(self, command: Command) -> dict[str, Scalar]:
        if not self.next_file.exists():
            keygen(self.next_file)
        key = load_device_key(self.next_file)
        log.info("%s: new device key made; proving it", command.dev)
        return dict(prove(key, command.dev, command.id))

    async def use(self, command: Command) -> dict[str, Scalar]:
        wanted = command.args.get("key")
        current = load_device_key(self.key_file)
        if _hex(current) == wanted:
            return {"key": wanted}  # switched already (a repeated command)
        if not self.next_file.exists():
            raise Rejected(RejectReason.INVALID_ARGS, {"error": "no new key made"})
        new = load_device_key(self.next_file)
        if _hex(new) != wanted:
            raise Rejected(RejectReason.INVALID_ARGS, {"error": "not the key this gateway made"})
        shutil.copy2(self.key_file, self.key_file.with_name(self.key_file.name + ".prev"))
        os.replace(self.next_file, self.key_file)
        public = self.next_file.with_name(self.next_file.name + ".pub")
        if public.exists():
            os.replace(public, self.key_file.with_name(self.key_file.name + ".pub"))
        fd = os.open(self.key_file.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.use_key(new)
        log.warning("%s: now signing with the new device key %s", command.dev, _hex(new)[:16])
        return {"key": _hex(new)}


def _hex(key: Ed25519PrivateKey) -> str:
    return public_key_to_raw(key.public_key()).hex()


class KeyPinner:
    """The ``pin_keys`` handler: replace the pinned cloud keys, on disk and in memory.

    The command was verified with a key of the current set, so only the cloud can change it.
    The new set must hold at least one valid key; each file is written atomically, then the
    keys no longer in the set are removed, and the set the agent checks commands and
    watermarks with is replaced in place. A read-only keys folder (one set by hand under
    /etc) fails the command with the reason, and the current set stays."""

    def __init__(self, keys_dir: Path, pinned: dict[str, Ed25519PublicKey]) -> None:
        self.keys_dir = keys_dir
        self.pinned = pinned

    async def __call__(self, command: Command) -> dict[str, Scalar]:
        try:
            document = json.loads(str(command.args.get("keys")))
            if not isinstance(document, dict) or not document:
                raise ValueError("keys must be a non-empty map of kid -> PEM")
            keys = {}
            for kid, pem in document.items():
                if not KID_RE.fullmatch(str(kid)):
                    raise ValueError(f"key id {kid!r} is not a file name")
                keys[str(kid)] = (str(pem), public_key_from_pem(str(pem).encode()))
        except (ValueError, ProtocolError) as exc:
            raise Rejected(RejectReason.INVALID_ARGS, {"error": str(exc)[:200]}) from None
        try:
            for kid, (pem, _) in keys.items():
                tmp = self.keys_dir / f".{kid}.pem.tmp"
                tmp.write_text(pem)
                os.replace(tmp, self.keys_dir / f"{kid}.pem")
            for old in self.keys_dir.glob("*.pem"):
                if old.stem not in keys:
                    old.unlink()
        except OSError as exc:
            raise Rejected(RejectReason.INVALID_ARGS, {"error": f"cannot write: {exc}"}) from None
        self.pinned.clear()
        self.pinned.update({kid: key for kid, (_, key) in keys.items()})
        log.warning("%s: cloud keys pinned: %s", command.dev, ", ".join(sorted(keys)))
        return {"kids": ",".join(sorted(keys))}
