"""MQTT topic names (*contract*): ``bt/v1/{device_id}/{kind}``.

Invariants:

* A topic has exactly four levels: ``bt``, ``v1``, a device id and a `TopicKind`.
* A device id fully matches ``[a-z0-9][a-z0-9-]{2,62}`` (so it never holds ``/``, ``+``, ``#``
  or upper case, and is 3-63 characters long).
* Every kind uses QoS 1; only ``state`` is retained; only ``cmd`` flows down (cloud to device).
* ``state`` carries the bare bytes `STATE_ONLINE` / `STATE_OFFLINE` (the last will); every other
  kind carries a signed COSE_Sign1 envelope (see `protocols.cose`).

`parse_topic` is for topics received from the broker and raises `MalformedMessage`; `topic`,
`subscription` and `shared_subscription` build names and raise `LocalProtocolError` on misuse.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TypeGuard

from protocols.errors import LocalProtocolError, MalformedMessage

PREFIX = "bt/v1"
"""First two levels of every topic."""

DEVICE_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{2,62}")
"""A device id must match this in full (`re.fullmatch`)."""

STATE_ONLINE = b"online"
"""Retained payload of ``state`` published on connect."""

STATE_OFFLINE = b"offline"
"""Retained payload of ``state`` registered as the MQTT last will."""

QOS = 1
"""QoS of every topic."""

SINGLE_LEVEL_WILDCARD = "+"


class Direction(StrEnum):
    """Which way a topic flows."""

    UP = "up"
    """Device to cloud."""
    DOWN = "down"
    """Cloud to device."""


class TopicKind(StrEnum):
    """The last topic level; says what the payload is."""

    BIRTH = "birth"
    DATA = "data"
    EVENT = "event"
    HEALTH = "health"
    ACK = "ack"
    STATE = "state"
    CMD = "cmd"
    STORED = "stored"
    """Downlink: which of the device's seqs the cloud has durably stored (`Watermark`)."""

    @property
    def direction(self) -> Direction:
        """`Direction.DOWN` for ``cmd`` and ``stored``, `Direction.UP` for everything else."""
        return Direction.DOWN if self in (TopicKind.CMD, TopicKind.STORED) else Direction.UP

    @property
    def qos(self) -> int:
        """MQTT QoS to publish and subscribe with (1 for every kind)."""
        return QOS

    @property
    def retained(self) -> bool:
        """Whether publications are retained (only ``state``)."""
        return self is TopicKind.STATE

    @property
    def signed(self) -> bool:
        """Whether the payload is a COSE_Sign1 envelope (every kind but ``state``)."""
        return self is not TopicKind.STATE


def is_device_id(device_id: object) -> TypeGuard[str]:
    """Whether `device_id` is a valid device id."""
    return isinstance(device_id, str) and DEVICE_ID_RE.fullmatch(device_id) is not None


def validate_device_id(device_id: object) -> str:
    """Return `device_id` unchanged if valid, else raise `MalformedMessage`."""
    if is_device_id(device_id):
        return device_id
    raise MalformedMessage(
        f"invalid device id {device_id!r}: must be 3-63 characters of a-z, 0-9 and '-', "
        "not starting with '-'"
    )


def _kind(kind: object) -> TopicKind:
    if isinstance(kind, str):
        try:
            return TopicKind(kind)
        except ValueError:
            pass
    raise LocalProtocolError(f"unknown topic kind {kind!r}")


def _local_device_id(device_id: object) -> str:
    if is_device_id(device_id):
        return device_id
    raise LocalProtocolError(f"invalid device id {device_id!r}")


def topic(device_id: str, kind: TopicKind) -> str:
    """The topic a device's `kind` messages are published on."""
    return f"{PREFIX}/{_local_device_id(device_id)}/{_kind(kind)}"


def parse_topic(topic: object) -> tuple[str, TopicKind]:
    """Split a received topic into ``(device_id, kind)``; raise `MalformedMessage` if it is not one.

    Only exact topics parse: wildcards, extra or missing levels, a wrong prefix or version, an
    invalid device id and unknown kinds are all rejected.
    """
    if not isinstance(topic, str):
        raise MalformedMessage(f"topic must be a string, got {type(topic).__name__}")
    levels = topic.split("/")
    if len(levels) != 4 or f"{levels[0]}/{levels[1]}" != PREFIX:
        raise MalformedMessage(f"not a {PREFIX}/<device>/<kind> topic", topic=topic)
    device_id, kind = levels[2], levels[3]
    if not is_device_id(device_id):
        raise MalformedMessage(f"invalid device id {device_id!r} in topic", topic=topic)
    try:
        return device_id, TopicKind(kind)
    except ValueError:
        raise MalformedMessage(
            f"unknown topic kind {kind!r}", topic=topic, device_id=device_id
        ) from None


def subscription(kind: TopicKind, device_id: str = SINGLE_LEVEL_WILDCARD) -> str:
    """Topic filter for one kind from one device, or from every device (``+``)."""
    if device_id != SINGLE_LEVEL_WILDCARD:
        _local_device_id(device_id)
    return f"{PREFIX}/{device_id}/{_kind(kind)}"


def shared_subscription(kind: TopicKind, group: str = "ingest") -> str:
    """MQTT 5 shared-subscription filter over every device, e.g. ``$share/ingest/bt/v1/+/data``.

    Each message goes to one subscriber of `group`, so N stateless workers split the fleet.
    """
    if not group or any(c in group for c in "/+#") or group.startswith("$"):
        raise LocalProtocolError(f"invalid shared-subscription group {group!r}")
    return f"$share/{group}/{subscription(kind)}"
