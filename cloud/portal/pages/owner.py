"""The owner's main page, "My properties": every boiler they own (`visible_devices`, as the
API) with its state in plain words, the requests waiting for their decision, shortlists to
choose from, and contracts. Deciding happens on the job page; this page links to it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.access import visible_devices, visible_jobs
from cloud.api.deps import ApiContext, ContextDep, SessionDep
from cloud.domain import Caller, JobState, Role
from cloud.models import Device, Job, Twin, User
from cloud.portal.pages.boilers import open_job
from cloud.portal.pages.tenant import only_for
from cloud.portal.render import page
from cloud.portal.session import VisitorDep
from cloud.twin.read import connectivity, stale_ms
from protocols.reference import fault_name, fault_text, status_label

router = APIRouter(include_in_schema=False)

LISTED = 50
AWAITING = (JobState.PENDING_AUTHORIZATION.value, JobState.FLAGGED.value)
"""States in which a job waits for the owner's decision."""
CONTRACT_STATES = tuple(
    s.value
    for s in (
        JobState.CONTRACTED,
        JobState.COMPLETED,
        JobState.VERIFIED,
        JobState.EVALUATED,
        JobState.FAILED_VERIFICATION,
    )
)
"""States of a job with an engineer under contract (or that had one)."""


def properties(session: Session, ctx: ApiContext, caller: Caller) -> list[dict[str, Any]]:
    """Each boiler the caller may see, with its twin's state as the table shows it."""
    now, stale = ctx.clock(), stale_ms(ctx.settings)
    rows = session.execute(
        select(Device, Twin)
        .outerjoin(Twin, Twin.device_id == Device.id)
        .where(visible_devices(caller))
        .order_by(Device.address, Device.id)
    ).all()
    return [
        {
            "device": device,
            "status": status_label(twin.status if twin else None),
            "connectivity": connectivity(twin, now, stale).value,
            "fault": fault_name(twin.fault_code if twin else None),
            "fault_text": fault_text(twin.fault_code if twin else None),
            "open_job": open_job(session, caller, device.id),
        }
        for device, twin in rows
    ]


def owner_jobs(session: Session, caller: Caller, states: tuple[str, ...]) -> list[Job]:
    """Visible jobs in `states` that the caller decides on (they are the job's owner)."""
    return list(
        session.scalars(
            select(Job)
            .where(visible_jobs(caller), Job.owner_id == caller.user_id, Job.state.in_(states))
            .order_by(Job.created_ms.desc(), Job.id)
            .limit(LISTED)
        )
    )


def contracts(session: Session, caller: Caller) -> list[dict[str, Any]]:
    """Visible jobs with a contracted engineer, newest change first, with the quote."""
    rows = session.execute(
        select(Job, User.display_name)
        .outerjoin(User, User.id == Job.engineer_id)
        .where(visible_jobs(caller), Job.engineer_id.is_not(None), Job.state.in_(CONTRACT_STATES))
        .order_by(Job.updated_ms.desc(), Job.id)
        .limit(LISTED)
    ).all()
    return [
        {
            "job": job,
            "engineer": name or job.engineer_id,
            "quote": _quote(job.contract),
            "scheduled": job.contract.get("scheduled"),
        }
        for job, name in rows
    ]


@router.get("/owner", response_class=HTMLResponse)
def owner_page(
    request: Request, visitor: VisitorDep, session: SessionDep, ctx: ContextDep
) -> Response:
    """My properties: boilers, decisions waiting, shortlists and contracts."""
    caller = visitor.caller
    only_for(caller, Role.OWNER, "owners")
    boilers = properties(session, ctx, caller)
    return page(
        request,
        "owner.html",
        visitor,
        session,
        boilers=boilers,
        addresses={b["device"].id: b["device"].address for b in boilers},
        waiting=owner_jobs(session, caller, AWAITING),
        shortlists=owner_jobs(session, caller, (JobState.SHORTLISTED.value,)),
        contracts=contracts(session, caller),
    )


def _quote(contract: dict[str, Any]) -> float | None:
    """The contract's quote in GBP (None if it has none)."""
    quote = contract.get("quote")
    return float(quote) if isinstance(quote, int | float) else None
