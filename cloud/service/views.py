"""Who may see which job, and the API form of jobs and invitations.

* admin, support: every job;
* owner: jobs on their boilers, and jobs they raised;
* tenant: jobs on the boiler they live with, and jobs they raised;
* engineer: jobs they are invited to while the invitation is open or accepted and the job is
  still crowdsourcing or shortlisted, and jobs they are contracted on. An invited engineer
  sees what they need to answer (service, problem, urgency, estimate, time, distance), not
  the people or the address; those come with the contract.

A job the caller may not see answers 404, like one that does not exist.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.access import visible_jobs
from cloud.domain import Caller, InvitationState, Role
from cloud.errors import NotFound
from cloud.models import Command, Invitation, Job, ThreadEvent, User
from cloud.service.config import PlatformConfig
from cloud.service.crowd import Principle
from cloud.service.market import ranked

_ENGAGED = (InvitationState.OPEN.value, InvitationState.ACCEPTED.value)


def visible_job(session: Session, caller: Caller, job_id: str, *, lock: bool = False) -> Job:
    """The job if `caller` may see it; `NotFound` otherwise."""
    query = select(Job).where(Job.id == job_id, visible_jobs(caller))
    job = session.scalars(query.with_for_update() if lock else query).first()
    if job is None:
        raise NotFound(f"no job {job_id}", job_id=job_id)
    return job


def job_json(job: Job, caller: Caller, invitation: Invitation | None = None) -> dict[str, Any]:
    """API form of a job as `caller` may see it."""
    public = {
        "id": job.id,
        "device_id": job.device_id,
        "service_type": job.service_type,
        "problem": job.problem,
        "description": job.description,
        "preferred": job.preferred_ms,
        "state": job.state,
        "analysis": job.analysis,
        "responses_due": job.responses_due_ms,
        "created": job.created_ms,
        "updated": job.updated_ms,
    }
    contracted = caller.role is Role.ENGINEER and job.engineer_id == caller.user_id
    if invitation is not None:
        public["invitation"] = invitation_json(invitation)
    if caller.role is Role.ENGINEER and not contracted:
        return public
    return public | {
        "principle": job.principle,
        "min_performance": job.min_performance,
        "requested_by": job.requested_by,
        "owner_id": job.owner_id,
        "tenant_id": job.tenant_id,
        "authorized_by": job.authorized_by,
        "validation": job.validation,
        "engineer_id": job.engineer_id,
        "contract": job.contract,
        "report": job.report,
        "completed": job.completed_ms,
        "normal_since": job.normal_since_ms,
        "verified": job.verified_ms,
        "evaluation": {k: v for k, v in job.evaluation.items() if k != "token_expires"},
        "evaluation_open": job.evaluation_token_hash is not None,
        "closed_reason": job.closed_reason,
    }


def invitation_json(row: Invitation) -> dict[str, Any]:
    """API form of an invitation (the engineer's own, or for the owner's overview)."""
    return {
        "job_id": row.job_id,
        "engineer_id": row.engineer_id,
        "state": row.state,
        "performance": row.performance,
        "figures": row.figures,
        "invited": row.invited_ms,
        "responded": row.responded_ms,
        "quote": row.quote,
        "location": {"lat": row.lat, "lon": row.lon} if row.lat is not None else None,
        "note": row.note,
    }


def shortlist_json(
    session: Session, config: PlatformConfig, job: Job, principle: Principle
) -> dict[str, Any]:
    """The top available engineers ranked by `principle` (0% best), each with distance,
    travel time, CO2, quote, name and the figures they were invited on."""
    candidates = ranked(session, config, job, principle)
    figures = {
        i.engineer_id: i.figures
        for i in session.scalars(select(Invitation).where(Invitation.job_id == job.id))
    }
    names = {
        u.id: u.display_name
        for u in session.scalars(
            select(User).where(User.id.in_([c.engineer_id for c in candidates]))
        )
    }
    items = [
        c.as_json()
        | {"display_name": names.get(c.engineer_id, ""), "figures": figures.get(c.engineer_id, {})}
        for c in candidates
    ]
    return {
        "job_id": job.id,
        "state": job.state,
        "principle": principle.value,
        "candidates": items,
        "assumptions": config.travel.assumptions(),
    }


def job_thread_events(session: Session, job: Job, limit: int) -> list[ThreadEvent]:
    """The job's proof, oldest first: its own events, and the contracted engineer's
    restarts after the completion report with their acks."""
    subjects = [job.id]
    if job.engineer_id and job.completed_ms is not None:
        subjects += session.scalars(
            select(Command.id).where(
                Command.device_id == job.device_id,
                Command.requested_by == job.engineer_id,
                Command.created_ms >= job.completed_ms,
            )
        ).all()
    return list(
        session.scalars(
            select(ThreadEvent)
            .where(ThreadEvent.device_id == job.device_id, ThreadEvent.subject.in_(subjects))
            .order_by(ThreadEvent.id)
            .limit(limit)
        )
    )
