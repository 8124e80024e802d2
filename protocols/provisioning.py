"""The claim request a new gateway sends to join the fleet (``POST /api/v1/provisioning/claims``).

A gateway with no identity holds a claim token (printed on the boiler or issued to an
installer for a batch) and a key it has just made. It sends a COSE_Sign1 (the same envelope
as every uplink: Ed25519, ``kid`` = the device id it asks for) whose CBOR payload is a map:

=============  =========  =====================================================================
key            type       meaning
=============  =========  =====================================================================
``claim``      text       the claim token, as printed (``btc_...``)
``dev``        text       the device id asked for (equals the ``kid``)
``key``        bytes(32)  the raw Ed25519 public key that signed the envelope
``serial``     text       the boiler's serial number, read from its Modbus identity registers
``model``      text       the boiler's model name, read from the same registers
``agent``      text       the agent's version
``iat``        uint       when the request was made (ms since the Unix epoch)
``nonce``      text       random, so two requests are never byte-identical
``location``   text       optional: ``"lat,lon"`` given by the installer
``address``    text       optional: the installation address given by the installer
=============  =========  =====================================================================

The envelope is verified with the key it carries: that proves the sender holds the private
key the cloud will register (proof of possession). Whether the token is any good is the
cloud's question (`cloud.provisioning`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import strict_cbor
from protocols.cose import public_key_from_raw, public_key_to_raw, sign, verify
from protocols.errors import MalformedMessage
from protocols.topics import is_device_id

TOKEN_PREFIX = "btc_"
TOKEN_RE = re.compile(r"btc_[A-Za-z0-9_-]{20,64}")
"""What a claim token looks like (checked before any database lookup)."""
CONTENT_TYPE = "application/cose"
MAX_TEXT = 200
MAX_REQUEST_BYTES = 4096


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What a gateway asks the cloud to register (see the module docs)."""

    claim: str
    dev: str
    key: bytes
    serial: str
    model: str
    agent: str
    iat: int
    nonce: str
    location: str | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.claim, str) or not TOKEN_RE.fullmatch(self.claim):
            raise MalformedMessage("claim: not a claim token (btc_ and 20-64 URL-safe characters)")
        if not isinstance(self.dev, str) or not is_device_id(self.dev):
            raise MalformedMessage(f"dev: must match [a-z0-9][a-z0-9-]{{2,62}}, got {self.dev!r}")
        if not isinstance(self.key, bytes) or len(self.key) != 32:
            raise MalformedMessage("key: must be a raw 32-byte Ed25519 public key")
        for name in ("serial", "model", "agent", "nonce"):
            _text(getattr(self, name), name)
        for name in ("location", "address"):
            value = getattr(self, name)
            if value is not None:
                _text(value, name)
        if type(self.iat) is not int or not 0 <= self.iat < 2**63:
            raise MalformedMessage(f"iat: must be ms since the epoch, got {self.iat!r}")

    def to_cbor(self) -> bytes:
        """The payload map (optional fields left out when unset)."""
        body: dict[str, object] = {
            "claim": self.claim,
            "dev": self.dev,
            "key": self.key,
            "serial": self.serial,
            "model": self.model,
            "agent": self.agent,
            "iat": self.iat,
            "nonce": self.nonce,
        }
        if self.location is not None:
            body["location"] = self.location
        if self.address is not None:
            body["address"] = self.address
        return cbor2.dumps(body, canonical=True)


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise MalformedMessage(f"{name}: must be text of 1 to {MAX_TEXT} characters")
    if "\x00" in value:
        raise MalformedMessage(f"{name}: must not contain NUL")
    return value


def make_request(
    key: Ed25519PrivateKey,
    *,
    claim: str,
    dev: str,
    serial: str,
    model: str,
    agent: str,
    iat: int,
    nonce: str,
    location: str | None = None,
    address: str | None = None,
) -> bytes:
    """The signed claim request of the gateway holding `key`."""
    request = ClaimRequest(
        claim=claim,
        dev=dev,
        key=public_key_to_raw(key.public_key()),
        serial=serial,
        model=model,
        agent=agent,
        iat=iat,
        nonce=nonce,
        location=location,
        address=address,
    )
    return sign(request.to_cbor(), key, kid=dev)


FIELDS = frozenset(ClaimRequest.__dataclass_fields__)


def open_request(envelope: bytes) -> ClaimRequest:
    """Parse and verify a claim request with the key it carries; `ProtocolError` (malformed,
    bad signature) otherwise."""
    if not isinstance(envelope, bytes) or len(envelope) > MAX_REQUEST_BYTES:
        raise MalformedMessage(f"a claim request is at most {MAX_REQUEST_BYTES} bytes of COSE")
    # The payload names the key; read it first (unverified), then verify with that key, and
    # only under the device id the payload asks for.
    payload = _unverified_payload(envelope)
    request = _request(payload)
    verify(envelope, {request.dev: public_key_from_raw(request.key)})
    return request


def _unverified_payload(envelope: bytes) -> bytes:
    item = strict_cbor.loads(envelope, max_depth=4, tags=frozenset({18}))
    body = item.value if isinstance(item, strict_cbor.Tagged) else None
    if not isinstance(body, list) or len(body) != 4 or not isinstance(body[2], bytes):
        raise MalformedMessage("not a COSE_Sign1 with an attached payload")
    return body[2]


def _request(payload: bytes) -> ClaimRequest:
    body = strict_cbor.loads(payload, max_depth=2)
    if not isinstance(body, dict) or not all(isinstance(k, str) for k in body):
        raise MalformedMessage("the claim payload must be a map with text keys")
    fields: dict[str, Any] = {str(k): v for k, v in body.items()}
    unknown = set(fields) - FIELDS
    if unknown:
        raise MalformedMessage(f"unknown claim field(s): {', '.join(sorted(unknown))}")
    missing = {f for f in FIELDS if f not in ("location", "address")} - set(fields)
    if missing:
        raise MalformedMessage(f"claim field(s) missing: {', '.join(sorted(missing))}")
    return ClaimRequest(**fields)  # each field is type-checked on construction
