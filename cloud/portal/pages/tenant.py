"""The tenant's main page, "My boiler", and the service-request form.

This router hosts ``GET /tenant`` and, included from `cloud.portal.pages.requests`, the
request form ``GET /requests/new?device=ID`` and ``POST /requests`` (owners use them too).

``/tenant`` shows each boiler the tenant lives with (`visible_devices`, as the API), its
'now' panel kept live by the boiler page's stream, the annual-check reminder, the tenant's
requests (`visible_jobs`), a prompt to rate each verified repair they may rate, and their
newest notifications (never a notification's data: it can hold a one-time token).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.access import visible_devices, visible_jobs
from cloud.api.deps import ApiContext, ContextDep, SessionDep
from cloud.domain import Caller, JobState, Role
from cloud.errors import Forbidden
from cloud.models import Device, Job, Notification, Reminder
from cloud.notify import NotificationKind
from cloud.portal.pages import requests
from cloud.portal.pages.boilers import now_panel, open_job
from cloud.portal.pages.notifications import feed_items
from cloud.portal.render import page
from cloud.portal.session import VisitorDep
from cloud.service.delivery import job_end_user

router = APIRouter(include_in_schema=False)
router.include_router(requests.router)

MY_REQUESTS = 50
RECENT_NOTICES = 5
ANNUAL_CHECK = "annual_check"
"""The service type an annual-check reminder asks for (see `cloud.service.reminders`)."""
REMINDER_SHOWN_DAYS = 180
"""A reminder stays on the page this long after its due date if nothing was done."""
CLOSED = (JobState.DECLINED.value, JobState.CANCELLED.value)


def only_for(caller: Caller, role: Role, people: str) -> None:
    """`Forbidden` unless the caller has `role` (a main page is for one role)."""
    if caller.role is not role:
        raise Forbidden(f"this page is for {people}", role=caller.role.value)


def my_boilers(session: Session, caller: Caller) -> list[Device]:
    """The boilers the caller may see, as the API lists them."""
    return list(session.scalars(select(Device).where(visible_devices(caller)).order_by(Device.id)))


def may_rate(job: Job, caller: Caller, now_ms: int) -> bool:
    """Whether the caller may rate `job` now: verified, open to rating, theirs, not expired."""
    return (
        job.state == JobState.VERIFIED
        and job.evaluation_token_hash is not None
        and job_end_user(job) == caller.user_id
        and int(job.evaluation.get("token_expires", 0)) >= now_ms
    )


def to_rate(session: Session, caller: Caller, now_ms: int) -> list[Job]:
    """The caller's visible jobs they may rate now, newest first."""
    rows = session.scalars(
        select(Job)
        .where(visible_jobs(caller), Job.evaluation_token_hash.is_not(None))
        .order_by(Job.created_ms.desc(), Job.id)
    )
    return [job for job in rows if may_rate(job, caller, now_ms)]


def my_requests(session: Session, caller: Caller) -> list[Job]:
    """The jobs the caller may see, newest first."""
    return list(
        session.scalars(
            select(Job)
            .where(visible_jobs(caller))
            .order_by(Job.created_ms.desc(), Job.id)
            .limit(MY_REQUESTS)
        )
    )


def recent_notices(session: Session, user_id: str) -> list[dict[str, Any]]:
    """The user's newest notifications, without their data."""
    rows = session.scalars(
        select(Notification)
        .where(Notification.user_id == user_id)
        .order_by(Notification.id.desc())
        .limit(RECENT_NOTICES)
    ).all()
    return feed_items(list(rows))


def reminder_due(session: Session, caller: Caller, device: Device, today: dt.date) -> str | None:
    """The due date (ISO) of the boiler's latest annual-check reminder, if still relevant.

    The reminder row is the record; the caller's own notice stands in if there is none.
    """
    oldest = (today - dt.timedelta(days=REMINDER_SHOWN_DAYS)).isoformat()
    row = session.scalars(
        select(Reminder)
        .where(Reminder.device_id == device.id, Reminder.due_date >= oldest)
        .order_by(Reminder.due_date.desc())
        .limit(1)
    ).first()
    if row is not None:
        return row.due_date
    notice = session.scalars(
        select(Notification)
        .where(
            Notification.user_id == caller.user_id,
            Notification.kind == NotificationKind.ANNUAL_CHECK_DUE,
            Notification.device_id == device.id,
        )
        .order_by(Notification.id.desc())
        .limit(1)
    ).first()
    due = notice.data.get("due") if notice is not None else None  # the date only, never shown
    return due if isinstance(due, str) and due >= oldest else None


def annual_reminder(
    session: Session, caller: Caller, device: Device, now_ms: int
) -> dict[str, Any] | None:
    """The annual check due on the boiler, and the request already raised for it, if any."""
    today = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).date()  # as the scheduler counts
    due = reminder_due(session, caller, device, today)
    if due is None:
        return None
    try:
        day = dt.date.fromisoformat(due)
    except ValueError:
        return None
    # A request raised in the year before the due date answers this reminder.
    since = dt.datetime.combine(day - dt.timedelta(days=365), dt.time(), dt.UTC)
    raised = session.scalars(
        select(Job)
        .where(
            visible_jobs(caller),
            Job.device_id == device.id,
            Job.service_type == ANNUAL_CHECK,
            Job.state.not_in(CLOSED),
            Job.created_ms >= int(since.timestamp() * 1000),
        )
        .order_by(Job.created_ms.desc())
        .limit(1)
    ).first()
    return {
        "due": due,
        "due_text": day.strftime("%-d %b %Y"),
        "overdue": day < today,
        "job": raised,
    }


def boiler_cards(
    session: Session, ctx: ApiContext, caller: Caller, devices: list[Device]
) -> list[dict[str, Any]]:
    """What the page shows per boiler: the 'now' panel, a request in progress, a reminder."""
    now = ctx.clock()
    return [
        {
            "device": device,
            "twin": now_panel(session, ctx, caller, device),
            "open_job": open_job(session, caller, device.id),
            "reminder": annual_reminder(session, caller, device, now),
            # Element ids are plain with one boiler (as on the boiler page), else suffixed.
            "suffix": "" if len(devices) == 1 else f"-{device.id}",
        }
        for device in devices
    ]


@router.get("/tenant", response_class=HTMLResponse)
def tenant_page(
    request: Request, visitor: VisitorDep, session: SessionDep, ctx: ContextDep
) -> Response:
    """My boiler: its state now, what to do, my requests and notices."""
    caller = visitor.caller
    only_for(caller, Role.TENANT, "tenants")
    now = ctx.clock()
    return page(
        request,
        "tenant.html",
        visitor,
        session,
        boilers=boiler_cards(session, ctx, caller, my_boilers(session, caller)),
        jobs=my_requests(session, caller),
        rate=to_rate(session, caller, now),
        notices=recent_notices(session, caller.user_id),
    )
