"""Command lifecycle: create (with preconditions), sign, dispatch, advance on acks, sweep.

INTERFACE STUB while the implementation is written; signatures are final.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from cloud.models import Command
from protocols.messages import Ack, CommandName, Scalar


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """What a caller asks for."""

    name: CommandName
    args: Mapping[str, Scalar] = field(default_factory=dict)
    reason: str = ""
    idempotency_key: str | None = None


def command_json(row: Command) -> dict[str, Any]:
    """API form of a command."""
    raise NotImplementedError


def apply_ack(session: Session, ack: Ack, now_ms: int) -> str:
    """Advance a command on a verified ack, in the ingest transaction; returns the outcome."""
    raise NotImplementedError
