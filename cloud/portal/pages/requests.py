"""The service-request form (owners and tenants), checked and carried out exactly as the
API's ``POST /jobs`` does it: the same `JobCreate` schema, the same `RequestInput`, the same
`ServicePlatform.create_request`. `cloud.portal.pages.tenant` mounts this router.

A boiler the visitor may not see is a 404, as in the API; another role gets a 403. The
form's hidden ``key`` is the idempotency key (fresh on every render), so a double submit
makes one job. A refusal goes back to the form with the reason and what was typed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from cloud.access import visible_device
from cloud.api.deps import ApiContext, ContextDep, SessionDep
from cloud.api.schemas import JobCreate, PreventiveCreate
from cloud.domain import Caller, JobState, Role
from cloud.errors import Forbidden, InvalidInput, NotFound
from cloud.models import Device, Job, Prediction
from cloud.portal.forms import act, parse
from cloud.portal.pages.boilers import open_job
from cloud.portal.render import JOB_STATE_WORDS, Formats, page
from cloud.portal.session import PosterDep, VisitorDep
from cloud.service.config import PREVENTIVE
from cloud.service.crowd import Principle
from cloud.service.domain import RequestInput

router = APIRouter(include_in_schema=False)

REQUESTERS = frozenset({Role.OWNER, Role.TENANT})
PRINCIPLES = {
    Principle.LOW_CARBON.value: (
        "Nearest engineers first (least travel and CO2)",
        "The shortlist puts the engineer who would travel least first.",
    ),
    Principle.LOW_COST.value: (
        "Fair price first (quote closest to the estimated cost)",
        "The shortlist puts quotes nearest the platform's cost estimate first.",
    ),
    Principle.CHEAPEST.value: (
        "Cheapest first (lowest quote)",
        "The shortlist puts the lowest quote first.",
    ),
}
"""How each ranking principle reads on the form: a label and a hint."""
MAX_KEY = 200
"""The API's limit on an ``Idempotency-Key``."""


def only_requesters(caller: Caller) -> None:
    """`Forbidden` unless the caller is an owner or a tenant (who raise requests)."""
    if caller.role not in REQUESTERS:
        raise Forbidden("this page is for owners and tenants", role=caller.role.value)


def requestable(session: Session, caller: Caller, device_id: str) -> Device:
    """The boiler if the caller may raise a request for it; `NotFound` as the API says."""
    device = visible_device(session, caller, device_id)
    if device.revoked:  # the API refuses a revoked boiler as unknown
        raise NotFound(f"no boiler {device_id}", device_id=device_id)
    return device


def new_key() -> str:
    """A fresh idempotency key for one render of the form."""
    return f"portal-{uuid.uuid4()}"


@router.get("/requests/new", response_class=HTMLResponse)
def request_form(
    request: Request,
    visitor: VisitorDep,
    session: SessionDep,
    ctx: ContextDep,
    device: Annotated[str, Query(min_length=1, max_length=63)],
    service_type: Annotated[str, Query(max_length=64)] = "",
    problem: Annotated[str, Query(max_length=64)] = "",
    description: Annotated[str, Query(max_length=2000)] = "",
    preferred_time: Annotated[str, Query(max_length=64)] = "",
    principle: Annotated[str, Query(max_length=32)] = Principle.LOW_CARBON.value,
) -> Response:
    """The request form for one boiler (values after a refusal come back in the query)."""
    caller = visitor.caller
    only_requesters(caller)
    boiler = requestable(session, caller, device)
    rules = ctx.platform.config.rules
    types = {t: rules.problems(t) for t in rules.service_types}
    chosen = service_type if service_type in types else next(iter(types), "")
    return page(
        request,
        "request_new.html",
        visitor,
        session,
        device=boiler,
        types=types,
        chosen={
            "service_type": chosen,
            "problem": problem or _first_problem(types, chosen),
            "description": description,
            "preferred_time": preferred_time,
            "principle": principle if principle in PRINCIPLES else Principle.LOW_CARBON.value,
        },
        principles=PRINCIPLES,
        key=new_key(),
        open_job=open_job(session, caller, boiler.id),
        as_tenant=caller.user_id == boiler.tenant_id and caller.user_id != boiler.owner_id,
        earliest=local_input(ctx.clock(), ctx.settings.portal_timezone),
    )


@router.post("/requests")
def submit_request(
    visitor: PosterDep,
    session: SessionDep,
    ctx: ContextDep,
    device: Annotated[str, Form(max_length=200)] = "",
    service_type: Annotated[str, Form(max_length=200)] = "",
    problem: Annotated[str, Form(max_length=200)] = "",
    description: Annotated[str, Form(max_length=10_000)] = "",
    preferred_time: Annotated[str, Form(max_length=200)] = "",
    principle: Annotated[str, Form(max_length=200)] = Principle.LOW_CARBON.value,
    key: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    """Raise the request as ``POST /api/v1/jobs`` would; then to the job's page."""
    caller = visitor.caller
    only_requesters(caller)
    session.rollback()  # the platform works in its own transaction
    fields = {
        "device_id": device.strip(),
        "service_type": service_type.strip(),
        "problem": problem.strip(),
        "description": description,
        "preferred_time": preferred_time.strip() or None,
        "principle": principle.strip() or Principle.LOW_CARBON.value,
    }
    back = "/requests/new?" + urlencode(
        {
            "device": device.strip(),
            "service_type": service_type.strip()[:64],
            "problem": problem.strip()[:64],
            "description": description[:2000],
            "preferred_time": preferred_time.strip()[:64],
            "principle": principle.strip()[:32],
        }
    )

    def create() -> tuple[str, str]:
        data = request_input(ctx, fields, key.strip() or None)
        job, created = ctx.platform.create_request(caller, data)
        return f"/jobs/{job.id}", what_next(ctx, job, created)

    return act(back, create)


@router.post("/predictions/{prediction_id}/job")
def book_preventive(
    prediction_id: str,
    visitor: PosterDep,
    session: SessionDep,
    ctx: ContextDep,
    description: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    """The warning's "book a preventive visit" button, as ``POST /api/v1/predictions/{id}/jobs``
    does it (the same schema and platform call); then to the job's page, or back to the
    boiler's warnings with the reason it was refused."""
    found = None
    if prediction_id.isdigit() and 0 < int(prediction_id) < 2**62:
        found = session.get(Prediction, int(prediction_id))
    if found is None:
        raise NotFound(f"no warning {prediction_id}", prediction_id=prediction_id)
    back = f"/boilers/{visible_device(session, visitor.caller, found.device_id).id}#predictions"
    session.rollback()  # the platform works in its own transaction

    def book() -> tuple[str, str]:
        body = parse(PreventiveCreate, {"description": description})
        job, created = ctx.platform.raise_preventive(
            visitor.caller, body.warning_request(int(prediction_id))
        )
        if not created:
            return f"/jobs/{job.id}", "A visit was already booked for this warning; here it is."
        return f"/jobs/{job.id}", what_next(ctx, job, created)

    return act(back, book)


def request_input(ctx: ApiContext, fields: dict[str, Any], key: str | None) -> RequestInput:
    """The form as the API's `JobCreate` checks it, then as `create_job` builds the input."""
    if key is not None and len(key) > MAX_KEY:
        raise InvalidInput(f"the form key is longer than {MAX_KEY} characters", field="key")
    body = parse(JobCreate, fields)
    if body.preferred_time is not None and body.preferred_time.tzinfo is None:
        # A datetime-local field has no zone: it is the portal's local time.
        local = body.preferred_time.replace(tzinfo=ZoneInfo(ctx.settings.portal_timezone))
        body = body.model_copy(update={"preferred_time": local})
    return body.request_input(key)


def what_next(ctx: ApiContext, job: Job, created: bool) -> str:
    """The message after a request: what happens to it now, by the state it reached."""
    if not created:
        return "This request was already sent (the form was submitted twice); here it is."
    state = job.state
    if state == JobState.PENDING_AUTHORIZATION:
        return "Request sent to the owner for approval. You will be told when they answer."
    if state == JobState.CROWDSOURCING:
        due = Formats(ctx.settings.portal_timezone).when(job.responses_due_ms)
        checked = "its warning" if job.service_type == PREVENTIVE else "the boiler's live data"
        return (
            f"Request validated against {checked}, and engineers invited to "
            f"answer by {due}. You will be told when the shortlist is ready."
        )
    if state == JobState.FLAGGED:
        return (
            "The boiler's live data does not show the problem reported, so the request "
            "waits for a check. Confirm it or cancel it on this page."
        )
    if state == JobState.NO_ENGINEERS:
        return "Request validated, but no engineer is available now. You can retry later."
    return f"Request saved: {JOB_STATE_WORDS.get(state, state)}."


def local_input(ms: int | None, zone: str) -> str:
    """A time as a ``datetime-local`` field shows it (in the portal's zone)."""
    if not ms:
        return ""
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=ZoneInfo(zone))
    return moment.strftime("%Y-%m-%dT%H:%M")


def _first_problem(types: dict[str, tuple[str, ...]], service_type: str) -> str:
    """The first problem a service type takes ('' for none)."""
    problems = types.get(service_type, ())
    return problems[0] if problems else ""
