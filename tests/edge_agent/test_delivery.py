"""End-to-end delivery on the gateway: the cloud's watermarks applied to a real outbox.

Before the first watermark the outbox deletes at PUBACK (a cloud that never sends one keeps
the old rule); from then on it keeps every message until a watermark covers it, and sends
again what the cloud lacks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.delivery import Confirmations
from edge_agent.outbox import Outbox
from edge_agent.store import Store
from protocols.cose import generate_private_key, seal
from protocols.messages import Quality, Reading, TelemetryBatch, Watermark

DEV = "boiler-0001"
KID = "cloud-test"
T0_MS = 1_800_000_000_000


class Gateway:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "outbox.db"
        self.now = T0_MS
        self.device_key = generate_private_key()
        self.cloud_key = generate_private_key()
        self.stores: list[Store] = []
        self.outbox = self.open()

    def open(self) -> Outbox:
        store = Store(self.path, wall_ms=lambda: self.now, device_id=DEV)
        self.stores.append(store)
        return Outbox.open(
            store,
            device_id=DEV,
            seal=lambda message: seal(message, self.device_key),
            max_bytes=1 << 20,
            wall_ms=lambda: self.now,
            clock_trusted=lambda: True,
        )

    def data(self, n: int) -> list[int]:
        return [
            self.outbox.append(
                TelemetryBatch(
                    dev=DEV,
                    epoch=0,
                    seq=0,
                    ts=self.now,
                    sync=True,
                    readings=(Reading("flow_temp", self.now, float(i), Quality.GOOD),),
                )
            ).seq
            for i in range(n)
        ]

    def publish_all(self) -> list[int]:
        """Everything pending goes out and is PUBACKed."""
        sent = [stored.seq for stored in self.outbox.pending(1000)]
        for seq in sent:
            self.outbox.acknowledge(seq)
        self.outbox.flush()
        return sent

    def stored(self) -> list[int]:
        rows = self.outbox._store.query("SELECT seq FROM outbox ORDER BY seq")
        return [int(row[0]) for row in rows]

    def pending(self) -> list[int]:
        return [stored.seq for stored in self.outbox.pending(1000)]

    def watermark(self, upto: int, missing: tuple[tuple[int, int], ...] = ()) -> bytes:
        mark = Watermark(dev=DEV, upto=upto, missing=missing, iat=self.now)
        return seal(mark, self.cloud_key, KID)

    def confirmations(self) -> Confirmations:
        return Confirmations(
            device_id=DEV,
            cloud_keys={KID: self.cloud_key.public_key()},
            outbox=self.outbox,
            resend_after_s=120.0,
        )


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(tmp_path)
    yield gw
    for store in gw.stores:
        store.close()


def test_before_any_watermark_a_puback_deletes(gateway: Gateway) -> None:
    gateway.data(3)
    gateway.publish_all()
    assert gateway.stored() == [] and not gateway.outbox.end_to_end


def test_after_the_first_watermark_messages_stay_until_covered(gateway: Gateway) -> None:
    first = gateway.data(3)
    gateway.publish_all()
    confirmations = gateway.confirmations()
    confirmations.handle(gateway.watermark(upto=0))  # the cloud announces itself
    assert gateway.outbox.end_to_end
    later = gateway.data(4)
    assert gateway.publish_all() == later
    assert gateway.stored() == later, "PUBACKed, kept until the cloud confirms"
    assert gateway.pending() == [], "and not sent again meanwhile"
    confirmations.handle(gateway.watermark(upto=later[1]))
    assert gateway.stored() == later[2:]
    assert confirmations.figures.confirmed == 2 and first[0] < later[0]


def test_missing_seqs_and_unconfirmed_old_ones_are_sent_again(gateway: Gateway) -> None:
    confirmations = gateway.confirmations()
    confirmations.handle(gateway.watermark(upto=0))
    seqs = gateway.data(6)
    gateway.publish_all()
    gateway.now += 10_000
    # the cloud has the first four but the second; nothing of the last two yet (recent)
    confirmations.handle(gateway.watermark(upto=seqs[3], missing=((seqs[1], seqs[1]),)))
    assert gateway.stored() == [seqs[1], seqs[4], seqs[5]]
    assert gateway.pending() == [seqs[1]], "missing: again now; the recent ones wait"
    gateway.publish_all()
    gateway.now += 200_000  # long after their PUBACK, still not in the cloud
    confirmations.handle(gateway.watermark(upto=seqs[3], missing=((seqs[1], seqs[1]),)))
    assert gateway.pending() == [seqs[1], seqs[4], seqs[5]]
    assert confirmations.figures.resent == 4


def test_end_to_end_survives_a_restart_and_nothing_confirmed_is_lost(gateway: Gateway) -> None:
    gateway.confirmations().handle(gateway.watermark(upto=0))
    seqs = gateway.data(3)
    gateway.publish_all()
    gateway.outbox._store.close()
    gateway.outbox = gateway.open()
    assert gateway.outbox.end_to_end
    assert gateway.pending() == seqs, "after a restart what is unconfirmed goes again"


def test_forged_or_misaddressed_watermarks_change_nothing(gateway: Gateway) -> None:
    confirmations = gateway.confirmations()
    confirmations.handle(gateway.watermark(upto=0))
    seqs = gateway.data(2)
    gateway.publish_all()
    forged = seal(Watermark(dev=DEV, upto=10**6, iat=gateway.now), generate_private_key(), KID)
    other = seal(Watermark(dev="boiler-0002", upto=10**6, iat=gateway.now), gateway.cloud_key, KID)
    for envelope in (forged, other, b"\x00garbage"):
        confirmations.handle(envelope)
    assert gateway.stored() == seqs
    assert confirmations.figures.rejected == 3
