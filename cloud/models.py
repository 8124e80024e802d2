"""The cloud's tables (SQLAlchemy 2 declarative). Alembic migrations mirror this file.

Invariants the schema itself enforces, so that N ingest workers and API processes can run
side by side without coordinating:

* ``uplinks`` has primary key ``(device_id, seq)``: a message is applied at most once, by
  whichever worker inserts that row first; everything it changes happens in that transaction.
* ``commands`` has a unique ``(requested_by, idempotency_key)``.
* ``thread_events`` is append-only; its ``id`` orders it.

Times are integer milliseconds since the Unix epoch (``*_ms``), as on the wire.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (Alembic needs them)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012 (SQLAlchemy API)


class User(Base):
    """A person or service account that can log in to the API."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """Login name."""
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    """admin | support | owner | tenant | engineer."""
    display_name: Mapped[str] = mapped_column(String(200), default="")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class Token(Base):
    """An API access token; only its SHA-256 is stored."""

    __tablename__ = "tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    expires_ms: Mapped[int] = mapped_column(BigInteger)


class LoginThrottle(Base):
    """Failed logins per account and per client address (`cloud.throttle`)."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    """``account:<login name>`` or ``address:<client address>``."""
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_ms: Mapped[int] = mapped_column(BigInteger)
    blocked_until_ms: Mapped[int] = mapped_column(BigInteger)


class Device(Base):
    """A registered gateway/boiler: the product twin's attributes."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    model: Mapped[str | None] = mapped_column(String(100))
    serial: Mapped[str | None] = mapped_column(String(100))
    install_date: Mapped[str | None] = mapped_column(String(10))
    """ISO date (YYYY-MM-DD)."""
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    address: Mapped[str | None] = mapped_column(String(300))
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_ms: Mapped[int | None] = mapped_column(BigInteger)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class DeviceKey(Base):
    """A device's Ed25519 public key. Rotation retires the old key after a grace period."""

    __tablename__ = "device_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    """Raw 32-byte Ed25519 public key."""
    created_ms: Mapped[int] = mapped_column(BigInteger)
    valid_until_ms: Mapped[int | None] = mapped_column(BigInteger)
    """None while current; set when rotated (end of the grace period)."""


class Twin(Base):
    """Live state of one boiler, kept by ingest. `version` is the ETag."""

    __tablename__ = "twins"

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    connection: Mapped[str] = mapped_column(String(16), default="unknown")
    """online | offline | unknown, from the retained ``state`` topic."""
    connection_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_seen_ms: Mapped[int | None] = mapped_column(BigInteger, index=True)
    """When the cloud last received a verified message from it."""
    epoch: Mapped[int | None] = mapped_column(BigInteger)
    birth_ms: Mapped[int | None] = mapped_column(BigInteger)
    agent_version: Mapped[str | None] = mapped_column(String(64))
    map_id: Mapped[str | None] = mapped_column(String(64))
    map_hash: Mapped[str | None] = mapped_column(String(128))
    capabilities: Mapped[list[Any]] = mapped_column(default=list)
    health: Mapped[dict[str, Any]] = mapped_column(default=dict)
    health_ms: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[int | None] = mapped_column(Integer)
    fault_code: Mapped[int | None] = mapped_column(Integer)
    max_seq: Mapped[int | None] = mapped_column(BigInteger)
    contiguous_seq: Mapped[int | None] = mapped_column(BigInteger)
    """Every seq up to this one is stored or accounted for by a gap event."""
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(BigInteger, default=0)
    lost_accounted: Mapped[int] = mapped_column(BigInteger, default=0)
    """Messages the device reported dropping (``gap`` events)."""


class TwinValue(Base):
    """Latest reported value of one point, with its own source timestamp and quality."""

    __tablename__ = "twin_values"

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    point: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    """When it was read, as the cloud orders it (`cloud.timing`)."""
    device_ts_ms: Mapped[int | None] = mapped_column(BigInteger)
    """The device's own timestamp when the cloud re-timed the reading (else None)."""
    num: Mapped[float | None] = mapped_column(Float)
    text: Mapped[str | None] = mapped_column(String(200))
    quality: Mapped[str] = mapped_column(String(16))
    seq: Mapped[int] = mapped_column(BigInteger)


class Uplink(Base):
    """One accepted message: the idempotency key of ingest."""

    __tablename__ = "uplinks"

    device_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(8))
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    received_ms: Mapped[int] = mapped_column(BigInteger)
    envelope: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The device's signed COSE envelope, as received: evidence for proof bundles
    (`cloud.evidence`; cleared after `CloudSettings.evidence_keep_days`)."""


class Sample(Base):
    """One telemetry reading (the time series). On PostgreSQL the table is partitioned by
    ``ts_ms`` (`cloud.partitions`; primary key ``(id, ts_ms)`` there, as partitioning needs)."""

    __tablename__ = "samples"
    __table_args__ = (Index("ix_samples_device_point_ts", "device_id", "point", "ts_ms"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(63))
    point: Mapped[str] = mapped_column(String(64))
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    """When it was read, as the cloud orders it (`cloud.timing`)."""
    device_ts_ms: Mapped[int | None] = mapped_column(BigInteger)
    """The device's own timestamp when the cloud re-timed the reading (else None)."""
    num: Mapped[float | None] = mapped_column(Float)
    text: Mapped[str | None] = mapped_column(String(200))
    quality: Mapped[str] = mapped_column(String(16))
    seq: Mapped[int] = mapped_column(BigInteger)


class SampleRollup(Base):
    """Numeric readings of one point summed up per minute or hour (PostgreSQL only; SQLite
    charts read `samples`). Ingest appends one row per (point, width, bucket) a transaction
    touches, in the transaction that stores the samples (so exactly once, like them);
    housekeeping merges the rows of each bucket into one. Rows combine (sum n and total, min
    of min, max of max), so readers aggregate whatever is there (`cloud.twin.rollups`)."""

    __tablename__ = "sample_rollups"
    __table_args__ = (
        Index("ix_sample_rollups_key", "device_id", "point", "width_ms", "bucket_ms"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(63))
    point: Mapped[str] = mapped_column(String(64))
    width_ms: Mapped[int] = mapped_column(Integer)
    """60000 (a minute) or 3600000 (an hour)."""
    bucket_ms: Mapped[int] = mapped_column(BigInteger)
    """Start of the bucket: ``ts_ms`` rounded down to a whole `width_ms` since the epoch."""
    n: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Float)
    min: Mapped[float] = mapped_column(Float)
    max: Mapped[float] = mapped_column(Float)


class Alarm(Base):
    """One fault or lockout episode: when it began and (once known) when it ended."""

    __tablename__ = "alarms"
    __table_args__ = (Index("ix_alarms_device_start", "device_id", "start_ms"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    kind: Mapped[str] = mapped_column(String(16))
    """fault | lockout."""
    code: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(String(16))
    """Fault name as the device reported it, e.g. F28."""
    start_ms: Mapped[int] = mapped_column(BigInteger)
    end_ms: Mapped[int | None] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)


class Gap(Base):
    """Seqs that never arrived: ``accounted`` (the device said why) or unexplained."""

    __tablename__ = "gaps"
    __table_args__ = (UniqueConstraint("device_id", "first_seq", "kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    """accounted | unexplained."""
    reason: Mapped[str] = mapped_column(String(64))
    detected_ms: Mapped[int] = mapped_column(BigInteger)
    resolved_ms: Mapped[int | None] = mapped_column(BigInteger)
    """An unexplained gap whose seqs later arrived after all."""


class ThreadEvent(Base):
    """The digital thread: append-only, typed events about a boiler (and later, people and jobs)."""

    __tablename__ = "thread_events"
    __table_args__ = (
        Index("ix_thread_device_id", "device_id", "id"),
        Index("ix_thread_events_chain", "device_id", "chain_seq"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str | None] = mapped_column(String(63))
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    """When it happened (device time for ingested events, cloud time otherwise)."""
    recorded_ms: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str | None] = mapped_column(String(64))
    """Who caused it: a user id, ``device:<id>`` or ``cloud``."""
    subject: Mapped[str | None] = mapped_column(String(64), index=True)
    """What it is about beyond the boiler, e.g. a command id."""
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    chain_seq: Mapped[int | None] = mapped_column(BigInteger)
    """Place in its chain (the boiler's, or ``fleet``), from 1; `protocols.proof` has the
    rules. None for events recorded before chaining began."""
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))


class Command(Base):
    """A command and its lifecycle state."""

    __tablename__ = "commands"
    __table_args__ = (
        UniqueConstraint("requested_by", "idempotency_key"),
        Index("ix_commands_state", "state"),
        Index("ix_commands_device_created", "device_id", "created_ms"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    name: Mapped[str] = mapped_column(String(32))
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    kid: Mapped[str] = mapped_column(String(64))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    """The signed COSE_Sign1, stored so every (re)send is byte-identical."""
    iat_ms: Mapped[int] = mapped_column(BigInteger)
    exp_ms: Mapped[int] = mapped_column(BigInteger)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    sent_ms: Mapped[int | None] = mapped_column(BigInteger)
    publish_attempts: Mapped[int] = mapped_column(Integer, default=0)
    result_reason: Mapped[str | None] = mapped_column(String(32))
    observed: Mapped[dict[str, Any]] = mapped_column(default=dict)


class IngestCounter(Base):
    """Ingest outcomes by reason, flushed from memory in batches (portal and metrics)."""

    __tablename__ = "ingest_counters"

    outcome: Mapped[str] = mapped_column(String(32), primary_key=True)
    """accepted | duplicate | rejected."""
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class Quarantine(Base):
    """Input that made the cloud fail, set aside so it cannot fail it again (`cloud.quarantine`).

    ``ingest``: one message (topic and payload kept whole, to replay once fixed). ``gaps``: a
    device whose seq accounting failed; the gap detector skips it until it is released.
    """

    __tablename__ = "quarantine"
    __table_args__ = (Index("ix_quarantine_stage_device", "stage", "device_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    stage: Mapped[str] = mapped_column(String(16))
    device_id: Mapped[str | None] = mapped_column(String(63))
    topic: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    error: Mapped[str] = mapped_column(String(500))
    """The exception's type and message (never a traceback: that goes to the log)."""
    created_ms: Mapped[int] = mapped_column(BigInteger)
    released_ms: Mapped[int | None] = mapped_column(BigInteger)
    outcome: Mapped[str | None] = mapped_column(String(64))
    """What releasing it did (e.g. the replayed message's ingest outcome)."""


# --- Service platform: user, service (job) twins, crowdsourcing, notifications ---------------


class Engineer(Base):
    """An engineer's twin: static qualifications and the history behind AR, CS and SQ.

    AR = accepted / invitations (eq. 6); CS and SQ are running means over evaluated jobs
    (eqs. 7-8), kept as sums so eqs. 15-17 are exact increments.
    """

    __tablename__ = "engineers"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    gas_safe_number: Mapped[str] = mapped_column(String(32), default="")
    training: Mapped[list[Any]] = mapped_column(default=list)
    skills: Mapped[list[Any]] = mapped_column(default=list)
    languages: Mapped[list[Any]] = mapped_column(default=list)
    home_lat: Mapped[float] = mapped_column(Float)
    home_lon: Mapped[float] = mapped_column(Float)
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    """Taking work at all (an engineer on leave is not invited)."""
    invitations: Mapped[int] = mapped_column(Integer, default=0)
    """Num(T_all): invitations closed (answered, or unanswered by the deadline)."""
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    """Num(T_accepted): invitations answered 'available'."""
    evaluated: Mapped[int] = mapped_column(Integer, default=0)
    cs_sum: Mapped[float] = mapped_column(Float, default=0.0)
    sq_sum: Mapped[float] = mapped_column(Float, default=0.0)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class EngineerPrice(Base):
    """An engineer's pricing history for one service type (constraint 2)."""

    __tablename__ = "engineer_prices"

    engineer_id: Mapped[str] = mapped_column(ForeignKey("engineers.user_id"), primary_key=True)
    service_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    jobs: Mapped[int] = mapped_column(Integer, default=0)
    average: Mapped[float] = mapped_column(Float)


class Job(Base):
    """A service twin: one request, from asking to evaluation, linking boiler and people."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_device_created", "device_id", "created_ms"),
        Index("ix_jobs_state", "state"),
        UniqueConstraint("requested_by", "idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    service_type: Mapped[str] = mapped_column(String(32))
    problem: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    preferred_ms: Mapped[int] = mapped_column(BigInteger)
    """When the requester would like the visit."""
    principle: Mapped[str] = mapped_column(String(16))
    min_performance: Mapped[float] = mapped_column(Float, default=0.0)
    """The requester's accepted performance threshold (constraint 4), 0..1."""
    requested_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    owner_id: Mapped[str | None] = mapped_column(String(64), index=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(24))
    authorized_by: Mapped[str | None] = mapped_column(String(64))
    validation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    analysis: Mapped[dict[str, Any]] = mapped_column(default=dict)
    responses_due_ms: Mapped[int | None] = mapped_column(BigInteger)
    engineer_id: Mapped[str | None] = mapped_column(String(64), index=True)
    """The contracted engineer."""
    contract: Mapped[dict[str, Any]] = mapped_column(default=dict)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    completed_ms: Mapped[int | None] = mapped_column(BigInteger)
    normal_since_ms: Mapped[int | None] = mapped_column(BigInteger)
    """Since when the boiler has been running normally after completion (verification)."""
    verified_ms: Mapped[int | None] = mapped_column(BigInteger)
    evaluation_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    evaluation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    closed_reason: Mapped[str] = mapped_column(Text, default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class Invitation(Base):
    """One engineer invited to one job, why (W and constraint figures), and their answer."""

    __tablename__ = "invitations"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    engineer_id: Mapped[str] = mapped_column(ForeignKey("engineers.user_id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    """open | accepted | declined | expired | withdrawn."""
    performance: Mapped[float] = mapped_column(Float)
    figures: Mapped[dict[str, Any]] = mapped_column(default=dict)
    invited_ms: Mapped[int] = mapped_column(BigInteger)
    responded_ms: Mapped[int | None] = mapped_column(BigInteger)
    quote: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    note: Mapped[str] = mapped_column(Text, default="")


class Notification(Base):
    """One entry of a user's in-app notification feed (also handed to the sender)."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    device_id: Mapped[str | None] = mapped_column(String(63))
    job_id: Mapped[str | None] = mapped_column(String(36))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    read_ms: Mapped[int | None] = mapped_column(BigInteger)
    sent: Mapped[bool] = mapped_column(Boolean, default=False)
    """Handed to the pluggable sender (e-mail/SMS) after commit."""


class Reminder(Base):
    """An annual-check reminder sent for one boiler and one anniversary (sent once)."""

    __tablename__ = "reminders"

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    due_date: Mapped[str] = mapped_column(String(10), primary_key=True)
    """The anniversary the reminder is for (YYYY-MM-DD)."""
    sent_ms: Mapped[int] = mapped_column(BigInteger)


class BoilerDay(Base):
    """One boiler's features of one UTC day (`cloud.predict.features`): what the detectors
    follow. Written once, when the day has closed."""

    __tablename__ = "boiler_days"

    device_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    """Days since 1970-01-01 (UTC)."""
    model: Mapped[str | None] = mapped_column(String(100))
    features: Mapped[dict[str, Any]] = mapped_column(default=dict)
    computed_ms: Mapped[int] = mapped_column(BigInteger)


class Prediction(Base):
    """A warning that a boiler is heading for a fault (`cloud.predict`), with its evidence.
    Shown as an alarm of kind ``predicted`` (`alarm_id`) while active."""

    __tablename__ = "predictions"
    __table_args__ = (
        Index("ix_predictions_device_state", "device_id", "state"),
        Index("ix_predictions_state_due", "state", "due_ms"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    alarm_id: Mapped[int | None] = mapped_column(BigInteger)
    mode: Mapped[str] = mapped_column(String(32))
    fault: Mapped[str] = mapped_column(String(16))
    """The fault it leads to if nobody acts, e.g. F22."""
    state: Mapped[str] = mapped_column(String(16))
    """active | cleared | fulfilled (`cloud.predict.store.PredictionState`)."""
    raised_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    ended_ms: Mapped[int | None] = mapped_column(BigInteger)
    ended_reason: Mapped[str | None] = mapped_column(String(32))
    days_to_fault: Mapped[float] = mapped_column(Float)
    days_low: Mapped[float] = mapped_column(Float)
    days_high: Mapped[float] = mapped_column(Float)
    due_ms: Mapped[int] = mapped_column(BigInteger)
    """When the fault is forecast: the last analysed day's end plus `days_to_fault`."""
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model_version: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(36))
    """The preventive service job raised from this warning, if any."""


class PredictorState(Base):
    """Where the detectors have got to (one row per named cursor)."""

    __tablename__ = "predictor_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[int] = mapped_column(Integer)
    """The last UTC day whose features and detectors have run."""
