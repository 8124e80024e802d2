"""What cloud tests share: a settable clock, registered devices with keys, signed messages."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import transaction
from cloud.models import Device, DeviceKey
from protocols.cose import generate_private_key, public_key_to_raw, seal
from protocols.messages import (
    Birth,
    Event,
    EventKind,
    Health,
    Reading,
    Scalar,
    TelemetryBatch,
    UplinkMessage,
    gap_event,
)
from protocols.topics import TopicKind, topic

T0 = 1_790_000_000_000
"""A fixed wall-clock start (ms) for tests on a `FakeClock`."""


@dataclasses.dataclass
class TestDevice:
    """A registered device: its id and private key, and a seq counter for building messages."""

    __test__ = False  # not a pytest test class

    id: str
    key: Ed25519PrivateKey
    epoch: int = 1
    seq: int = 0
    ts: int = T0

    def next(self, seq: int | None = None) -> dict[str, Any]:
        """Header fields of the next message (or of `seq`)."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        return {"dev": self.id, "epoch": self.epoch, "seq": seq, "ts": self.ts + seq, "sync": True}

    def seal(self, message: UplinkMessage, key: Ed25519PrivateKey | None = None) -> bytes:
        """`message` signed by this device (or by `key`, a forgery)."""
        return seal(message, key or self.key, kid=self.id)

    def data(
        self, readings: Sequence[tuple[str, int, Scalar]] = (), seq: int | None = None
    ) -> TelemetryBatch:
        """A telemetry batch of (point, ts, value) readings."""
        return TelemetryBatch(
            **self.next(seq), readings=tuple(Reading(p, ts, v) for p, ts, v in readings)
        )

    def event(
        self, kind: EventKind, detail: dict[str, Any] | None = None, seq: int | None = None
    ) -> Event:
        """An event with `detail`."""
        return Event(**self.next(seq), kind=kind, detail=detail or {})

    def gap(self, ranges: tuple[tuple[int, int], ...], seq: int | None = None) -> Event:
        """A ``gap`` event accounting for `ranges`."""
        return gap_event(**self.next(seq), ranges=ranges, reason="outbox_full")

    def birth(self, seq: int | None = None) -> Birth:
        """A birth message."""
        return Birth(
            **self.next(seq),
            agent_version="1.2.3",
            map_id="reference-v1",
            map_hash="abc123",
            capabilities=("restart",),
        )

    def health(self, seq: int | None = None) -> Health:
        """A health message."""
        return Health(**self.next(seq), modem={"csq": 17}, agent={"outbox_depth": 0})


def register(
    sessions: sessionmaker[Session],
    device_id: str,
    *,
    key: Ed25519PrivateKey | None = None,
    now_ms: int = T0,
    revoked: bool = False,
) -> TestDevice:
    """Insert a Device and its current DeviceKey (no twin: ingest creates it)."""
    key = key or generate_private_key()
    with transaction(sessions) as session:
        session.add(
            Device(
                id=device_id,
                revoked=revoked,
                revoked_ms=now_ms if revoked else None,
                created_ms=now_ms,
            )
        )
        session.flush()
        session.add(
            DeviceKey(
                device_id=device_id,
                public_key=public_key_to_raw(key.public_key()),
                created_ms=now_ms,
            )
        )
    return TestDevice(device_id, key)


def add_key(
    sessions: sessionmaker[Session], device: TestDevice, *, now_ms: int, old_valid_until_ms: int
) -> Ed25519PrivateKey:
    """Rotate: a new current key; the old ones stay valid until `old_valid_until_ms`."""
    new = generate_private_key()
    with transaction(sessions) as session:
        for row in session.query(DeviceKey).filter_by(device_id=device.id):
            row.valid_until_ms = old_valid_until_ms
        session.add(
            DeviceKey(
                device_id=device.id,
                public_key=public_key_to_raw(new.public_key()),
                created_ms=now_ms,
            )
        )
    return new


def revoke(sessions: sessionmaker[Session], device_id: str, now_ms: int = T0) -> None:
    """Mark a device revoked."""
    with transaction(sessions) as session:
        device = session.get(Device, device_id)
        assert device is not None
        device.revoked, device.revoked_ms = True, now_ms


def topic_of(message: UplinkMessage, device_id: str | None = None) -> str:
    """The topic `message` is published on (by its own device unless `device_id`)."""
    return topic(device_id or message.dev, message.topic_kind)


def state_topic(device_id: str) -> str:
    """A device's retained ``state`` topic."""
    return topic(device_id, TopicKind.STATE)
