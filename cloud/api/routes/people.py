"""Engineer profiles (user twins) and every user's notification feed.

Profiles: support and admin see every engineer; an engineer sees their own; an owner or
tenant sees the engineers invited to jobs they can see (to choose, and to know who comes).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select, update

from cloud.access import may_see_engineer
from cloud.api.deps import API_PREFIX, CallerDep, ContextDep, SessionDep
from cloud.api.params import AFTER, ID_PATH
from cloud.api.problems import AUTHENTICATED_RESPONSES
from cloud.api.schemas import EngineerAvailability
from cloud.db import transaction
from cloud.errors import Forbidden, NotFound
from cloud.models import Engineer, Notification, User
from cloud.notify import notification_json
from cloud.service.engineers import engineer_json, list_engineers, load_engineer

router = APIRouter(prefix=API_PREFIX, tags=["people"], responses=AUTHENTICATED_RESPONSES)


@router.get("/engineers")
def engineers(caller: CallerDep, session: SessionDep) -> dict[str, Any]:
    """Every engineer's profile with AR, CS and SQ (support and admin)."""
    if not caller.is_staff:
        raise Forbidden("only support and admin list every engineer", role=caller.role.value)
    return {"items": list_engineers(session)}


@router.get("/engineers/{engineer_id}")
def engineer(engineer_id: str, caller: CallerDep, session: SessionDep) -> dict[str, Any]:
    """One engineer's profile: qualifications, skills, AR, CS, SQ, pricing history."""
    if not may_see_engineer(session, caller, engineer_id):
        raise NotFound(f"engineer {engineer_id} not found", user_id=engineer_id)
    row, prices = load_engineer(session, engineer_id)
    user = session.get(User, engineer_id)
    return engineer_json(row, prices, user.display_name if user else "")


@router.put("/engineers/{engineer_id}/availability")
def set_availability(
    engineer_id: str, body: EngineerAvailability, caller: CallerDep, ctx: ContextDep
) -> dict[str, Any]:
    """An engineer takes work or pauses (on leave); paused engineers are not invited."""
    if caller.user_id != engineer_id and not caller.is_staff:
        raise Forbidden("engineers set their own availability")
    with transaction(ctx.sessions) as session:
        row = session.get(Engineer, engineer_id)
        if row is None:
            raise NotFound(f"engineer {engineer_id} not found", user_id=engineer_id)
        row.available = body.available
        row.updated_ms = ctx.clock()
    return {"id": engineer_id, "available": body.available}


@router.get("/notifications")
def notifications(
    caller: CallerDep,
    session: SessionDep,
    unread: bool = False,
    after: Annotated[int, AFTER] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """The caller's notification feed, newest first (``after``: only ids above it)."""
    query = select(Notification).where(Notification.user_id == caller.user_id)
    if unread:
        query = query.where(Notification.read_ms.is_(None))
    if after:
        query = query.where(Notification.id > after)
    rows = session.scalars(query.order_by(Notification.id.desc()).limit(limit))
    return {"items": [notification_json(row) for row in rows]}


@router.post("/notifications/{notification_id}/read")
def mark_read(
    notification_id: Annotated[int, ID_PATH], caller: CallerDep, ctx: ContextDep
) -> dict[str, Any]:
    """Mark one of the caller's notifications read."""
    with transaction(ctx.sessions) as session:
        row = session.get(Notification, notification_id)
        if row is None or row.user_id != caller.user_id:
            raise NotFound(f"no notification {notification_id}")
        row.read_ms = row.read_ms or ctx.clock()
        return notification_json(row)


@router.post("/notifications/read-all")
def mark_all_read(caller: CallerDep, ctx: ContextDep) -> dict[str, Any]:
    """Mark every unread notification of the caller read."""
    with transaction(ctx.sessions) as session:
        result = session.execute(
            update(Notification)
            .where(Notification.user_id == caller.user_id, Notification.read_ms.is_(None))
            .values(read_ms=ctx.clock())
        )
    return {"marked": result.rowcount}  # type: ignore[attr-defined]
