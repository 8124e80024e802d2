"""Ingest, the application layer: one MQTT message in, one `Outcome` out, no MQTT here.

Ingest verifies, de-duplicates, retries and counts; what a message changes is the twin's
business (`cloud.twin.update.apply_uplink`, called once per first-seen message). Invariants:

* Exactly once: a verified message is applied in the same transaction that inserts its
  ``uplinks`` row ``(device_id, seq)``. Whichever worker inserts it first applies it; every
  other copy hits the primary key and is a ``duplicate`` that changes nothing in the database.
  Duplicates are counted in memory and added to ``Twin.duplicates`` (and the counters table)
  by `Ingest.flush_counters`, so a replay flood costs no write per message.
* Per-device effects are serialised by the twin's row lock (`cloud.twin.rows.locked_twin`),
  taken right after the ``uplinks`` insert, so N workers in N processes never lose a counter.
* Bad input never raises: it is ``rejected`` with a machine-readable reason, counted, and the
  twin is untouched. A flood of it is logged once per device and reason per flush period.
  `IngestUnavailable` (the database is unreachable after retries) is the one exception: the
  message was not processed and must be delivered again.
* Device keys are cached for `key_ttl_ms` (default 5 s), including "unknown" and "revoked"
  answers, so forged messages do not cost a query each; a revocation takes effect within the
  TTL. A key's ``valid_until_ms`` (the end of a rotation's grace period) is checked against
  the clock on every message, not only when the cache is filled.

Seq accounting (``Twin.max_seq``, ``contiguous_seq``, gaps) is described in `cloud.twin.gaps`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, Protocol, TypeAlias, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import or_, select
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cloud import quarantine
from cloud.domain import Clock
from cloud.errors import CloudError
from cloud.limits import MAX_INT, storable
from cloud.metrics import INGEST_LAG, INGEST_LATENCY, INGEST_MESSAGES, INGEST_RETIMED
from cloud.models import (
    Device,
    DeviceKey,
    IngestCounter,
)
from cloud.quarantine import Stage
from cloud.settings import CloudSettings
from cloud.twin import update
from cloud.twin.batch import Stored, store_batch
from cloud.twin.rows import dialect_insert, locked_twin
from protocols.cose import MAX_ENVELOPE_BYTES, open_uplink, public_key_from_raw
from protocols.errors import (
    BadSignature,
    MalformedMessage,
    OversizedMessage,
    ProtocolError,
    UnknownKey,
    WrongDevice,
)
from protocols.messages import (
    Event,
    EventKind,
    TelemetryBatch,
    UplinkMessage,
    parse_gap,
)
from protocols.topics import STATE_OFFLINE, STATE_ONLINE, Direction, TopicKind, parse_topic

log = logging.getLogger(__name__)

OutcomeKind: TypeAlias = Literal["accepted", "duplicate", "rejected", "ignored"]

KEY_TTL_MS = 5_000
"""How long device keys (and unknown/revoked answers) are cached."""
KEY_CACHE_MAX = 100_000
"""Entries kept before the cache is emptied (a flood of distinct topics must not grow it)."""
RETRIES = 5
"""Attempts per transaction on lock conflicts, deadlocks and dropped connections."""
POINT_MAX = 64
"""Width of a point name: a longer one is malformed."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one message; `reason` is machine-readable (counted by pair)."""

    outcome: OutcomeKind
    reason: str
    device_id: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Verified:
    """A signed message that passed every check and is ready to be stored."""

    message: UplinkMessage
    kind: TopicKind
    envelope: bytes = b""
    """As received: kept as evidence (`cloud.evidence`)."""


class Received(Protocol):
    """One message as the broker delivered it (`cloud.mqtt_link.Delivery` is one)."""

    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def retain(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Message:
    """A `Received` built by hand (tests, benchmarks, replays)."""

    topic: str
    payload: bytes
    retain: bool = False


class IngestUnavailable(CloudError):
    """The database could not be reached (after retries): the message was not processed."""

    status = 503
    title = "Ingest unavailable"


_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _DeviceKeys:
    status: Literal["ok", "unknown", "revoked"]
    keys: tuple[tuple[Ed25519PublicKey, int | None], ...]
    """(key, valid_until_ms), newest first."""
    expires_ms: int


class Ingest:
    """Verifies, de-duplicates and applies uplink messages; counts every outcome."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        settings: CloudSettings,
        *,
        key_ttl_ms: int = KEY_TTL_MS,
        retries: int = RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.settings = settings
        self.max_ahead_ms = int(settings.max_clock_ahead_s * 1000)
        self.key_ttl_ms = key_ttl_ms
        self.retries = retries
        self._sleep = sleep
        self._lock = threading.Lock()
        self._keys: dict[str, _DeviceKeys] = {}
        self._counts: Counter[tuple[str, str]] = Counter()
        self._duplicates: Counter[str] = Counter()
        self._logged: set[tuple[str | None, str]] = set()

    # -- entry point -------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, retained: bool = False) -> Outcome:
        """Process one message received on `topic`; never raises for bad input (see
        `handle_many`)."""
        return self.handle_many([Message(topic, payload, retained)])[0]

    def handle_many(self, deliveries: Sequence[Received]) -> list[Outcome]:
        """Process `deliveries` (in arrival order) with one transaction for all that pass
        the checks (`cloud.twin.batch`); one outcome each, in the same order.

        Raises `IngestUnavailable` when the database cannot be reached: acknowledge none of
        them then (some may be stored; their copies will be duplicates). Anything else
        unexpected (a bug) costs only the message that caused it: a batch that fails is
        stored again one message at a time, and the one that still fails is quarantined and
        rejected as ``internal_error`` (its seq later shows up as an unexplained gap rather
        than blocking every message behind it).
        """
        started = time.perf_counter()
        outcomes: dict[int, Outcome] = {}
        ready: list[tuple[int, Verified]] = []
        for i, received in enumerate(deliveries):
            checked = self._guarded(
                received, partial(self._verify, received.topic, received.payload, received.retain)
            )
            if isinstance(checked, Outcome):
                outcomes[i] = checked
            else:
                ready.append((i, checked))
        if ready:
            outcomes.update(self._store_all(deliveries, ready))
        elapsed = time.perf_counter() - started
        result = [outcomes[i] for i in range(len(deliveries))]
        for outcome in result:
            INGEST_LATENCY.observe(elapsed)
            self._count(outcome)
        return result

    def _guarded(self, received: Received, work: Callable[[], _T]) -> _T | Outcome:
        try:
            return work()
        except IngestUnavailable:
            raise
        except Exception as exc:  # a bug must cost this message, never the worker
            log.exception("%s: internal error handling a message", received.topic)
            self._quarantine(received.topic, received.payload, exc)
            return Outcome("rejected", "internal_error", _device_of(received.topic))

    def _store_all(
        self, deliveries: Sequence[Received], ready: list[tuple[int, Verified]]
    ) -> dict[int, Outcome]:
        try:
            return dict(zip((i for i, _ in ready), self._store(ready), strict=True))
        except IngestUnavailable:
            raise
        except Exception:
            if len(ready) > 1:
                log.warning("a batch of %d failed; storing one by one", len(ready), exc_info=True)
            else:
                log.debug("storing one message failed", exc_info=True)
        return {i: self._guarded(deliveries[i], partial(self._store_one, v)) for i, v in ready}

    def _store_one(self, verified: Verified) -> Outcome:
        return self._store([(0, verified)])[0]

    def _verify(self, topic: str, payload: bytes, retained: bool) -> Verified | Outcome:
        """Everything before the message's transaction: topic, key, signature, fit. A
        ``state`` message (unsigned, tiny) is applied here and its outcome returned."""
        try:
            device_id, kind = parse_topic(topic)
        except MalformedMessage:
            return Outcome("rejected", "malformed")
        if kind is TopicKind.STATE:
            return self._state(device_id, payload, retained)
        if kind.direction is not Direction.UP:
            return Outcome("ignored", "not_uplink", device_id)
        if len(payload) > MAX_ENVELOPE_BYTES:
            return Outcome("rejected", "oversized", device_id)
        entry = self._device(device_id)
        if entry.status != "ok":
            return Outcome("rejected", f"{entry.status}_device", device_id)
        now = self.clock()
        keys = [key for key, until in entry.keys if until is None or until > now]
        if not keys:
            return Outcome("rejected", "expired_key", device_id)
        opened = self._open(payload, topic, device_id, keys)
        if isinstance(opened, Outcome):
            return opened
        problem = _unfit(opened)
        if problem is not None:
            reason, detail = problem
            log.debug("%s: seq %d does not fit: %s", device_id, opened.seq, detail)
            return Outcome("rejected", reason, device_id, opened.seq)
        return Verified(opened, kind, payload)

    def _open(
        self, payload: bytes, topic: str, device_id: str, keys: list[Ed25519PublicKey]
    ) -> UplinkMessage | Outcome:
        """Verify with each current key (several during a rotation's grace period)."""
        for key in keys:

            def lookup(kid: str, key: Ed25519PublicKey = key) -> Ed25519PublicKey | None:
                return key if kid == device_id else None

            try:
                return open_uplink(payload, topic, lookup)
            except BadSignature:
                continue
            except (UnknownKey, WrongDevice):
                # The broker ACL authenticates the topic: a kid or dev naming anyone else
                # on this device's topic is the wrong device, whatever the signature.
                return Outcome("rejected", "wrong_device", device_id)
            except OversizedMessage:
                return Outcome("rejected", "oversized", device_id)
            except ProtocolError:
                return Outcome("rejected", "malformed", device_id)
        return Outcome("rejected", "bad_signature", device_id)

    # -- device keys -------------------------------------------------------------------------

    def _device(self, device_id: str) -> _DeviceKeys:
        now = self.clock()
        with self._lock:
            entry = self._keys.get(device_id)
        if entry is not None and entry.expires_ms > now:
            return entry
        entry = self._retrying(lambda session: self._load_keys(session, device_id, now))
        with self._lock:
            if len(self._keys) >= KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[device_id] = entry
        return entry

    def _load_keys(self, session: Session, device_id: str, now: int) -> _DeviceKeys:
        expires = now + self.key_ttl_ms
        device = session.get(Device, device_id)
        if device is None:
            return _DeviceKeys("unknown", (), expires)
        if device.revoked:
            return _DeviceKeys("revoked", (), expires)
        rows = session.execute(
            select(DeviceKey.public_key, DeviceKey.valid_until_ms)
            .where(
                DeviceKey.device_id == device_id,
                or_(DeviceKey.valid_until_ms.is_(None), DeviceKey.valid_until_ms > now),
            )
            .order_by(DeviceKey.id.desc())
        ).all()
        keys = []
        for raw, until in rows:
            try:
                keys.append((public_key_from_raw(raw), until))
            except ProtocolError:
                log.error("%s: a stored public key is not a valid Ed25519 key", device_id)
        return _DeviceKeys("ok", tuple(keys), expires)

    def forget_keys(self, device_id: str | None = None) -> None:
        """Drop cached keys of one device (or all), e.g. right after a revocation here."""
        with self._lock:
            if device_id is None:
                self._keys.clear()
            else:
                self._keys.pop(device_id, None)

    # -- state (unsigned, retained) ----------------------------------------------------------

    def _state(self, device_id: str, payload: bytes, retained: bool) -> Outcome:
        if payload == b"":
            return Outcome("ignored", "state_cleared", device_id)  # a retained message deleted
        if payload not in (STATE_ONLINE, STATE_OFFLINE):
            return Outcome("rejected", "malformed", device_id)
        entry = self._device(device_id)
        if entry.status != "ok":
            return Outcome("rejected", f"{entry.status}_device", device_id)
        connection = payload.decode()
        now = self.clock()

        def work(session: Session) -> Outcome:
            update.set_connection(
                session, locked_twin(session, device_id), connection, now, retained=retained
            )
            return Outcome("accepted", "state", device_id)

        return self._retrying(work)

    # -- signed messages ---------------------------------------------------------------------

    def _store(self, ready: list[tuple[int, Verified]]) -> list[Outcome]:
        """Store verified messages in one transaction (retried as a whole)."""
        messages = [(v.message, v.kind) for _, v in ready]
        envelopes = [v.envelope for _, v in ready]

        def work(session: Session) -> list[Stored]:
            return store_batch(session, messages, self.clock(), self.max_ahead_ms, envelopes)

        stored = self._retrying(work)
        outcomes = []
        for (message, kind), done in zip(messages, stored, strict=True):
            device_id, seq = message.dev, message.seq
            if done.reason is None:
                with self._lock:
                    self._duplicates[device_id] += 1
                log.debug("%s: duplicate seq %d", device_id, seq)
                outcomes.append(Outcome("duplicate", kind.value, device_id, seq))
                continue
            timing = done.timing
            if timing is not None and timing.reason:
                INGEST_RETIMED.labels(timing.reason).inc()
                log.debug("%s: seq %d ordered by receipt time (%s)", device_id, seq, timing.reason)
            elif timing is not None:
                INGEST_LAG.observe(max(0, self.clock() - timing.message.ts) / 1000)
            outcomes.append(Outcome("accepted", done.reason, device_id, seq))
        return outcomes

    def _quarantine(self, topic: str, payload: bytes, error: Exception) -> None:
        """Keep a message whose handling failed; if even that fails it must come again."""
        try:
            quarantine.hold(
                self.sessions,
                Stage.INGEST,
                error,
                now_ms=self.clock(),
                device_id=_device_of(topic),
                topic=topic,
                payload=payload,
            )
        except SQLAlchemyError as exc:
            raise IngestUnavailable(f"cannot quarantine a failed message: {exc!r}") from exc

    # -- transactions, counters --------------------------------------------------------------

    def _retrying(self, work: Callable[[Session], _T]) -> _T:
        for attempt in range(1, self.retries + 1):
            try:
                with self.sessions() as session, session.begin():
                    return work(session)
            except (OperationalError, InterfaceError) as exc:
                # Lock conflicts ("database is locked"), serialization failures, deadlocks
                # and dropped connections are all OperationalError: worth another try.
                if attempt == self.retries:
                    raise IngestUnavailable(
                        f"database unavailable after {attempt} attempts: {exc.orig!r}"
                    ) from exc
                log.debug("transaction conflict or lost connection (%r), retrying", exc.orig)
                self._sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
        raise AssertionError("unreachable")

    def _count(self, outcome: Outcome) -> None:
        INGEST_MESSAGES.labels(outcome.outcome, outcome.reason).inc()
        with self._lock:
            self._counts[(outcome.outcome, outcome.reason)] += 1
            first = outcome.outcome == "rejected" and (
                (outcome.device_id, outcome.reason) not in self._logged
            )
            if first:
                self._logged.add((outcome.device_id, outcome.reason))
        if first:
            log.warning(
                "%s: message rejected (%s); further rejections for it are counted, not logged",
                outcome.device_id or "?",
                outcome.reason,
            )

    def counts(self) -> dict[tuple[str, str], int]:
        """Outcomes counted since the last flush, by (outcome, reason)."""
        with self._lock:
            return dict(self._counts)

    def flush_counters(self) -> bool:
        """Add the counts since the last flush to ``ingest_counters`` and duplicates to the
        twins; True if written. If the database is unavailable the counts are kept for the
        next call (and False returned), so a blip never kills the caller's loop."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
            duplicates, self._duplicates = self._duplicates, Counter()
            self._logged.clear()
        if not counts and not duplicates:
            return True

        def work(session: Session) -> None:
            upsert = dialect_insert(session)
            for (outcome, reason), n in sorted(counts.items()):
                statement = upsert(IngestCounter).values(outcome=outcome, reason=reason, count=n)
                session.execute(
                    statement.on_conflict_do_update(
                        index_elements=["outcome", "reason"],
                        set_={"count": IngestCounter.count + statement.excluded.count},
                    )
                )
            update.add_duplicates(session, duplicates, self.clock())

        try:
            self._retrying(work)
        except IngestUnavailable as exc:
            log.warning("counters not flushed, kept for the next try: %s", exc)
            with self._lock:
                self._counts.update(counts)
                self._duplicates.update(duplicates)
            return False
        return True


# -- effects (inside the message's transaction, twin locked) ----------------------------------


def _device_of(topic: str) -> str | None:
    try:
        return parse_topic(topic)[0]
    except MalformedMessage:
        return None


def _unfit(message: UplinkMessage) -> tuple[str, str] | None:
    """Why a verified message cannot be stored as it is: (counted reason, detail), or None.

    Legal on the wire but not storable (`cloud.limits`): a seq, epoch or timestamp past
    2**53 - 1 is ``out_of_range``; text holding a NUL character (PostgreSQL cannot store
    it) is ``malformed``, as are over-long point names and bad gap details.
    """
    header = (("seq", message.seq), ("epoch", message.epoch), ("ts", message.ts))
    for name, value in header:
        if not storable(value):
            return "out_of_range", f"{name} {value} is past {MAX_INT}"
    if isinstance(message, TelemetryBatch):
        for reading in message.readings:
            if len(reading.point) > POINT_MAX:
                return "malformed", f"point name longer than {POINT_MAX}: {reading.point[:20]}..."
            if not storable(reading.ts):
                return "out_of_range", f"reading ts {reading.ts} is past {MAX_INT}"
    if isinstance(message, Event) and message.kind is EventKind.GAP:
        try:
            parse_gap(message)
        except MalformedMessage as exc:
            return "malformed", str(exc)
    if _telemetry_nul(message) if isinstance(message, TelemetryBatch) else _has_nul(message):
        return "malformed", "text holds a NUL character"
    return None


def _telemetry_nul(batch: TelemetryBatch) -> bool:
    """`_has_nul` for the most common message, without the generic walk (the only text in a
    batch is the device id, the point names and text values)."""
    return "\x00" in batch.dev or any(
        "\x00" in r.point or (isinstance(r.value, str) and "\x00" in r.value)
        for r in batch.readings
    )


def _has_nul(value: object) -> bool:
    """Whether any text anywhere in `value` (a message, reading, mapping...) holds U+0000."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, tuple):
        return any(_has_nul(item) for item in value)
    if dataclasses.is_dataclass(value):
        return any(_has_nul(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False
