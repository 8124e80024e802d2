"""The engineer's own page: invitations to answer (open ones first), the jobs they are
contracted on, their profile figures (AR, CS, SQ) and whether they take work now.

The invitations are the API's ``GET /invitations``; the availability switch does what
``PUT /engineers/{id}/availability`` does, for the engineer themself.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.api.deps import ContextDep, SessionDep
from cloud.api.schemas import EngineerAvailability
from cloud.db import transaction
from cloud.domain import INVITED_STATES, Caller, InvitationState, Role
from cloud.errors import Forbidden, NotFound
from cloud.models import Engineer, Invitation, Job, User
from cloud.portal.forms import act, parse
from cloud.portal.render import page
from cloud.portal.session import PosterDep, VisitorDep
from cloud.service.engineers import engineer_json, load_engineer

router = APIRouter(include_in_schema=False)

INVITATIONS = 200
"""As the API's invitation list."""
MY_JOBS = 100
ENGAGED = (InvitationState.OPEN.value, InvitationState.ACCEPTED.value)


def require_engineer(caller: Caller) -> None:
    """`Forbidden` for anyone but an engineer."""
    if caller.role is not Role.ENGINEER:
        raise Forbidden("this page is for engineers", role=caller.role.value)


def invitations(session: Session, engineer_id: str) -> list[dict[str, Any]]:
    """The engineer's invitations with their jobs, open first (the API's query), each saying
    whether the job page is open to them (it is not once the invitation is closed)."""
    query = select(Invitation, Job).join(Job, Job.id == Invitation.job_id)
    query = query.where(Invitation.engineer_id == engineer_id)
    found = session.execute(query.order_by(Invitation.invited_ms.desc()).limit(INVITATIONS)).all()
    rows = sorted(found, key=lambda r: r[0].state != "open")
    invited_states = {s.value for s in INVITED_STATES}
    return [
        {
            "invitation": invitation,
            "job": job,
            "open": invitation.state == InvitationState.OPEN and job.state == "crowdsourcing",
            "visible": job.engineer_id == engineer_id
            or (invitation.state in ENGAGED and job.state in invited_states),
        }
        for invitation, job in rows
    ]


def profile(session: Session, engineer_id: str) -> dict[str, Any] | None:
    """The engineer's profile as the API shows it; None if they have none yet."""
    try:
        row, prices = load_engineer(session, engineer_id)
    except NotFound:
        return None
    user = session.get(User, engineer_id)
    return engineer_json(row, prices, user.display_name if user else "")


@router.get("/engineer", response_class=HTMLResponse)
def engineer_page(request: Request, visitor: VisitorDep, session: SessionDep) -> Response:
    """Invitations, my jobs and my profile."""
    caller = visitor.caller
    require_engineer(caller)
    jobs = session.scalars(
        select(Job)
        .where(Job.engineer_id == caller.user_id)
        .order_by(Job.created_ms.desc(), Job.id)
        .limit(MY_JOBS)
    ).all()
    return page(
        request,
        "engineer.html",
        visitor,
        session,
        invitations=invitations(session, caller.user_id),
        my_jobs=jobs,
        profile=profile(session, caller.user_id),
    )


@router.post("/engineer/availability")
def set_availability(
    visitor: PosterDep,
    ctx: ContextDep,
    available: Annotated[str, Form()] = "",
) -> Response:
    """Take work, or pause (paused engineers are not invited)."""
    caller = visitor.caller
    require_engineer(caller)

    def switch() -> str:
        body = parse(EngineerAvailability, {"available": available})
        with transaction(ctx.sessions) as session:
            row = session.get(Engineer, caller.user_id)
            if row is None:
                raise NotFound(f"engineer {caller.user_id} not found", user_id=caller.user_id)
            row.available = body.available
            row.updated_ms = ctx.clock()
        if body.available:
            return "You are available: you will be invited to new jobs."
        return "You are paused: you will not be invited until you switch back."

    return act("/engineer", switch)
