"""Tables of the thread's hash chain: each chain's head and the signed checkpoints
(`cloud.evidence`, `protocols.proof`)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models import Base, BigId


class ThreadHead(Base):
    """The newest event of one chain; locked to append the next."""

    __tablename__ = "thread_heads"

    chain: Mapped[str] = mapped_column(String(63), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    checkpointed_seq: Mapped[int] = mapped_column(BigInteger)
    """The seq of the chain's newest checkpoint (0: none)."""


class ThreadCheckpoint(Base):
    """A chain's head signed with the cloud's command key at a moment."""

    __tablename__ = "thread_checkpoints"
    __table_args__ = (Index("ix_thread_checkpoints_chain_seq", "chain", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(63))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    kid: Mapped[str] = mapped_column(String(64))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class AuditEntry(Base):
    """One state-changing request to the API or the portal: who, as what, when, what, from
    where, and how it ended (`cloud.api.audit`)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_job", "job_id"),
        Index("ix_audit_log_actor", "actor", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str | None] = mapped_column(String(64))
    """The authenticated user; None before log-in (a log-in attempt, a gateway's claim)."""
    role: Mapped[str | None] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(200))
    """The route's template, e.g. ``/api/v1/jobs/{job_id}/select``."""
    path: Mapped[str] = mapped_column(String(500))
    address: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    """``done`` (2xx/3xx), ``refused`` (4xx) or ``failed`` (5xx)."""
    job_id: Mapped[str | None] = mapped_column(String(36))
    device_id: Mapped[str | None] = mapped_column(String(63))
