"""Ingest, the application layer: one MQTT message in, one `Outcome` out, no MQTT here.

Invariants:

* Exactly once: a verified message is applied in the same transaction that inserts its
  ``uplinks`` row ``(device_id, seq)``. Whichever worker inserts it first applies it; every
  other copy hits the primary key and is a ``duplicate`` that changes nothing in the database.
  Duplicates are counted in memory and added to ``Twin.duplicates`` (and the counters table)
  by `Ingest.flush_counters`, so a replay flood costs no write per message.
* Per-device effects are serialised by the twin's row lock (`cloud.gaps.lock_twin`), taken
  right after the ``uplinks`` insert, so N workers in N processes never lose a counter.
* Out-of-order data never overwrites newer data: a live value, status, birth or health only
  replaces the stored one when its device timestamp is newer (ties: the higher seq wins).
* Bad input never raises: it is ``rejected`` with a machine-readable reason, counted, and the
  twin is untouched. A flood of it is logged once per device and reason per flush period.
  `IngestUnavailable` (the database is unreachable after retries) is the one exception: the
  message was not processed and must be delivered again.
* Device keys are cached for `key_ttl_ms` (default 5 s), including "unknown" and "revoked"
  answers, so forged messages do not cost a query each; a revocation takes effect within the
  TTL. A key's ``valid_until_ms`` (the end of a rotation's grace period) is checked against
  the clock on every message, not only when the cache is filled.

Seq accounting (``Twin.max_seq``, ``contiguous_seq``, gaps) is described in `cloud.gaps`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import CursorResult, Table, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cloud import alarms, quarantine, thread
from cloud.commands import apply_ack
from cloud.domain import Clock
from cloud.errors import CloudError
from cloud.gaps import ACCOUNTED, advance_contiguous, lock_twin, resolve_gaps
from cloud.limits import MAX_INT, code, storable
from cloud.metrics import INGEST_LATENCY, INGEST_MESSAGES, INGEST_RETIMED
from cloud.models import (
    Device,
    DeviceKey,
    Gap,
    IngestCounter,
    Sample,
    Twin,
    TwinValue,
    Uplink,
)
from cloud.quarantine import Stage
from cloud.settings import CloudSettings
from cloud.timing import Timing, order_time
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
    Birth,
    Event,
    EventKind,
    Health,
    Reading,
    TelemetryBatch,
    UplinkMessage,
    parse_gap,
)
from protocols.reference import FAULT_POINT, STATUS_POINT, BoilerStatus
from protocols.topics import STATE_OFFLINE, STATE_ONLINE, Direction, TopicKind, parse_topic

log = logging.getLogger(__name__)

OutcomeKind: TypeAlias = Literal["accepted", "duplicate", "rejected", "ignored"]

KEY_TTL_MS = 5_000
"""How long device keys (and unknown/revoked answers) are cached."""
KEY_CACHE_MAX = 100_000
"""Entries kept before the cache is emptied (a flood of distinct topics must not grow it)."""
RETRIES = 5
"""Attempts per transaction on lock conflicts, deadlocks and dropped connections."""
POINT_MAX, TEXT_MAX = 64, 200
"""Column widths: a longer point name is malformed; a longer text value is cut."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one message; `reason` is machine-readable (counted by pair)."""

    outcome: OutcomeKind
    reason: str
    device_id: str | None = None
    seq: int | None = None


class IngestUnavailable(CloudError):
    """The database could not be reached (after retries): the message was not processed."""

    status = 503
    title = "Ingest unavailable"


_T = TypeVar("_T")


class _Duplicate(Exception):
    """The uplinks row exists: roll the transaction back."""


@dataclass(frozen=True, slots=True)
class _DeviceKeys:
    status: Literal["ok", "unknown", "revoked"]
    keys: tuple[tuple[Ed25519PublicKey, int | None], ...]
    """(key, valid_until_ms), newest first."""
    expires_ms: int


def _dialect_insert(session: Session) -> Callable[..., Any]:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _num_text(value: object) -> tuple[float | None, str | None]:
    if isinstance(value, bool):
        return (1.0 if value else 0.0), None
    if isinstance(value, int | float):
        return float(value), None
    if isinstance(value, str):
        return None, value[:TEXT_MAX]
    return None, None


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
        """Process one message received on `topic`; never raises for bad input.

        Raises `IngestUnavailable` when the database cannot be reached: do not acknowledge
        the message then. Anything else unexpected (a bug) is logged with its traceback and
        rejected as ``internal_error``: the message is dropped, and its seq later shows up
        as an unexplained gap rather than blocking every message behind it.
        """
        started = time.perf_counter()
        try:
            outcome = self._handle(topic, payload, retained)
        except IngestUnavailable:
            raise
        except Exception as exc:  # a bug must cost this message, never the worker
            log.exception("%s: internal error handling a message", topic)
            self._quarantine(topic, payload, exc)
            outcome = Outcome("rejected", "internal_error", _device_of(topic))
        INGEST_LATENCY.observe(time.perf_counter() - started)
        self._count(outcome)
        return outcome

    def _handle(self, topic: str, payload: bytes, retained: bool) -> Outcome:
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
        return self._store(opened, kind)

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
            twin = _twin(session, device_id)
            if twin.connection == connection:
                return Outcome("accepted", "state", device_id)
            previous = twin.connection
            twin.connection, twin.connection_ms = connection, now
            twin.version += 1
            thread.record(
                session,
                device_id=device_id,
                kind=thread.ThreadKind.CONNECTIVITY,
                ts_ms=now,
                recorded_ms=now,
                actor=f"device:{device_id}",
                data={"from": previous, "to": connection, "retained": retained},
            )
            log.info("%s: %s (was %s)", device_id, connection, previous)
            return Outcome("accepted", "state", device_id)

        return self._retrying(work)

    # -- signed messages ---------------------------------------------------------------------

    def _store(self, message: UplinkMessage, kind: TopicKind) -> Outcome:
        device_id, seq = message.dev, message.seq

        def work(session: Session) -> Outcome:
            now = self.clock()
            session.add(
                Uplink(
                    device_id=device_id,
                    seq=seq,
                    epoch=message.epoch,
                    kind=kind.value,
                    ts_ms=message.ts,
                    received_ms=now,
                )
            )
            try:
                session.flush()
            except IntegrityError:
                raise _Duplicate from None
            twin = _twin(session, device_id)
            timing = order_time(message, now, self.max_ahead_ms)
            reason, accounted = self._apply(session, twin, timing, now)
            _sequence(session, twin, seq, accounted, now)
            twin.last_seen_ms = max(twin.last_seen_ms or 0, now)
            twin.received += 1
            twin.version += 1
            retimed[:] = [timing.reason] if timing.reason else []
            return Outcome("accepted", reason, device_id, seq)

        retimed: list[str] = []
        try:
            outcome = self._retrying(work)
        except _Duplicate:
            with self._lock:
                self._duplicates[device_id] += 1
            log.debug("%s: duplicate seq %d", device_id, seq)
            return Outcome("duplicate", kind.value, device_id, seq)
        for why in retimed:
            INGEST_RETIMED.labels(why).inc()
            log.debug("%s: seq %d ordered by receipt time (%s)", device_id, seq, why)
        return outcome

    def _apply(
        self, session: Session, twin: Twin, timing: Timing, now: int
    ) -> tuple[str, list[tuple[int, int]]]:
        """Apply one message's effects; returns (reason, seq ranges newly accounted for)."""
        message, evidence = timing.message, timing.evidence
        if isinstance(message, TelemetryBatch):
            _telemetry(session, twin, message, timing.reading_ts)
            return "data", []
        if isinstance(message, Event):
            if message.kind is EventKind.GAP:
                return "event", _gap(session, twin, message, now, evidence)
            alarms.apply_event(session, message, now, evidence)
            return "event", []
        if isinstance(message, Birth):
            _birth(session, twin, message, now, evidence)
            return "birth", []
        if isinstance(message, Health):
            if twin.health_ms is None or message.ts >= twin.health_ms:
                twin.health = {"modem": dict(message.modem), "agent": dict(message.agent)}
                twin.health_ms = message.ts
            return "health", []
        result = apply_ack(session, message, now, evidence)
        log.debug("%s: ack for %s: %s", message.dev, message.command_id, result)
        return ("ack" if result == "applied" else f"ack_{result}"), []

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
            upsert = _dialect_insert(session)
            for (outcome, reason), n in sorted(counts.items()):
                statement = upsert(IngestCounter).values(outcome=outcome, reason=reason, count=n)
                session.execute(
                    statement.on_conflict_do_update(
                        index_elements=["outcome", "reason"],
                        set_={"count": IngestCounter.count + statement.excluded.count},
                    )
                )
            for device_id, n in sorted(duplicates.items()):  # id order: no deadlocks
                session.execute(
                    update(Twin)
                    .where(Twin.device_id == device_id)
                    .values(duplicates=Twin.duplicates + n)
                    .execution_options(synchronize_session=False)
                )

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
    if _has_nul(message):
        return "malformed", "text holds a NUL character"
    return None


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


def _twin(session: Session, device_id: str) -> Twin:
    """The device's twin, locked; created first if the device was never heard from."""
    twin = lock_twin(session, device_id)
    if twin is None:
        upsert = _dialect_insert(session)
        session.execute(
            upsert(Twin)
            .values(
                device_id=device_id,
                version=1,
                connection="unknown",
                capabilities=[],
                health={},
                received=0,
                duplicates=0,
                lost_accounted=0,
            )
            .on_conflict_do_nothing(index_elements=["device_id"])
        )
        twin = lock_twin(session, device_id)
        assert twin is not None, "twin row exists: just inserted"
    return twin


def _sequence(
    session: Session, twin: Twin, seq: int, accounted: list[tuple[int, int]], now: int
) -> None:
    """Advance max_seq / contiguous_seq for a stored `seq` (see `cloud.gaps`)."""
    if twin.contiguous_seq is None:
        twin.contiguous_seq = seq - 1  # the first seq the cloud sees starts the count
    late = seq <= twin.contiguous_seq
    twin.max_seq = seq if twin.max_seq is None else max(twin.max_seq, seq)
    moved = seq == twin.contiguous_seq + 1
    if moved:
        twin.contiguous_seq = seq
    if (moved or accounted) and twin.contiguous_seq < twin.max_seq:
        advance_contiguous(session, twin)
    if late:
        resolve_gaps(session, twin.device_id, seq, seq, now)
    for first, last in accounted:
        resolve_gaps(session, twin.device_id, first, last, now)


def _telemetry(
    session: Session, twin: Twin, batch: TelemetryBatch, device_ts: tuple[int | None, ...]
) -> None:
    """Samples and latest values; `device_ts` holds each reading's own ts where the cloud
    re-timed it (`cloud.timing`), kept beside the time it is ordered by."""
    if not batch.readings:
        return
    rows = []
    latest: dict[str, tuple[Reading, int | None]] = {}
    for i, reading in enumerate(batch.readings):
        num, text = _num_text(reading.value)
        own = device_ts[i] if device_ts else None
        rows.append(
            {
                "device_id": batch.dev,
                "point": reading.point,
                "ts_ms": reading.ts,
                "device_ts_ms": own,
                "num": num,
                "text": text,
                "quality": reading.quality.value,
                "seq": batch.seq,
            }
        )
        if reading.point not in latest or reading.ts >= latest[reading.point][0].ts:
            latest[reading.point] = (reading, own)
    # Core executemany with one constant statement each: compiled once, cached thereafter
    # (a multi-row VALUES would be compiled anew for every batch size).
    session.execute(_SAMPLE_INSERT, rows)
    values = [
        {
            "device_id": batch.dev,
            "point": reading.point,
            "ts_ms": reading.ts,
            "device_ts_ms": own,
            "num": _num_text(reading.value)[0],
            "text": _num_text(reading.value)[1],
            "quality": reading.quality.value,
            "seq": batch.seq,
        }
        for reading, own in latest.values()
    ]
    session.execute(_twin_value_upsert(session.get_bind().dialect.name), values)
    if STATUS_POINT in latest or FAULT_POINT in latest:
        _mirror_status(session, twin)


_SAMPLE_INSERT = cast(Table, Sample.__table__).insert()
_UPSERTS: dict[str, Any] = {}


def _twin_value_upsert(dialect: str) -> Any:
    """INSERT .. ON CONFLICT that keeps the newest value per point (by ts, then seq)."""
    if dialect not in _UPSERTS:
        upsert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        statement = upsert(cast(Table, TwinValue.__table__))
        new = statement.excluded
        table = TwinValue.__table__.c
        _UPSERTS[dialect] = statement.on_conflict_do_update(
            index_elements=["device_id", "point"],
            set_={
                c: getattr(new, c)
                for c in ("ts_ms", "device_ts_ms", "num", "text", "quality", "seq")
            },
            where=or_(new.ts_ms > table.ts_ms, and_(new.ts_ms == table.ts_ms, new.seq > table.seq)),
        )
    return _UPSERTS[dialect]


def _mirror_status(session: Session, twin: Twin) -> None:
    """Twin.status / fault_code follow the newest stored values of those points; a newer
    reading showing the boiler out of lockout or fault closes episodes whose closing event
    never came (e.g. cleared while the agent was down: it only reports changes it saw)."""
    session.flush()
    values = {
        v.point: v
        for v in session.scalars(
            select(TwinValue)
            .where(
                TwinValue.device_id == twin.device_id,
                TwinValue.point.in_((STATUS_POINT, FAULT_POINT)),
            )
            .execution_options(populate_existing=True)
        )
    }
    status, fault = values.get(STATUS_POINT), values.get(FAULT_POINT)
    # Episodes can only need closing when the value changes (or was unknown): skipping the
    # lookup otherwise keeps the common batch cheap.
    if status is not None:
        old_status = twin.status
        twin.status = code(status.num)
        changed = old_status is None or old_status != twin.status
        if changed and twin.status is not None and twin.status != BoilerStatus.LOCKOUT:
            alarms.close_open(session, twin.device_id, "lockout", status.ts_ms, status.seq)
    if fault is not None:
        old_fault = twin.fault_code
        twin.fault_code = code(fault.num)
        changed = old_fault is None or old_fault != twin.fault_code
        if changed and twin.fault_code == 0:
            alarms.close_open(session, twin.device_id, "fault", fault.ts_ms, fault.seq)


def _birth(session: Session, twin: Twin, birth: Birth, now: int, evidence: dict[str, Any]) -> None:
    if twin.epoch is None or (birth.epoch, birth.ts) >= (twin.epoch, twin.birth_ms or 0):
        twin.epoch = birth.epoch
        twin.birth_ms = birth.ts
        twin.agent_version = birth.agent_version[:64]
        twin.map_id = birth.map_id[:64]
        twin.map_hash = birth.map_hash[:128]
        twin.capabilities = list(birth.capabilities)
    thread.record(
        session,
        device_id=birth.dev,
        kind=thread.ThreadKind.BIRTH,
        ts_ms=birth.ts,
        recorded_ms=now,
        actor=f"device:{birth.dev}",
        data={
            "seq": birth.seq,
            "epoch": birth.epoch,
            "agent_version": birth.agent_version,
            "map_id": birth.map_id,
            "map_hash": birth.map_hash,
            "capabilities": list(birth.capabilities),
            **evidence,
        },
    )


def _gap(
    session: Session, twin: Twin, event: Event, now: int, evidence: dict[str, Any]
) -> list[tuple[int, int]]:
    """Accounted gaps from a device's ``gap`` event; returns the ranges newly recorded."""
    gap = parse_gap(event)  # checked by _unfit before the transaction
    upsert = _dialect_insert(session)
    added: list[tuple[int, int]] = []
    for first, last in gap.ranges:
        result = session.execute(
            upsert(Gap)
            .values(
                device_id=event.dev,
                first_seq=first,
                last_seq=last,
                kind=ACCOUNTED,
                reason=gap.reason[:64],
                detected_ms=now,
            )
            .on_conflict_do_nothing(index_elements=["device_id", "first_seq", "kind"])
        )
        if cast("CursorResult[Any]", result).rowcount:
            added.append((first, last))
    twin.lost_accounted += sum(last - first + 1 for first, last in added)
    thread.record(
        session,
        device_id=event.dev,
        kind=thread.ThreadKind.GAP,
        ts_ms=event.ts,
        recorded_ms=now,
        actor=f"device:{event.dev}",
        data={
            "kind": ACCOUNTED,
            "seq": event.seq,
            "reason": gap.reason,
            "ranges": [list(r) for r in gap.ranges],
            "count": gap.count,
            **evidence,
        },
    )
    log.warning("%s: device reports %d message(s) dropped (%s)", event.dev, gap.count, gap.reason)
    return added
