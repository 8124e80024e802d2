"""A device's twin row: found and locked, or created first. Every writer of twins starts here.

A twin's writes are serialised by its row lock, taken for the rest of the transaction: N
ingest workers in N processes, the gap sweep and the API never lose each other's changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cloud.models import Twin


def dialect_insert(session: Session) -> Callable[..., Any]:
    """The INSERT .. ON CONFLICT constructor of the session's database."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def lock_twin(session: Session, device_id: str) -> Twin | None:
    """The twin row, locked for the rest of the transaction (None if it does not exist).

    PostgreSQL: ``SELECT ... FOR UPDATE``. SQLite has no row locks: the same statement takes
    the database's write lock first (`cloud.db.take_write_lock`), so the read cannot be stale.
    """
    return session.scalars(
        select(Twin)
        .where(Twin.device_id == device_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def locked_twin(session: Session, device_id: str) -> Twin:
    """The device's twin, locked; created first if the device was never heard from."""
    twin = lock_twin(session, device_id)
    if twin is None:
        session.execute(
            dialect_insert(session)(Twin)
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


def new_twin(session: Session, device_id: str) -> Twin:
    """Add the empty twin of a device being registered (version 1, connection unknown)."""
    twin = Twin(device_id=device_id, version=1, connection="unknown")
    session.add(twin)
    return twin
