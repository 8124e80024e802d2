"""The audit log: every state-changing request (POST, PUT, PATCH, DELETE) to the API or the
portal, whatever its outcome: who (the authenticated caller, which the request's dependency
leaves in ``request.state.caller``), as what role, when, what (method, route, path, the job
or boiler it names), from which address, and how it ended. Admins read it at
``GET /api/v1/audit``; a job's entries go into its proof bundle (`cloud.service.proof`).

Written after the response, in its own transaction, off the event loop; a failure to write
is logged and counted (``boilertwin_audit_failures_total``), never turned into an error for
the person who acted.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Query
from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.access import require_role
from cloud.api.deps import API_PREFIX, CallerDep, SessionDep
from cloud.api.metrics import route_template
from cloud.api.problems import AUTHENTICATED_RESPONSES
from cloud.db import transaction
from cloud.domain import Caller, Clock, Role
from cloud.evidence_models import AuditEntry

log = logging.getLogger(__name__)

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUDIT_FAILURES = Counter(
    "boilertwin_audit_failures_total", "Audit entries that could not be written"
)
ADMIN = frozenset({Role.ADMIN})

router = APIRouter(prefix=API_PREFIX, tags=["ops"], responses=AUTHENTICATED_RESPONSES)


class AuditTrail:
    """ASGI middleware writing one `AuditEntry` per state-changing request."""

    def __init__(self, app: ASGIApp, sessions: sessionmaker[Session], clock: Clock) -> None:
        self.app, self.sessions, self.clock = app, sessions, clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in CHANGES:
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            entry = entry_for(scope, status, self.clock())
            await run_in_threadpool(self._write, entry)

    def _write(self, entry: AuditEntry) -> None:
        try:
            with transaction(self.sessions) as session:
                session.add(entry)
        except SQLAlchemyError as exc:
            AUDIT_FAILURES.inc()
            log.error("audit entry for %s %s not written: %s", entry.method, entry.path, exc)


def entry_for(scope: Scope, status: int, now_ms: int) -> AuditEntry:
    caller = scope.get("state", {}).get("caller")
    params = scope.get("path_params") or {}
    client = scope.get("client")
    return AuditEntry(
        ts_ms=now_ms,
        actor=caller.user_id if isinstance(caller, Caller) else None,
        role=caller.role.value if isinstance(caller, Caller) else None,
        method=str(scope.get("method", ""))[:8],
        route=route_template(scope)[:200],
        path=str(scope.get("path", ""))[:500],
        address=(client[0] if client else "unknown")[:64],
        status=status,
        outcome="done" if status < 400 else "refused" if status < 500 else "failed",
        job_id=_text(params.get("job_id"), 36),
        device_id=_text(params.get("device_id"), 63),
    )


def _text(value: object, limit: int) -> str | None:
    return str(value)[:limit] if value is not None else None


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "ts": entry.ts_ms,
        "actor": entry.actor,
        "role": entry.role,
        "method": entry.method,
        "route": entry.route,
        "path": entry.path,
        "address": entry.address,
        "status": entry.status,
        "outcome": entry.outcome,
        "job_id": entry.job_id,
        "device_id": entry.device_id,
    }


@router.get("/audit")
def audit_log(
    caller: CallerDep,
    session: SessionDep,
    actor: str | None = Query(default=None, max_length=64),
    job_id: str | None = Query(default=None, max_length=36),
    device_id: str | None = Query(default=None, max_length=63),
    outcome: str | None = Query(default=None, pattern="^(done|refused|failed)$"),
    before: int | None = Query(default=None, ge=1, description="entries with a smaller id"),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    """State-changing requests, newest first (admin only); page with ``before``."""
    require_role(caller, ADMIN, "read the audit log")
    query = select(AuditEntry)
    for column, value in (
        (AuditEntry.actor, actor),
        (AuditEntry.job_id, job_id),
        (AuditEntry.device_id, device_id),
        (AuditEntry.outcome, outcome),
    ):
        if value is not None:
            query = query.where(column == value)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    rows = session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)).all()
    return {
        "items": [entry_json(row) for row in rows],
        "next_before": rows[-1].id if len(rows) == limit else None,
    }
