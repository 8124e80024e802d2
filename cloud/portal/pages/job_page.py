"""What the job page shows, gathered for one visitor: the job as the API shows it to them,
its progress, the boiler, the shortlist, the contracted engineer's tools and the thread.

Every piece is computed as the matching API route computes it (same visibility, same
queries), so the page never shows a visitor more than the API would.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.access import can_see
from cloud.api.deps import ApiContext
from cloud.domain import Caller, InvitationState, JobState, Role
from cloud.models import Device, Engineer, Invitation, Job, Notification, ThreadEvent, Twin
from cloud.notify import NotificationKind
from cloud.portal.charts import chart_svg, lines_from
from cloud.portal.pages.boilers import CHARTS, now_panel
from cloud.portal.pages.commands import command_on_page, new_key
from cloud.portal.render import Formats, name_lookup
from cloud.portal.timeline import describe
from cloud.service.crowd import Principle
from cloud.service.delivery import job_end_user
from cloud.service.requests import decider
from cloud.service.views import job_json, job_thread_events, shortlist_json
from cloud.twin.figures import timeseries
from protocols.reference import fault_name, fault_text

CHART_SPAN_MS = 6 * 3_600_000
"""The contracted engineer's telemetry: the last 6 hours."""
CHART_POINTS = 300
THREAD_LIMIT = 500
"""As the API's job thread route's default."""
ENGINEER_CHARTS = ("Temperatures", "Water pressure")
AFTER_SHORTLIST = frozenset(
    {
        JobState.SHORTLISTED,
        JobState.CONTRACTED,
        JobState.COMPLETED,
        JobState.VERIFIED,
        JobState.FAILED_VERIFICATION,
        JobState.EVALUATED,
    }
)
"""States in which a shortlist exists (to choose from, then to look back on)."""
RESTART_STATES = frozenset({JobState.CONTRACTED, JobState.COMPLETED})
"""While the contracted engineer still sees the boiler and may come to restart it."""


def progress(job: Job, invited: bool) -> list[tuple[str, bool]]:
    """The steps of a job's road, each with whether it was reached."""
    owner_raised = job.requested_by == decider(job)
    authorised = job.authorized_by is not None or (
        owner_raised and job.state != JobState.PENDING_AUTHORIZATION
    )
    shortlisted = job.state == JobState.SHORTLISTED or job.engineer_id is not None
    return [
        ("Requested", True),
        ("Authorised", authorised),
        ("Engineers invited", invited),
        ("Shortlist", shortlisted),
        ("Contract", job.engineer_id is not None),
        ("Repair reported", job.completed_ms is not None),
        ("Verified", job.verified_ms is not None),
        ("Rated", "cs" in job.evaluation),
    ]


def shortlist_view(
    session: Session, ctx: ApiContext, job: Job, principle: Principle | None
) -> dict[str, Any]:
    """The shortlist exactly as ``GET /jobs/{id}/shortlist`` answers it."""
    chosen = principle or Principle(job.principle)
    return shortlist_json(session, ctx.platform.config, job, chosen)


def thread_events(session: Session, job: Job) -> list[ThreadEvent]:
    """The job's thread, oldest first: the API's ``job_thread`` query."""
    return job_thread_events(session, job, THREAD_LIMIT)


def engineer_charts(
    session: Session, ctx: ApiContext, device_id: str, now: int
) -> list[tuple[str, Any]]:
    """Temperatures and water pressure over the last 6 hours, as SVG."""
    wanted = {title: CHARTS[title] for title in ENGINEER_CHARTS}
    since = now - CHART_SPAN_MS
    series = timeseries(
        session,
        device_id,
        [p for chart in wanted.values() for p in chart],
        since,
        now,
        None,
        CHART_POINTS,
    )["points"]
    when = Formats(ctx.settings.portal_timezone).when
    return [
        (title, chart_svg(title, lines_from(series, labels), since, now, when))
        for title, labels in wanted.items()
    ]


def evaluation_token(session: Session, user_id: str, job_id: str) -> str | None:
    """The one-time token from the visitor's newest "rate the service" notice for the job."""
    row = session.scalars(
        select(Notification)
        .where(
            Notification.user_id == user_id,
            Notification.kind == NotificationKind.EVALUATE,
            Notification.job_id == job_id,
        )
        .order_by(Notification.id.desc())
        .limit(1)
    ).first()
    token = row.data.get("evaluation_token") if row is not None else None
    return token if isinstance(token, str) else None


def job_page_values(
    session: Session,
    ctx: ApiContext,
    caller: Caller,
    job: Job,
    principle: Principle | None,
    command: str | None,
) -> dict[str, Any]:
    """Everything the job page template needs for `caller` (who may see `job`)."""
    me = caller.user_id
    engineer = caller.role is Role.ENGINEER
    contracted = engineer and job.engineer_id == me
    invitation = session.get(Invitation, (job.id, me)) if engineer else None
    state = JobState(job.state)
    device = session.get(Device, job.device_id)
    # An engineer who is only invited may still open the boiler (API rules), but the job
    # page keeps to what they need to answer: no live panel, no people, no address.
    sees_boiler = (
        device is not None
        and not (engineer and not contracted)
        and can_see(session, caller, device)
    )
    invited = session.scalar(
        select(func.count()).select_from(Invitation).where(Invitation.job_id == job.id)
    )
    values: dict[str, Any] = {
        "job": job_json(job, caller, invitation),
        "invited_only": engineer and not contracted,
        "contracted": contracted,
        "steps": progress(job, bool(invited)),
        "twin": None,
        "may_authorize": me == decider(job) and state is JobState.PENDING_AUTHORIZATION,
        "may_confirm": (caller.is_staff or me == decider(job))
        and state in (JobState.FLAGGED, JobState.NO_ENGINEERS),
        "may_cancel": (caller.is_staff or me in (job.requested_by, job.owner_id))
        and state.cancellable,
        "shortlist": None,
        "may_choose": False,
        "invitation": invitation,
        "may_respond": invitation is not None
        and invitation.state == InvitationState.OPEN
        and state is JobState.CROWDSOURCING,
        "restart": None,
        "charts": [],
        "may_complete": contracted and state is JobState.CONTRACTED,
        "end_user": me == job_end_user(job),
        "evaluation_open": job.evaluation_token_hash is not None and state is JobState.VERIFIED,
        "events": [],
    }
    if sees_boiler and device is not None:
        values["twin"] = now_panel(session, ctx, caller, device)
    if not engineer and state in AFTER_SHORTLIST:
        values["shortlist"] = shortlist_view(session, ctx, job, principle)
        values["may_choose"] = me == decider(job) and state is JobState.SHORTLISTED
    if contracted and sees_boiler and device is not None:
        now = ctx.clock()
        values["charts"] = engineer_charts(session, ctx, device.id, now)
        if state in RESTART_STATES:
            cause = job.report.get("cause")
            values["restart"] = {
                "device_id": device.id,
                "refusal": ctx.commands.restart_refusal(session, caller, device),
                "back": f"/jobs/{job.id}",
                "restart_key": new_key(),
                "restart_reason": f"Repair reported: {cause}" if cause else "",
                "command": command_on_page(session, caller, device.id, command, now),
            }
    if not engineer or contracted:
        name_of = name_lookup(session)
        values["events"] = [(e, describe(e, name_of)) for e in thread_events(session, job)]
    values["about_boiler"] = (
        about_boiler(session, device) if engineer and not contracted and device else None
    )
    values["home"] = engineer_home(session, me) if engineer else None
    return values


def about_boiler(session: Session, device: Device) -> dict[str, Any]:
    """What an invited engineer needs to decide, and no more: the model, the fault now, the
    area (the town of the address, or the position to about 10 km), a link to the twin (whose
    page hides the people)."""
    twin = session.get(Twin, device.id)
    code = twin.fault_code if twin is not None else None
    area = None
    if device.address and "," in device.address:
        area = device.address.rsplit(",", 1)[1].strip()
    elif device.lat is not None and device.lon is not None:
        area = f"near {device.lat:.1f}, {device.lon:.1f}"
    return {
        "id": device.id,
        "model": device.model,
        "fault": fault_name(code) if code else None,
        "fault_text": fault_text(code) if code else None,
        "area": area,
    }


def engineer_home(session: Session, engineer_id: str) -> dict[str, float] | None:
    """The engineer's saved base (their profile's home), for the answer form's place picker."""
    row = session.get(Engineer, engineer_id)
    return {"lat": row.home_lat, "lon": row.home_lon} if row is not None else None
