"""The durable outbox: every uplink message is sealed, numbered and stored before it is sent.

Invariants (the delivery contract of ARCHITECTURE.md):

* `append` gives a message the next ``seq`` and this run's ``epoch``, seals it and commits it
  before returning; only committed messages are ever handed to the uplink, so a seq the cloud
  has seen is never reused, and a crash re-sends the same envelope with the same seq.
* ``seq`` is strictly increasing across restarts: the next seq is one more than the highest
  ever stored (the high-water mark is persisted whenever deletions could hide it).
* `acknowledge` (on PUBACK) removes a message at once from what is pending; the row itself
  is deleted with the next commit. A power cut before then re-sends it, and the cloud's
  de-duplication by seq absorbs that: flash writes are saved, nothing is lost.
* Above `max_bytes` the oldest telemetry is evicted first, then health, then events, acks and
  births, and gap events last of all; messages in flight are never evicted. A ``gap`` event
  naming the evicted seq ranges is stored with the message that caused the eviction, so the
  cloud can tell "dropped, accounted for" from "missing". The cap is soft by the size of that
  gap event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from enum import IntEnum

from edge_agent.errors import OutboxError
from edge_agent.store import Store
from protocols.errors import EncodeError
from protocols.messages import GapReason, UplinkMessage, Watermark, gap_event
from protocols.topics import TopicKind

log = logging.getLogger(__name__)

EVICT_TO = 0.9
"""Eviction frees space down to this fraction of the cap, so gaps come in few events."""


class Priority(IntEnum):
    """Eviction order: lowest first."""

    TELEMETRY = 0
    HEALTH = 1
    CRITICAL = 2
    """Births, events (alarms) and acks."""
    GAP = 3
    """Gap events: evicting one would turn "dropped, accounted for" into "missing"."""


def priority_of(kind: TopicKind) -> Priority:
    """How precious a message of this kind is."""
    if kind is TopicKind.DATA:
        return Priority.TELEMETRY
    if kind is TopicKind.HEALTH:
        return Priority.HEALTH
    return Priority.CRITICAL


@dataclass(frozen=True, slots=True)
class Stored:
    """A sealed message waiting for its PUBACK."""

    seq: int
    kind: TopicKind
    envelope: bytes


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What one watermark did: messages deleted as stored, and made pending again."""

    deleted: int
    resend: int


@dataclass(slots=True)
class OutboxFigures:
    """Counters reported in ``health``."""

    depth: int = 0
    bytes: int = 0
    appended: int = 0
    acknowledged: int = 0
    evicted: int = 0
    """Messages dropped to stay under the byte cap."""
    evictions: int = 0
    """Times the cap was hit (each one sent a gap event)."""


Sealer = Callable[[UplinkMessage], bytes]
"""Encodes and signs a fully stamped message."""


class Outbox:
    """Sealed uplink messages, oldest first, durable in the agent's `Store`."""

    def __init__(
        self,
        store: Store,
        *,
        device_id: str,
        seal: Sealer,
        max_bytes: int,
        wall_ms: Callable[[], int],
        clock_trusted: Callable[[], bool],
        epoch: int,
        next_seq: int,
        figures: OutboxFigures,
    ) -> None:
        """Use `Outbox.open`: it reads the store and starts a new epoch."""
        self._store = store
        self.device_id = device_id
        self._seal = seal
        self.max_bytes = max_bytes
        self._wall_ms = wall_ms
        self._clock_trusted = clock_trusted
        self.epoch = epoch
        self._next_seq = next_seq
        self.figures = figures
        self._acked: set[int] = set()
        self.end_to_end = bool(store.get_meta("end_to_end", 0))
        """Whether the cloud confirms what it stored (`confirm`): a published message is then
        kept until a watermark covers it, not deleted at its PUBACK. Switched on for good by
        the first watermark; a cloud that never sends one leaves the PUBACK rule."""
        self._published: dict[int, int] = {}
        """End to end: seq -> wall ms of its PUBACK, for messages awaiting the cloud's word."""
        self.in_flight: set[int] = set()
        """Seqs the uplink has published and awaits PUBACK for; never evicted."""
        self.changed = asyncio.Event()
        """Set when a message is stored or acknowledged; the uplink clears it before looking."""

    @classmethod
    def open(
        cls,
        store: Store,
        *,
        device_id: str,
        seal: Sealer,
        max_bytes: int,
        wall_ms: Callable[[], int],
        clock_trusted: Callable[[], bool],
    ) -> Outbox:
        """The outbox in `store`, as a new epoch: the epoch is bumped and committed, and the
        seq carries on after the highest ever stored (never reused, even if acknowledged)."""
        rows = store.query(
            "SELECT count(*), coalesce(sum(length(envelope)), 0), max(seq) FROM outbox"
        )
        count, size, top = rows[0]
        high = max(store.get_meta("high_seq", 0), int(top or 0))
        epoch = store.get_meta("epoch", 0) + 1
        store.set_meta("epoch", epoch)
        store.set_meta("high_seq", high)
        store.commit()
        log.info(
            "%s: outbox open, epoch %d, next seq %d, %d message(s) waiting",
            device_id,
            epoch,
            high + 1,
            count,
        )
        return cls(
            store,
            device_id=device_id,
            seal=seal,
            max_bytes=max_bytes,
            wall_ms=wall_ms,
            clock_trusted=clock_trusted,
            epoch=epoch,
            next_seq=high + 1,
            figures=OutboxFigures(depth=int(count), bytes=int(size)),
        )

    @property
    def next_seq(self) -> int:
        """The seq the next appended message will get."""
        return self._next_seq

    # -- writing -------------------------------------------------------------------------------

    def append(self, message: UplinkMessage) -> Stored:
        """Stamp `message` with epoch and the next seq, seal it, store it durably.

        The message's own ``seq``/``epoch``/``dev`` are replaced. Pending deletions are
        committed in the same transaction.
        """
        # on failure the database rolls back, and so must everything kept in memory
        saved = self._next_seq, dataclasses.replace(self.figures), set(self._acked)
        try:
            stored = self._insert(message)
            evicted = self._make_room(protect={stored.seq})
            if evicted:
                self._insert_gap(evicted)
            self._delete_acknowledged()
            self._store.commit()
        except OutboxError:
            self._store.rollback()
            self._next_seq, self.figures, self._acked = saved
            raise
        self.changed.set()
        return stored

    def _insert(self, message: UplinkMessage, priority: Priority | None = None) -> Stored:
        seq = self._next_seq
        stamped = dataclasses.replace(message, dev=self.device_id, epoch=self.epoch, seq=seq)
        try:
            envelope = self._seal(stamped)
        except EncodeError as exc:  # e.g. over the wire's payload limit
            raise OutboxError(f"cannot seal message: {exc}", device_id=self.device_id) from exc
        if len(envelope) > self.max_bytes // 2:
            raise OutboxError(
                f"a {len(envelope)}-byte message cannot fit a {self.max_bytes}-byte outbox",
                device_id=self.device_id,
            )
        kind = stamped.topic_kind
        self._store.execute(
            "INSERT INTO outbox(seq, kind, priority, envelope) VALUES (?, ?, ?, ?)",
            (
                seq,
                kind.value,
                int(priority if priority is not None else priority_of(kind)),
                envelope,
            ),
        )
        self._next_seq = seq + 1
        self.figures.depth += 1
        self.figures.bytes += len(envelope)
        self.figures.appended += 1
        return Stored(seq, kind, envelope)

    def _make_room(self, protect: Collection[int]) -> list[int]:
        """Evict the least precious, oldest messages until under the cap; their seqs."""
        if self.figures.bytes <= self.max_bytes:
            return []
        target = int(self.max_bytes * EVICT_TO)
        rows = self._store.query("SELECT seq, length(envelope) FROM outbox ORDER BY priority, seq")
        evicted: list[int] = []
        for seq, size in rows:
            if self.figures.bytes <= target:
                break
            assert isinstance(seq, int) and isinstance(size, int)
            if seq in protect or seq in self.in_flight or seq in self._acked:
                continue
            evicted.append(seq)
            self.figures.bytes -= size
            self.figures.depth -= 1
        if not evicted:
            return []  # everything left is in flight: over the cap until PUBACKs come
        self._store.execute(
            f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(evicted))})", tuple(evicted)
        )
        self.figures.evicted += len(evicted)
        self.figures.evictions += 1
        log.warning(
            "%s: outbox over its %d-byte cap: evicted %d message(s)",
            self.device_id,
            self.max_bytes,
            len(evicted),
        )
        return sorted(evicted)

    def _insert_gap(self, evicted: list[int]) -> None:
        try:
            event = gap_event(
                dev=self.device_id,
                epoch=self.epoch,
                seq=self._next_seq,
                ts=self._wall_ms(),
                sync=self._clock_trusted(),
                ranges=tuple(seq_ranges(evicted)),
                reason=GapReason.OUTBOX_FULL.value,
            )
        except EncodeError as exc:  # a bug: the ranges come from this outbox
            raise OutboxError(f"cannot build gap event: {exc}", device_id=self.device_id) from exc
        self._insert(event, Priority.GAP)

    def acknowledge(self, seq: int) -> None:
        """The broker has the message (PUBACK): it is no longer pending. End to end it stays
        stored, awaiting the cloud's watermark (`confirm`)."""
        self.in_flight.discard(seq)
        if self.end_to_end:
            if seq not in self._acked:
                self._published[seq] = self._wall_ms()
            return
        if seq in self._acked:
            return
        rows = self._store.query("SELECT length(envelope) FROM outbox WHERE seq = ?", (seq,))
        if not rows:
            return  # evicted while in flight, or already deleted
        self._acked.add(seq)
        self.figures.depth -= 1
        self.figures.bytes -= int(rows[0][0])
        self.figures.acknowledged += 1

    def confirm(self, watermark: Watermark, resend_after_ms: int) -> Confirmation:
        """Apply the cloud's watermark: delete every stored message it covers; make pending
        again what it lists as missing, and what it does not reach though its PUBACK came
        more than `resend_after_ms` ago (the broker may have dropped it). Committed at once."""
        if not self.end_to_end:
            self.end_to_end = True
            self._store.set_meta("end_to_end", 1)
            log.info(
                "%s: the cloud confirms storage: keeping messages until it does", self.device_id
            )
        rows = self._store.query(
            "SELECT seq, length(envelope) FROM outbox WHERE seq <= ? ORDER BY seq",
            (watermark.upto,),
        )
        covered = [
            (int(seq), int(size))
            for seq, size in rows
            if watermark.covers(int(seq)) and int(seq) not in self._acked
        ]
        for seq, size in covered:
            self._acked.add(seq)
            self._published.pop(seq, None)
            self.figures.depth -= 1
            self.figures.bytes -= size
        self.figures.acknowledged += len(covered)
        now = self._wall_ms()
        resend = [
            seq
            for seq, at in self._published.items()
            if not watermark.covers(seq) and (seq <= watermark.upto or now - at >= resend_after_ms)
        ]
        for seq in resend:
            del self._published[seq]
        self._delete_acknowledged()
        self._store.commit()
        if resend:
            log.warning(
                "%s: the cloud lacks %d published message(s): sending them again",
                self.device_id,
                len(resend),
            )
            self.changed.set()
        return Confirmation(len(covered), len(resend))

    def _delete_acknowledged(self) -> None:
        if not self._acked:
            return
        acked = tuple(self._acked)
        if self._next_seq - 1 in self._acked:
            # deleting the newest row would hide the high-water mark from the next start
            self._store.set_meta("high_seq", self._next_seq - 1)
        for start in range(0, len(acked), 500):
            chunk = acked[start : start + 500]
            self._store.execute(
                f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(chunk))})", chunk
            )
        self._acked.clear()

    def flush(self) -> None:
        """Commit pending deletions now (at shutdown, or when nothing else is committing)."""
        if self._acked:
            self._delete_acknowledged()
            self._store.commit()

    # -- reading -------------------------------------------------------------------------------

    def pending(self, limit: int) -> list[Stored]:
        """Up to `limit` stored messages, oldest first, that are neither acked nor in flight."""
        skip = self._acked | self.in_flight | self._published.keys()
        rows = self._store.query(
            "SELECT seq, kind, envelope FROM outbox ORDER BY seq LIMIT ?", (limit + len(skip),)
        )
        out: list[Stored] = []
        for seq, kind, envelope in rows:
            assert isinstance(seq, int) and isinstance(kind, str) and isinstance(envelope, bytes)
            if seq not in skip:
                out.append(Stored(seq, TopicKind(kind), envelope))
                if len(out) == limit:
                    break
        return out


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted seqs as inclusive ``(first, last)`` runs of consecutive numbers."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges
