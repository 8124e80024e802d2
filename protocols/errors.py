"""Errors raised by `protocols`.

Two families, as in h11:

* `LocalProtocolError` -- the caller misused the API (an invalid register map, a value that
  does not fit its type). It is a bug on our side of the wire.
* `RemoteProtocolError` -- bytes from a peer broke the protocol (malformed CBOR, a bad
  signature, a message for another device, a stale or replayed message). Such input is
  rejected with a machine-readable `reason`, counted, and the service carries on.
"""

from __future__ import annotations

from typing import ClassVar


class ProtocolError(Exception):
    """Base of every error raised by `protocols`; `reason` is machine-readable."""

    reason: ClassVar[str] = "protocol_error"

    def __init__(
        self,
        message: str,
        *,
        device_id: str | None = None,
        topic: str | None = None,
        seq: int | None = None,
        kid: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.device_id = device_id
        self.topic = topic
        self.seq = seq
        self.kid = kid

    def __str__(self) -> str:
        context = [
            f"{name}={value!r}"
            for name, value in (
                ("device_id", self.device_id),
                ("topic", self.topic),
                ("seq", self.seq),
                ("kid", self.kid),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(context)})" if context else self.message


class LocalProtocolError(ProtocolError, ValueError):
    """The caller asked for something the protocol cannot express."""

    reason = "local_error"


class RegisterMapError(LocalProtocolError):
    """A register map (built-in or user file) is inconsistent."""

    reason = "invalid_register_map"


class EncodeError(LocalProtocolError):
    """A value does not fit the point or field it is meant for."""

    reason = "encode_error"


class RemoteProtocolError(ProtocolError):
    """Bytes from a peer broke the protocol."""

    reason = "remote_error"


class MalformedMessage(RemoteProtocolError):
    """Not a well-formed envelope or payload (bad CBOR, missing or mistyped field)."""

    reason = "malformed"


class OversizedMessage(MalformedMessage):
    """Larger than the protocol allows; rejected before parsing."""

    reason = "oversized"


class UnknownKey(RemoteProtocolError):
    """Signed with a key id we have no public key for (unknown or revoked signer)."""

    reason = "unknown_key"


class BadSignature(RemoteProtocolError):
    """The COSE_Sign1 signature does not verify with the signer's registered key."""

    reason = "bad_signature"


class WrongDevice(RemoteProtocolError):
    """The message names a different device than its topic, key or recipient."""

    reason = "wrong_device"


class StaleMessage(RemoteProtocolError):
    """The message is too old (or its expiry has passed)."""

    reason = "stale"


class ReplayedMessage(RemoteProtocolError):
    """The message repeats a sequence number or command id already seen."""

    reason = "replay"


class ClockUntrusted(StaleMessage):
    """Freshness cannot be judged because the local clock is not trusted (not yet synced)."""

    reason = "clock_untrusted"
