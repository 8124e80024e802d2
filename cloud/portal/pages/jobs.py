"""Service jobs in the portal: the list, one job's page for everyone around it, and its forms
(authorise, confirm, cancel, answer an invitation, choose from the shortlist, report the
repair, rate the service).

Every form is the API's route for the same action: the same schema checks the fields
(`cloud.portal.forms.parse`) and the same `ServicePlatform` call decides, so a refusal reads
exactly as the API's problem detail would.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from cloud.access import visible_jobs
from cloud.api.deps import ContextDep, SessionDep
from cloud.api.schemas import (
    AuthorizationBody,
    CompletionBody,
    EvaluationBody,
    NoteBody,
    ResponseBody,
    SelectBody,
)
from cloud.db import transaction
from cloud.errors import Forbidden, InvalidInput
from cloud.models import Job
from cloud.portal.feed import job_key, twin_key
from cloud.portal.forms import act, parse
from cloud.portal.live import Snapshot, live_response
from cloud.portal.pages.job_page import evaluation_token, job_page_values
from cloud.portal.render import JOB_STATE_WORDS, fragment, page, words
from cloud.portal.session import PosterDep, VisitorDep
from cloud.service.crowd import Principle
from cloud.service.domain import CompletionReport
from cloud.service.proof import attachment, export
from cloud.service.views import visible_job

router = APIRouter(include_in_schema=False)

LIST_LIMIT = 200
"""The API's largest page of jobs."""
PRINCIPLE_NAMES = {
    Principle.LOW_CARBON.value: "Low carbon (shortest trip)",
    Principle.LOW_COST.value: "Low cost (quote nearest the estimate)",
    Principle.CHEAPEST.value: "Cheapest quote",
}

Text = Annotated[str, Form()]


def _state_said(job: Job) -> str:
    return words(job.state, JOB_STATE_WORDS)


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    visitor: VisitorDep,
    session: SessionDep,
    state: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    """The jobs the visitor may see, newest first, optionally in one state."""
    query = select(Job).where(visible_jobs(visitor.caller))
    if state:
        if state not in JOB_STATE_WORDS:
            raise InvalidInput(f"unknown job state {state!r}", field="state")
        query = query.where(Job.state == state)
    rows = session.scalars(query.order_by(Job.created_ms.desc(), Job.id).limit(LIST_LIMIT)).all()
    return page(
        request,
        "jobs.html",
        visitor,
        session,
        jobs=rows,
        state=state,
        states=JOB_STATE_WORDS,
    )


@router.get("/jobs/{job_id}/live")
def job_live(
    request: Request, job_id: str, visitor: VisitorDep, session: SessionDep, ctx: ContextDep
) -> Response:
    """The job's state, steps and thread, again whenever the job or its boiler changes (SSE
    events ``job-state``, ``job-progress``, ``job-thread``), so the page follows the job
    without a reload."""
    caller = visitor.caller
    job = visible_job(session, caller, job_id)  # 404 before the stream starts
    device_id = job.device_id
    session.close()

    def look() -> Snapshot:
        with ctx.sessions() as live:
            row = visible_job(live, caller, job_id)
            values = job_page_values(live, ctx, caller, row, None, None)
            events, steps = values["events"], values["steps"]
            key = (row.state, row.updated_ms, events[-1][0].id if events else 0)
            state = fragment(request, "_job_state.html", job=values["job"])
            return Snapshot(
                key,
                state,
                final=False,
                more=(
                    (
                        "job-progress",
                        fragment(request, "_job_progress.html", steps=steps),
                    ),
                    ("job-thread", fragment(request, "_job_thread.html", events=events)),
                ),
            )

    return live_response(request, "job-state", (job_key(job_id), twin_key(device_id)), look)


@router.get("/jobs/{job_id}/proof")
def job_proof(job_id: str, visitor: VisitorDep, ctx: ContextDep) -> Response:
    """The job's proof bundle (the API's ``GET /api/v1/jobs/{id}/proof``), as a download."""
    with transaction(ctx.sessions) as session:
        bundle = export(
            session,
            visitor.caller,
            job_id,
            key=ctx.commands.key,
            keys_dir=ctx.settings.keys_dir,
            now_ms=ctx.clock(),
        )
    return Response(bundle, media_type="application/zip", headers=attachment(job_id))


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(
    request: Request,
    job_id: str,
    visitor: VisitorDep,
    session: SessionDep,
    ctx: ContextDep,
    principle: Annotated[Principle | None, Query()] = None,
    command: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """One job as the visitor may see it, with what they may do about it."""
    job = visible_job(session, visitor.caller, job_id)
    values = job_page_values(session, ctx, visitor.caller, job, principle, command)
    return page(
        request,
        "job.html",
        visitor,
        session,
        principles=PRINCIPLE_NAMES,
        **values,
    )


def _back(job_id: str) -> str:
    return f"/jobs/{job_id}"


@router.post("/jobs/{job_id}/authorize")
def authorize(
    job_id: str, visitor: PosterDep, ctx: ContextDep, approve: Text = "", note: Text = ""
) -> Response:
    """The owner approves or declines a tenant's request (two buttons, one form)."""

    def decide() -> str:
        body = parse(AuthorizationBody, {"approve": approve, "note": note})
        job = ctx.platform.authorize(visitor.caller, job_id, body.approve, body.note)
        said = "Approved" if body.approve else "Declined"
        return f"{said}. The request is now: {_state_said(job)}."

    return act(_back(job_id), decide)


@router.post("/jobs/{job_id}/confirm")
def confirm(job_id: str, visitor: PosterDep, ctx: ContextDep, note: Text = "") -> Response:
    """The owner or support goes ahead with a flagged request (or retries one nobody took)."""

    def go_ahead() -> str:
        body = parse(NoteBody, {"note": note})
        job = ctx.platform.confirm(visitor.caller, job_id, body.note)
        return f"Confirmed. The request is now: {_state_said(job)}."

    return act(_back(job_id), go_ahead)


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, visitor: PosterDep, ctx: ContextDep, reason: Text = "") -> Response:
    """The requester, the owner or support cancels before the work is done."""

    def call_off() -> str:
        body = parse(NoteBody, {"note": reason})
        ctx.platform.cancel(visitor.caller, job_id, body.note)
        return "The request was cancelled; everyone involved has been told."

    return act(_back(job_id), call_off)


@router.post("/jobs/{job_id}/respond")
def respond(
    job_id: str,
    visitor: PosterDep,
    ctx: ContextDep,
    available: Text = "",
    quote: Text = "",
    lat: Text = "",
    lon: Text = "",
    note: Text = "",
) -> Response:
    """An invited engineer answers: available or not, and if so a quote and where from."""

    def answer() -> str | tuple[str, str]:
        fields: dict[str, Any] = {"available": available, "note": note.strip()}
        if quote.strip():
            fields["quote"] = quote.strip()
        if lat.strip() or lon.strip():
            fields["location"] = {"lat": lat.strip(), "lon": lon.strip()}
        body = parse(ResponseBody, fields)
        ctx.platform.respond(visitor.caller, job_id, body.response_input())
        if body.available:
            return "Thank you: your answer and quote were sent to the owner's shortlist."
        # A declined invitation closes the job to the engineer (API rule): back to their page.
        return "/engineer", "Thank you: you said you are not available for this job."

    return act(_back(job_id), answer)


@router.post("/jobs/{job_id}/select")
def select_engineer(
    job_id: str,
    visitor: PosterDep,
    session: SessionDep,
    ctx: ContextDep,
    engineer_id: Text = "",
    principle: Text = "",
) -> Response:
    """The owner chooses an engineer from the shortlist: the contract is formed."""
    caller = visitor.caller
    # As the API: the request's own ranking when the form names none (404 if not visible).
    default = Principle(visible_job(session, caller, job_id).principle)
    session.rollback()

    def choose() -> str:
        fields = {"engineer_id": engineer_id, "principle": principle or None}
        body = parse(SelectBody, fields)
        job = ctx.platform.select(caller, job_id, body.engineer_id, body.principle or default)
        return f"Booked with {body.engineer_id}. The job is now: {_state_said(job)}."

    return act(_back(job_id), choose)


@router.post("/jobs/{job_id}/complete")
def complete(
    job_id: str,
    visitor: PosterDep,
    ctx: ContextDep,
    cause: Text = "",
    actions: Text = "",
    parts: Text = "",
) -> Response:
    """The contracted engineer reports the repair; the restart button then opens."""

    def report() -> str:
        listed = [part.strip() for part in parts.split(",") if part.strip()]
        body = parse(CompletionBody, {"cause": cause, "actions": actions, "parts": listed})
        ctx.platform.complete(
            visitor.caller, job_id, CompletionReport(body.cause, body.actions, tuple(body.parts))
        )
        return (
            "Repair reported. The platform now checks the boiler's live data; "
            "if it is still locked out you may restart it below."
        )

    return act(_back(job_id), report)


@router.post("/jobs/{job_id}/evaluate")
def evaluate(
    job_id: str,
    visitor: PosterDep,
    session: SessionDep,
    ctx: ContextDep,
    cs: Text = "",
    sq: Text = "",
    comment: Text = "",
) -> Response:
    """The boiler's end user rates the verified job. The one-time token never goes through
    the browser: it is taken here from the visitor's own "rate the service" notice."""
    caller = visitor.caller
    visible_job(session, caller, job_id)  # 404 before anything else, as the API
    token = evaluation_token(session, caller.user_id, job_id)
    session.rollback()

    def rate() -> str:
        if token is None:
            raise Forbidden("you have no invitation to rate this job (only its end user has)")
        body = parse(EvaluationBody, {"token": token, "cs": cs, "sq": sq, "comment": comment})
        ctx.platform.evaluate(caller, job_id, body.token, body.cs, body.sq, body.comment)
        return "Thank you for rating the service."

    return act(_back(job_id) + "#evaluate", rate)
