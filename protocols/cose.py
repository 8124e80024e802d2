"""COSE_Sign1 envelopes with Ed25519 (*contract*), and sealing/opening of messages.

Envelope (RFC 9052 section 4.2), always tagged::

    18([protected: bstr .cbor {1: alg, 4: kid}, unprotected: {}, payload: bstr, signature: bstr])

* ``alg`` is ``-19`` (Ed25519, fully specified, RFC 9864) by default, or ``-8`` (EdDSA) on
  request for peers that predate RFC 9864. Both are accepted on verify; nothing else is.
* ``kid`` is the signer's key id as UTF-8 bytes: the device id for uplink messages, the
  cloud's key id for commands. We emit it protected; on verify it may be in either bucket,
  but not both, and ``alg`` must be protected. ``crit`` (label 2) is rejected, as no critical
  header is understood.
* The signature is Ed25519 over ``["Signature1", protected, h'', payload]`` (external AAD
  empty), encoded as CBOR.

Verification is strict: the envelope must be tagged 18 (an untagged COSE_Sign1 is rejected,
the contract says tag 18), be a single CBOR item with no trailing bytes, at most
`MAX_ENVELOPE_BYTES` long (checked before parsing), and carry an attached payload. Errors:
`OversizedMessage`/`MalformedMessage` for structure, `UnknownKey` for a kid with no key,
`BadSignature` when the signature does not verify.

`seal` / `open_uplink` / `open_command` combine this with `protocols.wire` and
`protocols.topics` and add the binding checks (kid, topic and ``dev`` name the same device;
commands are addressed to this device and not expired).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

import cbor2
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols import strict_cbor
from protocols.errors import (
    BadSignature,
    ClockUntrusted,
    LocalProtocolError,
    MalformedMessage,
    OversizedMessage,
    ProtocolError,
    StaleMessage,
    UnknownKey,
    WrongDevice,
)
from protocols.messages import Command, Message, UplinkMessage, Watermark
from protocols.topics import Direction, TopicKind, is_device_id, parse_topic
from protocols.wire import MAX_PAYLOAD_BYTES, decode_payload, encode_payload

COSE_SIGN1_TAG = 18
MAX_ENVELOPE_BYTES = MAX_PAYLOAD_BYTES + 1024
"""Largest envelope accepted: a maximal payload plus headers and signature."""
HEADER_ALG, HEADER_CRIT, HEADER_KID = 1, 2, 4
SIGNATURE_LENGTH = 64

KeyLookup: TypeAlias = Mapping[str, Ed25519PublicKey] | Callable[[str], Ed25519PublicKey | None]
"""Public keys by key id: a mapping, or a function returning None for an unknown kid."""


class Algorithm(IntEnum):
    """COSE algorithm ids accepted for Ed25519 signatures."""

    ED25519 = -19
    """Fully specified Ed25519 (RFC 9864); what we emit by default."""
    EDDSA = -8
    """Polymorphic EdDSA (RFC 9053); accepted, and emitted on request."""


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified envelope: who signed it, the signed payload and the algorithm id."""

    kid: str
    payload: bytes
    alg: Algorithm


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def sign(
    payload: bytes, key: Ed25519PrivateKey, kid: str, alg: Algorithm = Algorithm.ED25519
) -> bytes:
    """A tagged COSE_Sign1 envelope of `payload` signed by `key` under `kid`."""
    if not isinstance(kid, str) or not kid:
        raise LocalProtocolError(f"kid must be a non-empty string, got {kid!r}")
    if not isinstance(payload, bytes):
        raise LocalProtocolError(f"payload must be bytes, got {type(payload).__name__}")
    if not isinstance(key, Ed25519PrivateKey):
        raise LocalProtocolError(f"key must be an Ed25519PrivateKey, got {type(key).__name__}")
    if alg not in {a.value for a in Algorithm}:
        raise LocalProtocolError(f"unsupported alg {alg!r}: use -19 (Ed25519) or -8 (EdDSA)")
    headers = {HEADER_ALG: int(alg), HEADER_KID: kid.encode()}
    protected = cbor2.dumps(headers, canonical=True)
    signature = key.sign(_sig_structure(protected, payload))
    envelope = cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature])
    return cbor2.dumps(envelope, canonical=True)


def _lookup(keys: KeyLookup, kid: str) -> Ed25519PublicKey | None:
    return keys.get(kid) if isinstance(keys, Mapping) else keys(kid)


def _headers(protected: bytes, unprotected: object) -> tuple[Algorithm, str]:
    headers = strict_cbor.loads(protected, max_depth=4) if protected else {}
    if not isinstance(headers, dict) or not isinstance(unprotected, dict):
        raise MalformedMessage("COSE header buckets must be maps")
    if HEADER_CRIT in headers:
        raise MalformedMessage("critical COSE headers are not supported")
    alg = headers.get(HEADER_ALG)
    if type(alg) is not int or alg not in {a.value for a in Algorithm}:
        raise MalformedMessage(f"unsupported or missing protected COSE alg {alg!r}")
    if HEADER_ALG in unprotected or set(headers) & set(unprotected):
        raise MalformedMessage("COSE header label in both buckets, or alg unprotected")
    kid = headers.get(HEADER_KID, unprotected.get(HEADER_KID))
    if not isinstance(kid, bytes) or not kid:
        raise MalformedMessage("COSE kid missing or not a byte string")
    try:
        return Algorithm(alg), kid.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessage("COSE kid is not UTF-8") from None


def verify(envelope: bytes | bytearray | memoryview, keys: KeyLookup) -> Verified:
    """Check a COSE_Sign1 envelope against the signer's public key; see the module docs."""
    if isinstance(envelope, bytearray | memoryview):
        envelope = bytes(envelope)
    if not isinstance(envelope, bytes):
        raise MalformedMessage(f"envelope must be bytes, got {type(envelope).__name__}")
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise OversizedMessage(f"envelope is {len(envelope)} bytes, over {MAX_ENVELOPE_BYTES}")
    item = strict_cbor.loads(envelope, max_depth=4, tags=frozenset({COSE_SIGN1_TAG}))
    if not isinstance(item, strict_cbor.Tagged):
        raise MalformedMessage("not a tagged COSE_Sign1 (tag 18)")
    body = item.value
    if not isinstance(body, list) or len(body) != 4:
        raise MalformedMessage("COSE_Sign1 must be a 4-element array")
    protected, unprotected, payload, signature = body
    if not isinstance(protected, bytes) or not isinstance(signature, bytes):
        raise MalformedMessage("COSE protected header and signature must be byte strings")
    if not isinstance(payload, bytes):
        raise MalformedMessage("COSE payload must be attached as a byte string")
    alg, kid = _headers(protected, unprotected)
    public_key = _lookup(keys, kid)
    if public_key is None:
        raise UnknownKey(f"no public key for kid {kid!r}", kid=kid)
    if len(signature) != SIGNATURE_LENGTH:
        raise BadSignature(f"Ed25519 signature must be 64 bytes, got {len(signature)}", kid=kid)
    try:
        public_key.verify(signature, _sig_structure(protected, payload))
    except InvalidSignature:
        raise BadSignature("signature does not verify", kid=kid) from None
    return Verified(kid, payload, alg)


# -- keys -------------------------------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    """A new random Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def private_key_to_raw(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte Ed25519 seed of `key`."""
    return key.private_bytes_raw()


def private_key_from_raw(raw: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from its 32-byte seed."""
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise LocalProtocolError("an Ed25519 private key is 32 raw bytes")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_to_raw(key: Ed25519PublicKey) -> bytes:
    """The 32-byte encoding of an Ed25519 public key."""
    return key.public_bytes_raw()


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from its 32-byte encoding."""
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise LocalProtocolError("an Ed25519 public key is 32 raw bytes")
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise LocalProtocolError(f"invalid Ed25519 public key: {exc}") from exc


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM of `key`."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_from_pem(pem: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from unencrypted PKCS#8 (or OpenSSH-compatible) PEM."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise LocalProtocolError(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise LocalProtocolError(f"PEM holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_key_to_pem(key: Ed25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of `key`."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_from_pem(pem: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from SubjectPublicKeyInfo PEM."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise LocalProtocolError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise LocalProtocolError(f"PEM holds a {type(key).__name__}, not an Ed25519 key")
    return key


# -- messages ---------------------------------------------------------------------------------


def seal(
    message: Message,
    key: Ed25519PrivateKey,
    kid: str | None = None,
    alg: Algorithm = Algorithm.ED25519,
) -> bytes:
    """Encode and sign `message`; `kid` defaults to the device id for uplink messages.

    A command or a watermark needs `kid` (the cloud key id).
    """
    if kid is None:
        if isinstance(message, Command | Watermark):
            raise LocalProtocolError(
                f"a {message.topic_kind} message is signed under the cloud key id: pass kid"
            )
        kid = message.dev
    return sign(encode_payload(message), key, kid, alg)


def _context(exc: ProtocolError, **context: object) -> None:
    """Fill in context attributes an error does not carry yet."""
    for name, value in context.items():
        if getattr(exc, name) is None:
            setattr(exc, name, value)


def open_uplink(envelope: bytes, topic: str, keys: KeyLookup) -> UplinkMessage:
    """Verify and decode an envelope received on an uplink `topic`.

    The signer (kid), the topic's device and the payload's ``dev`` must be the same device
    (`WrongDevice` otherwise) and the payload's kind must match the topic's.
    """
    device_id, kind = parse_topic(topic)
    if kind.direction is not Direction.UP or not kind.signed:
        raise MalformedMessage(f"{kind} is not a signed uplink topic", topic=topic)
    try:
        verified = verify(envelope, keys)
        if verified.kid != device_id:
            raise WrongDevice(
                f"signed by {verified.kid!r}, published for {device_id!r}", kid=verified.kid
            )
        message = decode_payload(verified.payload, expected_kind=kind)
        if isinstance(message, Command | Watermark):  # unreachable: kind is an uplink kind
            raise MalformedMessage("a command on an uplink topic")
        if message.dev != device_id:
            raise WrongDevice(
                f"payload names {message.dev!r}, topic {device_id!r}",
                kid=verified.kid,
                seq=message.seq,
            )
    except ProtocolError as exc:
        _context(exc, topic=topic, device_id=device_id)
        raise
    return message


def open_command(
    envelope: bytes,
    device_id: str,
    cloud_keys: KeyLookup,
    now_ms: int,
    clock_trusted: bool,
) -> Command:
    """Verify and decode a command for `device_id` against the pinned cloud keys.

    Raises `WrongDevice` if it is addressed to another device, `ClockUntrusted` if the local
    clock cannot judge expiry, `StaleMessage` if ``exp <= now_ms``. Duplicate ids are the
    caller's ledger's business (`ReplayedMessage`).
    """
    if not is_device_id(device_id):
        raise LocalProtocolError(f"invalid device id {device_id!r}")
    try:
        verified = verify(envelope, cloud_keys)
        command = decode_payload(verified.payload, expected_kind=TopicKind.CMD)
        if not isinstance(command, Command):  # unreachable: expected_kind is cmd
            raise MalformedMessage("not a command payload")
        if command.dev != device_id:
            raise WrongDevice(f"command {command.id} is for {command.dev!r}", kid=verified.kid)
        if not clock_trusted:
            raise ClockUntrusted(
                f"clock is untrusted: cannot check expiry of command {command.id}",
                kid=verified.kid,
            )
        if command.exp <= now_ms:
            raise StaleMessage(
                f"command {command.id} expired at {command.exp}, now {now_ms}", kid=verified.kid
            )
    except ProtocolError as exc:
        _context(exc, device_id=device_id)
        raise
    return command


def open_watermark(envelope: bytes, device_id: str, cloud_keys: KeyLookup) -> Watermark:
    """Verify and decode the cloud's watermark for `device_id` against the pinned cloud keys.

    Raises `WrongDevice` if it names another device. No expiry: an old watermark confirms only
    what was stored when it was issued, so replaying one cannot make a device drop anything
    the cloud does not have.
    """
    if not is_device_id(device_id):
        raise LocalProtocolError(f"invalid device id {device_id!r}")
    try:
        verified = verify(envelope, cloud_keys)
        watermark = decode_payload(verified.payload, expected_kind=TopicKind.STORED)
        if not isinstance(watermark, Watermark):  # unreachable: expected_kind is stored
            raise MalformedMessage("not a watermark payload")
        if watermark.dev != device_id:
            raise WrongDevice(f"watermark is for {watermark.dev!r}", kid=verified.kid)
    except ProtocolError as exc:
        _context(exc, device_id=device_id)
        raise
    return watermark
