"""Service requests: raise, authorise, validate in two steps, analyse, crowdsource.

Every function runs in the caller's transaction and records what it did, with evidence, in
the boiler's thread under the job's id.

Validation is the paper's two steps: (a) the requester is the boiler's recorded owner or
tenant; (b) the live status matches the problem (`analysis.check_status`). A request that
fails (b) is not silently accepted or dropped: it is ``flagged`` until the owner or support
confirms it (or cancels it).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud import thread
from cloud.domain import Caller, InvitationState, JobState, Role
from cloud.errors import Conflict, Forbidden, InvalidInput, NotFound
from cloud.models import (
    Alarm,
    Device,
    Engineer,
    EngineerPrice,
    Invitation,
    Job,
    Prediction,
    Twin,
    TwinValue,
)
from cloud.notify import NotificationKind, notify, when_text
from cloud.predict.runner import PredictionState
from cloud.service.analysis import Observation, ServiceRequest, analyse, check_status
from cloud.service.config import PlatformConfig
from cloud.service.crowd import EngineerRecord, Place, Task, crowdsource
from cloud.service.domain import JobEvent, RequestInput
from cloud.twin.read import connectivity

log = logging.getLogger(__name__)

HISTORY_WINDOW_MS = 365 * 24 * 3600 * 1000
"""Fault episodes counted as the boiler's history (O in f(M, R, O)) for service analysis."""
OBSERVED_POINTS = ("ch_pressure", "outdoor_temp", "flow_temp", "return_temp", "dhw_temp")
REQUESTERS = frozenset({Role.OWNER, Role.TENANT})
MAX_TEXT = 2000


def record(
    session: Session, job: Job, kind: str, actor: str, now: int, data: dict[str, Any]
) -> None:
    """One job event in the boiler's thread (subject = the job)."""
    thread.record(
        session,
        device_id=job.device_id,
        kind=kind,
        ts_ms=now,
        recorded_ms=now,
        actor=actor,
        subject=job.id,
        data=data,
    )


def move(session: Session, job: Job, new: JobState, now: int) -> None:
    """Change a job's state (the caller records why)."""
    log.info("job %s (%s): %s -> %s", job.id, job.device_id, job.state, new)
    job.state = new.value
    job.updated_ms = now


def pounds(amount: object) -> str:
    """``£190.00`` (the portal's and the demo's format); ``an unknown amount`` otherwise."""
    if isinstance(amount, int | float) and not isinstance(amount, bool):
        return f"\N{POUND SIGN}{amount:,.2f}"
    return "an unknown amount"


def decider(job: Job) -> str:
    """Who authorises, chooses the engineer: the owner, or the requester if none is recorded."""
    return job.owner_id or job.requested_by


def observe(session: Session, device: Device, config: PlatformConfig, now: int) -> Observation:
    """What the product twin shows now, and the boiler's fault history (M)."""
    twin = session.get(Twin, device.id)
    stale_ms = int(config.settings.stale_after_s * 1000)
    values = {
        row.point: row.num
        for row in session.scalars(
            select(TwinValue).where(
                TwinValue.device_id == device.id, TwinValue.point.in_(OBSERVED_POINTS)
            )
        )
    }
    history = session.execute(
        select(Alarm.code, func.count())
        .where(
            Alarm.device_id == device.id,
            Alarm.kind == "fault",
            Alarm.code.is_not(None),
            Alarm.start_ms >= now - HISTORY_WINDOW_MS,
        )
        .group_by(Alarm.code)
    ).all()
    warnings = session.scalars(
        select(Prediction).where(
            Prediction.device_id == device.id, Prediction.state == PredictionState.ACTIVE
        )
    )
    return Observation(
        connectivity=connectivity(twin, now, stale_ms).value,
        status=twin.status if twin else None,
        fault_code=twin.fault_code if twin else None,
        values=values,
        fault_history={int(code): int(count) for code, count in history if code is not None},
        predictions={
            w.mode: {
                "id": w.id,
                "fault": w.fault,
                "days_to_fault": w.days_to_fault,
                "due": w.due_ms,
            }
            for w in warnings
        },
    )


def open_alarms(session: Session, device_id: str) -> list[dict[str, Any]]:
    """The boiler's open alarm episodes: what is wrong now, as the request's evidence."""
    rows = session.scalars(
        select(Alarm)
        .where(Alarm.device_id == device_id, Alarm.end_ms.is_(None))
        .order_by(Alarm.start_ms)
    )
    return [{"kind": a.kind, "fault": a.name, "code": a.code, "since": a.start_ms} for a in rows]


def check_input(config: PlatformConfig, data: RequestInput) -> None:
    """`InvalidInput` naming the field for a request the rules do not know or limits refuse."""
    if data.service_type not in config.rules.service_types:
        known = ", ".join(config.rules.service_types)
        raise InvalidInput(f"unknown service type; known: {known}", field="service_type")
    problems = config.rules.problems(data.service_type)
    if data.problem not in problems:
        raise InvalidInput(
            f"problem not valid for {data.service_type}; one of: {', '.join(problems)}",
            field="problem",
        )
    if len(data.description) > MAX_TEXT:
        raise InvalidInput(f"description is longer than {MAX_TEXT} characters", field="description")
    if not 0.0 <= data.min_performance <= 1.0:
        raise InvalidInput("min_performance must be between 0 and 1", field="min_performance")


def ownership_failure(session: Session, caller: Caller, device_id: str, now: int) -> None:
    """Record a failed validation step (a) in the boiler's thread, if the boiler exists and
    the caller really is neither its owner nor its tenant (a revoked boiler is just gone)."""
    device = session.get(Device, device_id)
    if device is None or caller.user_id in (device.owner_id, device.tenant_id):
        return
    thread.record(
        session,
        device_id=device_id,
        kind=JobEvent.VALIDATION,
        ts_ms=now,
        recorded_ms=now,
        actor=caller.actor,
        data={"step": "ownership", "outcome": "not_owner_or_tenant", "role": caller.role.value},
    )


def _same_request(job: Job, data: RequestInput) -> bool:
    """Whether a retried request (same Idempotency-Key) asks for what `job` was raised with."""
    stated = (
        data.device_id,
        data.service_type,
        data.problem,
        data.description.strip(),
        data.principle.value,
        data.min_performance,
    )
    stored = (
        job.device_id,
        job.service_type,
        job.problem,
        job.description,
        job.principle,
        job.min_performance,
    )
    return stated == stored and (not data.preferred_ms or data.preferred_ms == job.preferred_ms)


def create(
    session: Session, config: PlatformConfig, caller: Caller, data: RequestInput, now: int
) -> tuple[Job, bool]:
    """Raise a request; returns the job and whether it is new (an idempotent retry is not).

    Step (a) of validation happens here: a caller who is not the boiler's recorded owner or
    tenant gets `NotFound`, as for any boiler they may not see.
    """
    if caller.role not in REQUESTERS:
        raise Forbidden(
            f"{caller.role.article} may not raise a service request", role=caller.role.value
        )
    check_input(config, data)
    if data.idempotency_key is not None:
        existing = session.scalars(
            select(Job).where(
                Job.requested_by == caller.user_id, Job.idempotency_key == data.idempotency_key
            )
        ).first()
        if existing is not None:
            if not _same_request(existing, data):
                raise Conflict("this Idempotency-Key was used for another request")
            return existing, False
    device = session.get(Device, data.device_id)
    mine = device is not None and caller.user_id in (device.owner_id, device.tenant_id)
    if device is None or not mine or device.revoked:
        raise NotFound(f"no boiler {data.device_id}", device_id=data.device_id)
    return open_request(session, config, caller, device, data, now), True


def open_request(
    session: Session,
    config: PlatformConfig,
    caller: Caller,
    device: Device,
    data: RequestInput,
    now: int,
    *,
    evidence: dict[str, Any] | None = None,
) -> Job:
    """The job for a checked request by `caller` (the boiler's owner or tenant, or support):
    recorded with the twin as `evidence`; then, raised by anyone but a recorded owner, it
    waits for the owner's authorisation, else it is validated and crowdsourced at once."""
    job = Job(
        id=str(uuid.uuid4()),
        device_id=device.id,
        service_type=data.service_type,
        problem=data.problem,
        description=data.description.strip(),
        preferred_ms=data.preferred_ms or now,
        principle=data.principle.value,
        min_performance=data.min_performance,
        requested_by=caller.user_id,
        idempotency_key=data.idempotency_key,
        owner_id=device.owner_id,
        tenant_id=device.tenant_id,
        state=JobState.PENDING_AUTHORIZATION.value,
        validation={},
        analysis={},
        contract={},
        report={},
        evaluation={},
        created_ms=now,
        updated_ms=now,
    )
    session.add(job)
    session.flush()
    record(
        session,
        job,
        JobEvent.REQUEST,
        caller.actor,
        now,
        {
            "service_type": job.service_type,
            "problem": job.problem,
            "description": job.description,
            "preferred": job.preferred_ms,
            "principle": job.principle,
            "min_performance": job.min_performance,
            "role": caller.role.value,
            "open_alarms": open_alarms(session, device.id),
            "twin": observe(session, device, config, now).evidence(),
            **(evidence or {}),
        },
    )
    if device.owner_id and caller.user_id != device.owner_id:
        notify(
            session,
            [device.owner_id],
            NotificationKind.REQUEST_TO_AUTHORIZE,
            f"{caller.user_id} asks for a {service_words(job.service_type)} "
            f"at {device.address or device.id}",
            job.description,
            now_ms=now,
            device_id=device.id,
            job_id=job.id,
        )
        return job
    job.authorized_by = caller.user_id
    record(
        session,
        job,
        JobEvent.AUTHORIZATION,
        caller.actor,
        now,
        {"approved": True, "by": "requester"},
    )
    validate_and_source(session, config, job, device, caller.actor, now)
    return job


def service_words(service_type: str) -> str:
    """A service type in a sentence: "repair", "annual check", "preventive visit"."""
    words = service_type.replace("_", " ")
    return f"{words} visit" if service_type == "preventive" else words


def authorize(
    session: Session,
    config: PlatformConfig,
    caller: Caller,
    job: Job,
    approve: bool,
    note: str,
    now: int,
) -> None:
    """The owner approves (validation and crowdsourcing follow) or declines a tenant's request."""
    if caller.user_id != decider(job):
        raise Forbidden("only the boiler's owner may authorise this request")
    if job.state != JobState.PENDING_AUTHORIZATION:
        raise Conflict(f"job is {job.state}, not awaiting authorisation", state=job.state)
    record(
        session, job, JobEvent.AUTHORIZATION, caller.actor, now, {"approved": approve, "note": note}
    )
    if not approve:
        move(session, job, JobState.DECLINED, now)
        job.closed_reason = note
        notify(
            session,
            [job.requested_by],
            NotificationKind.REQUEST_DECLINED,
            "Your service request was declined by the owner",
            note,
            now_ms=now,
            device_id=job.device_id,
            job_id=job.id,
        )
        return
    job.authorized_by = caller.user_id
    device = session.get(Device, job.device_id)
    assert device is not None  # jobs reference devices
    validate_and_source(session, config, job, device, caller.actor, now)


def validate_and_source(
    session: Session, config: PlatformConfig, job: Job, device: Device, actor: str, now: int
) -> None:
    """Validation step (b) against live data, service analysis, then crowdsourcing."""
    observation = observe(session, device, config, now)
    request = ServiceRequest(
        job.service_type, job.problem, job.description, device.tenant_id is not None
    )
    validation = check_status(config.rules, request, observation)
    raised_by = "owner_or_tenant" if job.requested_by in (job.owner_id, job.tenant_id) else "staff"
    job.validation = {"ownership": raised_by, **validation.as_json()}
    record(
        session,
        job,
        JobEvent.VALIDATION,
        "cloud",
        now,
        {"step": "status", "requested_by": job.requested_by, **validation.as_json()},
    )
    profile = analyse(config.rules, request, observation)
    job.analysis = profile.as_json()
    record(session, job, JobEvent.ANALYSIS, "cloud", now, profile.as_json())
    if not validation.outcome.proceeds:
        move(session, job, JobState.FLAGGED, now)
        notify(
            session,
            [decider(job), job.requested_by],
            NotificationKind.REQUEST_FLAGGED,
            f"Request needs a check: {validation.outcome.value.replace('_', ' ')}",
            validation.reason,
            now_ms=now,
            device_id=job.device_id,
            job_id=job.id,
        )
        return
    source(session, config, job, device, actor, now)


def confirm(
    session: Session, config: PlatformConfig, caller: Caller, job: Job, note: str, now: int
) -> None:
    """The owner or support confirms a flagged request (or retries one nobody took)."""
    if not (caller.is_staff or caller.user_id == decider(job)):
        raise Forbidden("only the boiler's owner or support may confirm this request")
    if job.state not in (JobState.FLAGGED, JobState.NO_ENGINEERS):
        raise Conflict(f"job is {job.state}: only flagged or unanswered jobs are confirmed")
    if len(note.strip()) < 3 and job.state == JobState.FLAGGED:
        raise InvalidInput("say why the request stands despite the live data", field="note")
    record(
        session,
        job,
        JobEvent.VALIDATION,
        caller.actor,
        now,
        {"step": "confirmation", "outcome": "confirmed", "was": job.state, "note": note},
    )
    device = session.get(Device, job.device_id)
    assert device is not None
    source(session, config, job, device, caller.actor, now)


def engineer_records(session: Session, service_type: str) -> list[EngineerRecord]:
    """Every engineer's twin as the crowdsourcing maths sees it for `service_type`."""
    prices = {
        row.engineer_id: row.average
        for row in session.scalars(
            select(EngineerPrice).where(EngineerPrice.service_type == service_type)
        )
    }
    return [
        EngineerRecord(
            id=e.user_id,
            skills=frozenset(e.skills),
            home=Place(e.home_lat, e.home_lon),
            invitations=e.invitations,
            accepted=e.accepted,
            evaluated=e.evaluated,
            cs_sum=e.cs_sum,
            sq_sum=e.sq_sum,
            average_price=prices.get(e.user_id),
            available=e.available,
        )
        for e in session.scalars(select(Engineer).order_by(Engineer.user_id))
    ]


def source(
    session: Session, config: PlatformConfig, job: Job, device: Device, actor: str, now: int
) -> None:
    """One crowdsourcing round: constraints 1-4, W (eq. 9), invite the top ones."""
    if device.lat is None or device.lon is None:
        move(session, job, JobState.NO_ENGINEERS, now)
        record(
            session, job, JobEvent.CROWDSOURCING, "cloud", now, {"error": "boiler has no location"}
        )
        return
    already = set(
        session.scalars(select(Invitation.engineer_id).where(Invitation.job_id == job.id))
    )
    task = Task(
        skills=frozenset(job.analysis.get("skills", ())),
        cost=float(job.analysis.get("cost", 0.0)),
        location=Place(device.lat, device.lon),
        min_performance=job.min_performance,
    )
    pool = [e for e in engineer_records(session, job.service_type) if e.id not in already]
    result = crowdsource(task, pool, config.crowd)
    failures: dict[str, int] = {}
    for a in result.assessments:
        for name in a.failed:
            failures[name] = failures.get(name, 0) + 1
    record(
        session,
        job,
        JobEvent.CROWDSOURCING,
        actor,
        now,
        {
            "task": {
                "skills": sorted(task.skills),
                "cost": task.cost,
                "min_performance": task.min_performance,
            },
            "considered": len(result.assessments),
            "failed_by_constraint": failures,
            "pool_size": result.pool_size,
            "top_k": result.top_k,
            "invited": [a.figures() for a in result.invited],
            "rules": config.crowd_json(),
        },
    )
    if not result.invited:
        move(session, job, JobState.NO_ENGINEERS, now)
        notify(
            session,
            [decider(job), job.requested_by],
            NotificationKind.NO_ENGINEERS,
            "No engineer is available for this request yet",
            "Nobody met the constraints or answered in time. The owner or support may retry.",
            now_ms=now,
            device_id=job.device_id,
            job_id=job.id,
        )
        return
    due = now + int(config.settings.response_window_s * 1000)
    job.responses_due_ms = due
    for a in result.invited:
        session.add(
            Invitation(
                job_id=job.id,
                engineer_id=a.engineer_id,
                state=InvitationState.OPEN.value,
                performance=a.performance or 0.0,
                figures=a.figures(),
                invited_ms=now,
                note="",
            )
        )
    move(session, job, JobState.CROWDSOURCING, now)
    notify(
        session,
        [a.engineer_id for a in result.invited],
        NotificationKind.INVITATION,
        f"New {job.service_type.replace('_', ' ')} job near you: please answer",
        f"Urgency {job.analysis.get('urgency')}; estimated {pounds(job.analysis.get('cost'))}. "
        f"Answer by {when_text(due)}.",
        now_ms=now,
        device_id=job.device_id,
        job_id=job.id,
    )


def cancel(session: Session, caller: Caller, job: Job, reason: str, now: int) -> None:
    """Cancel a job before the work is done (requester, owner or support)."""
    if not (caller.is_staff or caller.user_id in (job.requested_by, job.owner_id)):
        raise Forbidden("only the requester, the owner or support may cancel this job")
    if not JobState(job.state).cancellable:
        raise Conflict(f"the job is {job.state} and can no longer be cancelled", state=job.state)
    waiting = session.scalars(
        select(Invitation).where(
            Invitation.job_id == job.id,
            Invitation.state.in_([InvitationState.OPEN.value, InvitationState.ACCEPTED.value]),
        )
    ).all()
    for invitation in waiting:
        if invitation.state == InvitationState.OPEN:
            invitation.state = InvitationState.WITHDRAWN.value
    record(
        session, job, JobEvent.CANCELLATION, caller.actor, now, {"reason": reason, "was": job.state}
    )
    move(session, job, JobState.CANCELLED, now)
    job.closed_reason = reason
    notify(
        session,
        [job.requested_by, job.owner_id, job.tenant_id, job.engineer_id]
        + [i.engineer_id for i in waiting],
        NotificationKind.CANCELLED,
        "Service job cancelled",
        reason,
        now_ms=now,
        device_id=job.device_id,
        job_id=job.id,
    )
