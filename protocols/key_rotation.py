"""Device key rotation: the proof that a gateway holds its new key.

After a ``rotate_key`` command the gateway acks ``succeeded`` (signed with its current key,
which vouches for the new one) with ``observed``: ``key``, the new raw Ed25519 public key in
hex, and ``pop``, the new key's signature (hex) over `pop_message`. The cloud registers the
key only if the proof verifies: nobody can slip in a key they do not hold.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.cose import public_key_from_raw, public_key_to_raw
from protocols.errors import BadSignature, MalformedMessage


def pop_message(device_id: str, command_id: str, raw_key: bytes) -> bytes:
    """What the new key signs: its purpose, the device, the command and the key itself."""
    return (
        b"bt-rotate-key\x00"
        + device_id.encode()
        + b"\x00"
        + command_id.encode()
        + b"\x00"
        + raw_key
    )


def prove(key: Ed25519PrivateKey, device_id: str, command_id: str) -> dict[str, str]:
    """The ``observed`` of a ``rotate_key`` ack for the new `key`."""
    raw = public_key_to_raw(key.public_key())
    signature = key.sign(pop_message(device_id, command_id, raw))
    return {"key": raw.hex(), "pop": signature.hex()}


def check(observed: object, device_id: str, command_id: str) -> bytes:
    """The new raw public key if `observed` proves possession of it."""
    if not isinstance(observed, dict):
        raise MalformedMessage("a key rotation ack needs key and pop")
    try:
        raw = bytes.fromhex(str(observed.get("key")))
        signature = bytes.fromhex(str(observed.get("pop")))
    except ValueError:
        raise MalformedMessage("key and pop must be hex") from None
    public = public_key_from_raw(raw)
    try:
        public.verify(signature, pop_message(device_id, command_id, raw))
    except InvalidSignature:
        raise BadSignature("the new key's proof of possession does not verify") from None
    return raw
