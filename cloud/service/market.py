"""Responses, shortlist and contract: from invitations to a chosen engineer.

Invited engineers answer before ``responses_due_ms``: available (with a quote and their
current location) or not. An invitation closes when answered or at the deadline, unanswered
counting as not accepted; each closing updates the engineer's acceptance rate (eq. 17). When
every invitation is closed, the shortlist (eqs. 11-14) is computed and the owner chooses.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.domain import Caller, InvitationState, JobState, Role
from cloud.errors import Conflict, Forbidden, InvalidInput, NotFound
from cloud.models import Device, Engineer, Invitation, Job
from cloud.notify import NotificationKind, notify, when_text
from cloud.service.config import PlatformConfig
from cloud.service.crowd import Candidate, Place, Principle, Response, shortlist
from cloud.service.domain import JobEvent, ResponseInput
from cloud.service.requests import decider, move, pounds, record

log = logging.getLogger(__name__)

MAX_QUOTE = 100_000.0


def invitation_for(session: Session, job: Job, engineer_id: str) -> Invitation | None:
    """The engineer's invitation to `job`, if any."""
    return session.get(Invitation, (job.id, engineer_id))


def _count_answer(session: Session, engineer_id: str, accepted: bool, now: int) -> None:
    """Eq. 17: one more closed invitation, and one more accepted if it was."""
    engineer = session.get(Engineer, engineer_id)
    if engineer is None:
        return
    engineer.invitations += 1
    engineer.accepted += 1 if accepted else 0
    engineer.updated_ms = now


def respond(
    session: Session,
    config: PlatformConfig,
    caller: Caller,
    job: Job,
    answer: ResponseInput,
    now: int,
) -> Invitation:
    """An invited engineer answers (once); closes the round when everyone has."""
    if caller.role is not Role.ENGINEER:
        raise Forbidden("only invited engineers answer invitations")
    invitation = invitation_for(session, job, caller.user_id)
    if invitation is None:
        raise NotFound(f"no job {job.id}", job_id=job.id)
    if invitation.state != InvitationState.OPEN or job.state != JobState.CROWDSOURCING:
        raise Conflict(f"this invitation is {invitation.state}; answers are closed")
    if job.responses_due_ms is not None and now > job.responses_due_ms:
        raise Conflict("the deadline for answers has passed")
    if answer.available:
        if answer.quote is None or not 0 < answer.quote <= MAX_QUOTE:
            raise InvalidInput(f"an available engineer quotes 0-{MAX_QUOTE:g} GBP", field="quote")
        if answer.lat is None or answer.lon is None:
            raise InvalidInput("an available engineer gives their current location", field="lat")
        try:
            Place(answer.lat, answer.lon)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="lat") from exc
    invitation.state = (
        InvitationState.ACCEPTED if answer.available else InvitationState.DECLINED
    ).value
    invitation.responded_ms = now
    invitation.quote = answer.quote if answer.available else None
    invitation.lat = answer.lat if answer.available else None
    invitation.lon = answer.lon if answer.available else None
    invitation.note = answer.note[:2000]
    _count_answer(session, caller.user_id, answer.available, now)
    record(
        session,
        job,
        JobEvent.RESPONSE,
        caller.actor,
        now,
        {
            "engineer": caller.user_id,
            "available": answer.available,
            "quote": invitation.quote,
            "location": {"lat": invitation.lat, "lon": invitation.lon}
            if answer.available
            else None,
            "note": invitation.note,
        },
    )
    session.flush()
    if not _open(session, job):
        close_round(session, config, job, now)
    return invitation


def _open(session: Session, job: Job) -> list[Invitation]:
    return list(
        session.scalars(
            select(Invitation).where(
                Invitation.job_id == job.id, Invitation.state == InvitationState.OPEN.value
            )
        )
    )


def close_round(session: Session, config: PlatformConfig, job: Job, now: int) -> None:
    """Close the answers: the unanswered count as not accepted; shortlist or nobody."""
    for invitation in _open(session, job):
        invitation.state = InvitationState.EXPIRED.value
        _count_answer(session, invitation.engineer_id, False, now)
        record(
            session,
            job,
            JobEvent.RESPONSE,
            "cloud",
            now,
            {"engineer": invitation.engineer_id, "available": False, "expired": True},
        )
    candidates = ranked(session, config, job, Principle(job.principle))
    record(
        session,
        job,
        JobEvent.SHORTLIST,
        "cloud",
        now,
        {
            "principle": job.principle,
            "candidates": [c.as_json() for c in candidates],
            "assumptions": config.travel.assumptions(),
        },
    )
    if not candidates:
        move(session, job, JobState.NO_ENGINEERS, now)
        notify(
            session,
            [decider(job), job.requested_by],
            NotificationKind.NO_ENGINEERS,
            "No invited engineer is available at the requested time",
            "The owner or support may retry crowdsourcing.",
            now_ms=now,
            device_id=job.device_id,
            job_id=job.id,
        )
        return
    move(session, job, JobState.SHORTLISTED, now)
    notify(
        session,
        [decider(job)],
        NotificationKind.SHORTLIST_READY,
        f"{len(candidates)} engineer(s) shortlisted: please choose one",
        ", ".join(f"{c.position}. {c.engineer_id} ({c.rank_pct:.0f}%)" for c in candidates),
        now_ms=now,
        device_id=job.device_id,
        job_id=job.id,
    )


def sweep_rounds(session: Session, config: PlatformConfig, now: int) -> list[str]:
    """Close every round whose deadline has passed; returns the job ids closed."""
    due = session.scalars(
        select(Job)
        .where(Job.state == JobState.CROWDSOURCING.value, Job.responses_due_ms <= now)
        .with_for_update()
        .limit(100)
    ).all()
    for job in due:
        close_round(session, config, job, now)
    return [job.id for job in due]


def ranked(
    session: Session, config: PlatformConfig, job: Job, principle: Principle
) -> tuple[Candidate, ...]:
    """The top available respondents under `principle` (eqs. 13, 14 or cheapest)."""
    device = session.get(Device, job.device_id)
    if device is None or device.lat is None or device.lon is None:
        return ()
    responses = [
        Response(
            engineer_id=i.engineer_id,
            available=True,
            quote=i.quote,
            location=Place(i.lat, i.lon) if i.lat is not None and i.lon is not None else None,
            performance=i.performance,
        )
        for i in session.scalars(
            select(Invitation).where(
                Invitation.job_id == job.id, Invitation.state == InvitationState.ACCEPTED.value
            )
        )
    ]
    return shortlist(
        responses,
        cost=float(job.analysis.get("cost", 0.0)),
        boiler=Place(device.lat, device.lon),
        principle=principle,
        travel=config.travel,
        size=config.settings.shortlist_size,
    )


def select_engineer(
    session: Session,
    config: PlatformConfig,
    caller: Caller,
    job: Job,
    engineer_id: str,
    principle: Principle,
    now: int,
) -> dict[str, Any]:
    """The owner chooses a shortlisted engineer: the contract is formed and everyone told."""
    if caller.user_id != decider(job):
        raise Forbidden("only the boiler's owner chooses the engineer")
    if job.state != JobState.SHORTLISTED:
        raise Conflict(f"job is {job.state}, not shortlisted", state=job.state)
    candidates = ranked(session, config, job, principle)
    chosen = next((c for c in candidates if c.engineer_id == engineer_id), None)
    if chosen is None:
        raise InvalidInput(
            f"{engineer_id} is not on the {principle.value} shortlist", field="engineer_id"
        )
    device = session.get(Device, job.device_id)
    assert device is not None
    contract = {
        "engineer": engineer_id,
        "address": device.address,
        "location": {"lat": device.lat, "lon": device.lon},
        "scheduled": job.preferred_ms,
        "service_type": job.service_type,
        "problem": job.problem,
        "quote": chosen.quote,
        "principle": principle.value,
        "rank": chosen.as_json(),
        "owner": job.owner_id,
        "tenant": job.tenant_id,
        "signed": now,
    }
    job.engineer_id = engineer_id
    job.contract = contract
    move(session, job, JobState.CONTRACTED, now)
    record(session, job, JobEvent.CONTRACT, caller.actor, now, contract)
    others = [
        i.engineer_id
        for i in session.scalars(select(Invitation).where(Invitation.job_id == job.id))
        if i.engineer_id != engineer_id and i.state == InvitationState.ACCEPTED
    ]
    when = job.preferred_ms
    notify(
        session,
        [job.tenant_id, job.owner_id, engineer_id, job.requested_by],
        NotificationKind.CONTRACT,
        f"{job.service_type.replace('_', ' ').capitalize()} booked with {engineer_id}",
        f"At {device.address or device.id}, {when_text(when)}; quote {pounds(chosen.quote)}.",
        now_ms=now,
        device_id=job.device_id,
        job_id=job.id,
    )
    notify(
        session,
        others,
        NotificationKind.NOT_SELECTED,
        "Another engineer was chosen for a job you answered",
        now_ms=now,
        job_id=job.id,
    )
    return contract
