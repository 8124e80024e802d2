"""Tables of the thread's hash chain: each chain's head and the signed checkpoints
(`cloud.evidence`, `protocols.proof`)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, LargeBinary, String
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
