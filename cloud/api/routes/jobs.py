"""Service jobs: request, authorise, confirm, cancel, answer, shortlist, choose, complete,
evaluate, and the job's thread. Who may do what is decided in `cloud.service`; a job the
caller may not see is a 404 (see `cloud.service.views`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select

from cloud.access import visible_jobs
from cloud.api.deps import API_PREFIX, CallerDep, ContextDep, SessionDep
from cloud.api.problems import AUTHENTICATED_RESPONSES
from cloud.api.schemas import (
    AuthorizationBody,
    CompletionBody,
    EvaluationBody,
    JobCreate,
    NoteBody,
    ResponseBody,
    SelectBody,
)
from cloud.db import transaction
from cloud.domain import Caller, InvitationState, JobState, Role
from cloud.errors import Forbidden
from cloud.models import Invitation, Job
from cloud.service.crowd import Principle
from cloud.service.domain import CompletionReport
from cloud.service.proof import attachment, export
from cloud.service.views import (
    invitation_json,
    job_json,
    job_thread_events,
    shortlist_json,
    visible_job,
)
from cloud.thread import event_json

router = APIRouter(prefix=API_PREFIX, tags=["service"], responses=AUTHENTICATED_RESPONSES)


def job_location(job_id: str) -> str:
    """Where a job can be read back."""
    return f"{API_PREFIX}/jobs/{job_id}"


def _job_out(session: SessionDep, caller: Caller, job: Job) -> dict[str, Any]:
    invitation = session.get(Invitation, (job.id, caller.user_id))
    return job_json(job, caller, invitation if caller.role is Role.ENGINEER else None)


@router.get("/service/catalogue")
def catalogue(caller: CallerDep, ctx: ContextDep) -> dict[str, Any]:
    """The service types and, for each, the problems a request may state."""
    rules = ctx.platform.config.rules
    types = {t: list(rules.problems(t)) for t in rules.service_types}
    return {"service_types": types, "principles": [p.value for p in Principle]}


@router.post("/jobs", status_code=201)
def create_job(
    body: JobCreate,
    caller: CallerDep,
    ctx: ContextDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> Response:
    """Raise a service request for a boiler (its owner or tenant). A tenant's request waits
    for the owner's authorisation; an owner's is validated and crowdsourced at once."""
    data = body.request_input(idempotency_key)
    job, created = ctx.platform.create_request(caller, data)
    return JSONResponse(
        job_json(job, caller),
        status_code=201 if created else 200,
        headers={"Location": job_location(job.id)},
    )


@router.get("/jobs")
def list_jobs(
    caller: CallerDep,
    session: SessionDep,
    state: Annotated[JobState | None, Query()] = None,
    device_id: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Jobs the caller may see, newest first."""
    query = select(Job).where(visible_jobs(caller))
    if state is not None:
        query = query.where(Job.state == state.value)
    if device_id is not None:
        query = query.where(Job.device_id == device_id)
    rows = session.scalars(query.order_by(Job.created_ms.desc(), Job.id).limit(limit))
    return {"items": [_job_out(session, caller, job) for job in rows]}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, caller: CallerDep, session: SessionDep) -> dict[str, Any]:
    """One job as the caller may see it."""
    return _job_out(session, caller, visible_job(session, caller, job_id))


@router.post("/jobs/{job_id}/authorize")
def authorize_job(
    job_id: str, body: AuthorizationBody, caller: CallerDep, ctx: ContextDep
) -> dict[str, Any]:
    """The owner approves (validation and crowdsourcing follow) or declines."""
    return job_json(ctx.platform.authorize(caller, job_id, body.approve, body.note), caller)


@router.post("/jobs/{job_id}/confirm")
def confirm_job(job_id: str, body: NoteBody, caller: CallerDep, ctx: ContextDep) -> dict[str, Any]:
    """Owner or support: go ahead with a flagged request (say why), or retry crowdsourcing."""
    return job_json(ctx.platform.confirm(caller, job_id, body.note), caller)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, body: NoteBody, caller: CallerDep, ctx: ContextDep) -> dict[str, Any]:
    """Cancel before the work is done (requester, owner or support)."""
    return job_json(ctx.platform.cancel(caller, job_id, body.note), caller)


@router.get("/jobs/{job_id}/invitations")
def job_invitations(job_id: str, caller: CallerDep, session: SessionDep) -> dict[str, Any]:
    """Who was invited and why (W and constraint figures), and their answers. An engineer
    sees only their own invitation."""
    job = visible_job(session, caller, job_id)
    query = select(Invitation).where(Invitation.job_id == job.id)
    if caller.role is Role.ENGINEER:
        query = query.where(Invitation.engineer_id == caller.user_id)
    rows = session.scalars(query.order_by(Invitation.performance.desc(), Invitation.engineer_id))
    return {"items": [invitation_json(row) for row in rows]}


@router.post("/jobs/{job_id}/response")
def respond(job_id: str, body: ResponseBody, caller: CallerDep, ctx: ContextDep) -> dict[str, Any]:
    """An invited engineer answers before the deadline: availability, quote, location."""
    return invitation_json(ctx.platform.respond(caller, job_id, body.response_input()))


@router.get("/jobs/{job_id}/shortlist")
def shortlist(
    job_id: str,
    caller: CallerDep,
    session: SessionDep,
    ctx: ContextDep,
    principle: Annotated[Principle | None, Query()] = None,
) -> dict[str, Any]:
    """The top available engineers ranked by `principle` (default: the request's); 0% is
    best. Each with distance, travel time, CO2 estimate, quote and performance figures."""
    job = visible_job(session, caller, job_id)
    if caller.role is Role.ENGINEER:
        raise Forbidden("engineers do not see the shortlist")
    chosen = principle or Principle(job.principle)
    return shortlist_json(session, ctx.platform.config, job, chosen)


@router.post("/jobs/{job_id}/select")
def select_engineer(
    job_id: str, body: SelectBody, caller: CallerDep, session: SessionDep, ctx: ContextDep
) -> dict[str, Any]:
    """The owner chooses a shortlisted engineer; the contract is formed and everyone told."""
    principle = body.principle
    if principle is None:
        principle = Principle(visible_job(session, caller, job_id).principle)
    session.rollback()
    return job_json(ctx.platform.select(caller, job_id, body.engineer_id, principle), caller)


@router.post("/jobs/{job_id}/complete")
def complete_job(
    job_id: str, body: CompletionBody, caller: CallerDep, ctx: ContextDep
) -> dict[str, Any]:
    """The contracted engineer reports the work; the platform then cross-checks live data.
    While the boiler is still locked out, the engineer may now restart it."""
    report = CompletionReport(body.cause, body.actions, tuple(body.parts))
    return job_json(ctx.platform.complete(caller, job_id, report), caller)


@router.post("/jobs/{job_id}/evaluation")
def evaluate_job(
    job_id: str, body: EvaluationBody, caller: CallerDep, ctx: ContextDep
) -> dict[str, Any]:
    """The boiler's end user rates a verified job once, with the token they were sent.
    Returns the engineer's CS and SQ before and after (eqs. 15-16)."""
    return ctx.platform.evaluate(caller, job_id, body.token, body.cs, body.sq, body.comment)


@router.get("/jobs/{job_id}/thread")
def job_thread(
    job_id: str,
    caller: CallerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> dict[str, Any]:
    """The job's proof, in order: request and its evidence, validation, analysis,
    crowdsourcing, responses, shortlist, contract, report, the engineer's restarts and their
    acks, verification and evaluation."""
    job = visible_job(session, caller, job_id)
    if caller.role is Role.ENGINEER and caller.user_id != job.engineer_id:
        raise Forbidden("only the contracted engineer sees a job's thread")
    rows = job_thread_events(session, job, limit)
    return {"job_id": job.id, "events": [event_json(e) for e in rows]}


@router.get("/invitations")
def my_invitations(
    caller: CallerDep,
    session: SessionDep,
    state: Annotated[InvitationState | None, Query()] = None,
) -> dict[str, Any]:
    """The calling engineer's invitations (open ones first), each with its job."""
    if caller.role is not Role.ENGINEER:
        raise Forbidden("only engineers have invitations")
    query = select(Invitation, Job).join(Job, Job.id == Invitation.job_id)
    query = query.where(Invitation.engineer_id == caller.user_id)
    if state is not None:
        query = query.where(Invitation.state == state.value)
    found = session.execute(query.order_by(Invitation.invited_ms.desc()).limit(200)).all()
    rows = sorted(found, key=lambda r: r[0].state != "open")
    return {"items": [invitation_json(i) | {"job": job_json(j, caller)} for i, j in rows]}


@router.get(
    "/jobs/{job_id}/proof",
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}}, "description": "the proof bundle (a zip)"},
        409: {"description": "the job predates the chained thread"},
    },
)
def job_proof(job_id: str, caller: CallerDep, ctx: ContextDep) -> Response:
    """The job's proof bundle: its thread chained to a signed checkpoint, the boiler's signed
    messages, the signed commands and the keys, for ``boilertwin verify-proof`` (or any COSE
    library) to check offline."""
    with transaction(ctx.sessions) as session:
        bundle = export(
            session,
            caller,
            job_id,
            key=ctx.commands.key,
            keys_dir=ctx.settings.keys_dir,
            now_ms=ctx.clock(),
        )
    return Response(bundle, media_type="application/zip", headers=attachment(job_id))
