"""Every visitor's notification feed, each notice linking to what it is about."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select, update

from cloud.api.deps import ContextDep, SessionDep
from cloud.errors import NotFound
from cloud.models import Notification
from cloud.notify import NotificationKind
from cloud.portal.forms import go
from cloud.portal.render import page
from cloud.portal.session import PosterDep, VisitorDep

router = APIRouter(include_in_schema=False)

FEED = 100


def link(row: Notification) -> str | None:
    """Where a notification leads: its job's page, else its boiler's."""
    if row.kind == NotificationKind.EVALUATE and row.job_id:
        return f"/jobs/{row.job_id}#evaluate"
    if row.job_id:
        return f"/jobs/{row.job_id}"
    if row.device_id:
        return f"/boilers/{row.device_id}"
    return None


def feed_items(rows: list[Notification]) -> list[dict[str, Any]]:
    """Notifications for a template: never their data (it can hold a one-time token)."""
    return [
        {
            "id": row.id,
            "kind": row.kind,
            "title": row.title,
            "body": row.body,
            "created": row.ts_ms,
            "unread": row.read_ms is None,
            "link": link(row),
        }
        for row in rows
    ]


@router.get("/notifications", response_class=HTMLResponse)
def notifications(request: Request, visitor: VisitorDep, session: SessionDep) -> Response:
    """The visitor's notices, newest first."""
    rows = session.scalars(
        select(Notification)
        .where(Notification.user_id == visitor.caller.user_id)
        .order_by(Notification.id.desc())
        .limit(FEED)
    ).all()
    return page(request, "notifications.html", visitor, session, items=feed_items(list(rows)))


@router.post("/notifications/{notification_id}/open")
def open_notification(
    notification_id: int, visitor: PosterDep, session: SessionDep, ctx: ContextDep
) -> Response:
    """Mark one notice read and go to what it is about."""
    row = session.get(Notification, notification_id)
    if row is None or row.user_id != visitor.caller.user_id:
        raise NotFound(f"no notification {notification_id}")
    row.read_ms = row.read_ms or ctx.clock()
    target = link(row) or "/notifications"
    session.commit()
    return go(target)


@router.post("/notifications/read-all")
def read_all(visitor: PosterDep, session: SessionDep, ctx: ContextDep) -> Response:
    """Mark every notice read."""
    session.execute(
        update(Notification)
        .where(Notification.user_id == visitor.caller.user_id, Notification.read_ms.is_(None))
        .values(read_ms=ctx.clock())
    )
    session.commit()
    return go("/notifications", "All notifications marked as read.")
