"""Importing a contractor list: every valid row of the CSV upserted in one transaction.

Imported accounts get no password (they cannot log in) until an admin sets one with
``boilertwin cloud users password``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cloud.domain import Role
from cloud.models import Engineer, EngineerPrice, User
from cloud.service.engineer_csv import RowError, parse_rows
from cloud.service.engineers import (
    UNUSABLE_PASSWORD,
    EngineerSpec,
    apply_engineer,
    apply_user,
    flush,
    new_user,
    price_rows,
)

log = logging.getLogger(__name__)

_CHUNK = 500
"""Ids per ``IN (...)`` query when importing."""


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What `import_engineers` did: ids written, in file order, and rows rejected."""

    imported: tuple[str, ...]
    rejected: tuple[RowError, ...]


def import_engineers(
    session: Session, text: str | bytes, *, now_ms: int, skip_invalid: bool = False
) -> ImportReport:
    """Upsert every engineer of a contractor CSV in the caller's transaction.

    Nothing is written if any row is invalid, unless `skip_invalid`. An id already taken by a
    user with another role is a row error. `InvalidInput` when the file as a whole is unusable.
    """
    specs, errors = parse_rows(text)
    good: list[tuple[int, EngineerSpec]] = []
    for chunk in _chunks(specs):
        ids = [s.user_id for _, s in chunk]
        roles = {
            user.id: user.role
            for user in session.execute(select(User.id, User.role).where(User.id.in_(ids)))
        }
        for line, spec in chunk:
            role = roles.get(spec.user_id, Role.ENGINEER.value)
            if role == Role.ENGINEER.value:
                good.append((line, spec))
            else:
                message = f"user {spec.user_id} exists with role {role}, not engineer"
                errors.append(RowError(line, spec.user_id, "id", message))
    errors.sort(key=lambda e: e.line)
    if errors and not skip_invalid:
        log.warning("engineer import refused: %d invalid rows", len(errors))
        return ImportReport((), tuple(errors))
    for chunk in _chunks(good):
        _write_chunk(session, [spec for _, spec in chunk], now_ms)
    log.info("imported %d engineers, rejected %d rows", len(good), len(errors))
    return ImportReport(tuple(spec.user_id for _, spec in good), tuple(errors))


def _chunks(items: list[tuple[int, EngineerSpec]]) -> Iterator[list[tuple[int, EngineerSpec]]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _write_chunk(session: Session, specs: list[EngineerSpec], now_ms: int) -> None:
    """Upsert `specs` with a handful of statements rather than a few per engineer."""
    ids = [spec.user_id for spec in specs]
    users = {u.id: u for u in session.scalars(select(User).where(User.id.in_(ids)))}
    engineers = {
        e.user_id: e for e in session.scalars(select(Engineer).where(Engineer.user_id.in_(ids)))
    }
    for spec in specs:
        user = users.get(spec.user_id)
        if user is None:
            session.add(new_user(spec, now_ms, UNUSABLE_PASSWORD))
        else:
            apply_user(user, spec)  # re-checks the role inside this transaction
    flush(session, "engineers were created concurrently by someone else; try again")
    session.execute(delete(EngineerPrice).where(EngineerPrice.engineer_id.in_(ids)))
    for spec in specs:
        apply_engineer(session, spec, engineers.get(spec.user_id), now_ms)
    session.flush()
    session.add_all([row for spec in specs for row in price_rows(spec)])
    session.flush()
