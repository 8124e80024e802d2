"""After the contract: completion report, the engineer's restart rule, verification, evaluation.

* The contracted engineer reports the work (cause, parts, actions): the job is ``completed``
  and the platform starts cross-checking live data.
* The engineer restart rule (`EngineerRestartRule`, plugged into `CommandService`): the
  caller is the engineer contracted on a job for this boiler, has reported completion, and it
  is within ``engineer_restart_window_s`` of that report. The command service's own checks
  (online, in lockout, rate limit) still apply.
* Verification (`sweep_verification`): ``verified`` once the twin has shown normal
  operation (online, not in lockout or blocking error, no fault code) continuously for
  ``verify_normal_s``; ``failed_verification`` if a new lockout episode begins after the
  report (by device time, or by a seq above the twin's at the report), or if it never runs
  normally within ``verify_timeout_s``. A job raised from a predictive-maintenance warning
  (`cloud.service.preventive`) also needs the warning's precursor seen gone in the readings
  since the report (`cloud.predict.recovery`); verifying it ends the warning
  (``repair_verified``), and a precursor still there at ``verify_timeout_s`` fails it.
* Evaluation: only the boiler's end user (the tenant, or the owner where there is none) gets a
  one-time token when the job is verified; their CS and SQ scores (1-5) update the engineer's
  running means (eqs. 15-16), kept as sums over evaluated jobs.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from cloud.domain import Caller, Connectivity, JobState, Role
from cloud.errors import Conflict, Forbidden, InvalidInput, NotFound
from cloud.models import Alarm, Device, Engineer, EngineerPrice, Job, Twin
from cloud.notify import NotificationKind, notify
from cloud.service import preventive
from cloud.service.config import PlatformConfig
from cloud.service.crowd import updated_means
from cloud.service.domain import CompletionReport, JobEvent
from cloud.service.requests import move, observe, record
from cloud.twin.read import connectivity
from protocols.reference import BoilerStatus, status_label

log = logging.getLogger(__name__)

ABNORMAL = frozenset({BoilerStatus.LOCKOUT, BoilerStatus.BLOCKING_ERROR})
MAX_TEXT = 2000


def complete(
    session: Session,
    config: PlatformConfig,
    caller: Caller,
    job: Job,
    report: CompletionReport,
    now: int,
) -> None:
    """The contracted engineer reports the work done."""
    if caller.user_id != job.engineer_id:
        raise Forbidden("only the engineer contracted on this job reports its completion")
    if job.state != JobState.CONTRACTED:
        raise Conflict(f"job is {job.state}, not contracted", state=job.state)
    if not report.cause.strip() or not report.actions.strip():
        raise InvalidInput("say what the cause was and what was done", field="cause")
    if max(len(report.cause), len(report.actions)) > MAX_TEXT or len(report.parts) > 50:
        raise InvalidInput("report too long", field="actions")
    device = session.get(Device, job.device_id)
    assert device is not None
    twin = session.get(Twin, job.device_id)
    job.report = {
        "cause": report.cause.strip(),
        "actions": report.actions.strip(),
        "parts": [p.strip()[:200] for p in report.parts if p.strip()],
        "reported": now,
        "seq_at_report": twin.max_seq if twin else None,
    }
    job.completed_ms = now
    job.normal_since_ms = None
    move(session, job, JobState.COMPLETED, now)
    evidence = observe(session, device, config, now).evidence()
    record(session, job, JobEvent.COMPLETION, caller.actor, now, {**job.report, "twin": evidence})
    _price_history(session, job, now)
    notify(
        session,
        [job.owner_id, job.tenant_id],
        NotificationKind.COMPLETED,
        f"{caller.user_id} reports the work done; checking the boiler's live data",
        report.cause,
        now_ms=now,
        device_id=job.device_id,
        job_id=job.id,
    )


def _price_history(session: Session, job: Job, now: int) -> None:
    """The contract's quote joins the engineer's average price for this service type."""
    quote = job.contract.get("quote")
    if job.engineer_id is None or not isinstance(quote, int | float):
        return
    row = session.get(EngineerPrice, (job.engineer_id, job.service_type))
    if row is None:
        session.add(
            EngineerPrice(
                engineer_id=job.engineer_id, service_type=job.service_type, jobs=1, average=quote
            )
        )
        return
    row.average = (row.average * row.jobs + quote) / (row.jobs + 1)
    row.jobs += 1


def restart_refusal(
    session: Session, caller: Caller, device: Device, now: int, window_s: float
) -> str | None:
    """Why `caller` (an engineer) may not restart `device` now; None if they may."""
    if caller.role is not Role.ENGINEER:
        return f"{caller.role.article} may not restart this boiler"
    jobs = session.scalars(
        select(Job)
        .where(Job.device_id == device.id, Job.engineer_id == caller.user_id)
        .order_by(Job.updated_ms.desc())
    ).all()
    if not jobs:
        return "only the engineer contracted on a job for this boiler may restart it"
    for job in jobs:
        if job.state == JobState.COMPLETED and job.completed_ms is not None:
            if now - job.completed_ms <= window_s * 1000:
                return None
            return (
                f"the restart window ({window_s:g} s after reporting completion) has passed; "
                "ask support"
            )
    if any(job.state == JobState.CONTRACTED for job in jobs):
        return "report the completed repair first: a restart follows the completion report"
    return "no completed repair of yours is awaiting verification on this boiler"


class EngineerRestartRule:
    """`CommandService` hook: lets the contracted engineer restart after completion."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s

    def __call__(self, session: Session, caller: Caller, device: Device, now: int) -> str | None:
        """None when allowed, else the reason it is refused."""
        return restart_refusal(session, caller, device, now, self.window_s)


def _normal(twin: Twin | None, state: Connectivity) -> bool:
    if twin is None or state is not Connectivity.ONLINE or twin.status is None:
        return False
    return twin.status not in ABNORMAL and not twin.fault_code


def _evidence(twin: Twin | None, state: Connectivity) -> dict[str, Any]:
    if twin is None:
        return {"connectivity": state.value}
    label = status_label(twin.status) or twin.status
    return {
        "connectivity": state.value,
        "status": label,
        "fault_code": twin.fault_code,
        "last_seen": twin.last_seen_ms,
        "twin_version": twin.version,
    }


def sweep_verification(session: Session, config: PlatformConfig, now: int) -> list[tuple[str, str]]:
    """Cross-check completed jobs against live data; returns (job id, new state) changed."""
    settings = config.settings
    changed = []
    jobs = session.scalars(
        select(Job).where(Job.state == JobState.COMPLETED.value).with_for_update().limit(200)
    ).all()
    for job in jobs:
        assert job.completed_ms is not None
        twin = session.get(Twin, job.device_id)
        state = connectivity(twin, now, int(settings.stale_after_s * 1000))
        relapse = session.scalars(
            select(Alarm)
            .where(
                Alarm.device_id == job.device_id,
                Alarm.kind == "lockout",
                _after_report(job),
            )
            .order_by(Alarm.start_ms)
            .limit(1)
        ).first()
        if relapse is not None:
            evidence = {"lockout": {"fault": relapse.name, "since": relapse.start_ms}}
            _fail(
                session,
                job,
                "locked out again after the repair",
                evidence | _evidence(twin, state),
                now,
            )
        elif _normal(twin, state):
            if job.normal_since_ms is None:
                job.normal_since_ms = now
            if now - job.normal_since_ms >= settings.verify_normal_s * 1000:
                _verify_with_precursor(session, config, job, _evidence(twin, state), now)
        else:
            job.normal_since_ms = None
            if now - job.completed_ms > settings.verify_timeout_s * 1000:
                _fail(
                    session, job, "never ran normally after the repair", _evidence(twin, state), now
                )
        if job.state != JobState.COMPLETED:
            changed.append((job.id, job.state))
    return changed


def _verify_with_precursor(
    session: Session, config: PlatformConfig, job: Job, evidence: dict[str, Any], now: int
) -> None:
    """Verify a job that has run normally long enough, unless it was raised from a warning
    whose precursor has not (yet) been seen gone: that job waits, and fails at the deadline."""
    checked = preventive.check_precursor(session, config, job, now)
    if checked is None:
        _verify(session, config, job, evidence, now)
        return
    warning, recovery = checked
    evidence = evidence | {"precursor": recovery.as_json()}
    if recovery.gone:
        _verify(session, config, job, evidence, now)
        preventive.close_warning(session, warning, job, now)
        return
    assert job.completed_ms is not None
    if now - job.completed_ms > config.settings.verify_timeout_s * 1000:
        why = (
            "still shows the warning's precursor after the repair"
            if recovery.gone is False
            else "sent too little data to show the warning's precursor gone"
        )
        _fail(session, job, why, evidence, now)


def _after_report(job: Job) -> ColumnElement[bool]:
    """Episodes begun after the completion report: by the device's clock, or (so a device clock
    running behind the cloud's cannot hide a relapse) by seq."""
    assert job.completed_ms is not None
    seq = job.report.get("seq_at_report")
    later = Alarm.start_ms > job.completed_ms
    return or_(later, Alarm.seq > seq) if isinstance(seq, int) else later


def _fail(session: Session, job: Job, why: str, evidence: dict[str, Any], now: int) -> None:
    move(session, job, JobState.FAILED_VERIFICATION, now)
    job.closed_reason = why
    record(
        session,
        job,
        JobEvent.VERIFICATION,
        "cloud",
        now,
        {"outcome": "failed", "because": why, "evidence": evidence},
    )
    notify(
        session,
        [job.owner_id, job.tenant_id, job.engineer_id],
        NotificationKind.FAILED_VERIFICATION,
        f"The repair did not hold: the boiler {why}",
        "Raise a new request, or contact support.",
        now_ms=now,
        device_id=job.device_id,
        job_id=job.id,
    )


def _verify(
    session: Session, config: PlatformConfig, job: Job, evidence: dict[str, Any], now: int
) -> None:
    move(session, job, JobState.VERIFIED, now)
    job.verified_ms = now
    assert job.normal_since_ms is not None
    record(
        session,
        job,
        JobEvent.VERIFICATION,
        "cloud",
        now,
        {
            "outcome": "verified",
            "normal_since": job.normal_since_ms,
            "normal_for_s": (now - job.normal_since_ms) / 1000,
            "required_s": config.settings.verify_normal_s,
            "evidence": evidence,
        },
    )
    token = secrets.token_urlsafe(24)
    job.evaluation_token_hash = token_hash(token)
    expires = now + int(config.settings.evaluation_ttl_s * 1000)
    job.evaluation = {"token_expires": expires}
    notify(
        session,
        [job.owner_id, job.engineer_id],
        NotificationKind.VERIFIED,
        "Repair verified: the boiler is running normally",
        now_ms=now,
        device_id=job.device_id,
        job_id=job.id,
    )
    notify(
        session,
        [job_end_user(job)],
        NotificationKind.EVALUATE,
        f"How did {job.engineer_id} do? Rate the service",
        "Your rating (1-5 for satisfaction and for quality) helps others choose.",
        now_ms=now,
        device_id=job.device_id,
        job_id=job.id,
        data={"evaluation_token": token, "expires": expires},
    )


def job_end_user(job: Job) -> str | None:
    """Who lived with the boiler when the job was raised: the tenant, else the owner."""
    return job.tenant_id or job.owner_id


def token_hash(token: str) -> str:
    """How evaluation tokens are stored (never in clear)."""
    return hashlib.sha256(token.encode()).hexdigest()


def evaluate(
    session: Session,
    caller: Caller,
    job: Job,
    token: str,
    cs: int,
    sq: int,
    comment: str,
    now: int,
) -> dict[str, Any]:
    """The end user rates the verified job once; returns the engineer's updated figures."""
    if caller.user_id != job_end_user(job):
        raise Forbidden("only the boiler's end user evaluates the service")
    if job.state == JobState.EVALUATED:
        raise Conflict("this job has already been evaluated")
    if job.state != JobState.VERIFIED or job.evaluation_token_hash is None:
        raise Conflict(f"job is {job.state}: only verified jobs are evaluated", state=job.state)
    if not secrets.compare_digest(token_hash(token), job.evaluation_token_hash):
        raise Forbidden("the evaluation token is not valid for this job")
    if now > int(job.evaluation.get("token_expires", 0)):
        raise Conflict("the evaluation link has expired")
    for name, score in (("cs", cs), ("sq", sq)):
        if score not in range(1, 6):
            raise InvalidInput(f"{name} must be a whole score from 1 to 5", field=name)
    if len(comment) > MAX_TEXT:
        raise InvalidInput("comment too long", field="comment")
    engineer = session.get(Engineer, job.engineer_id) if job.engineer_id else None
    if engineer is None:
        raise NotFound("the job's engineer no longer has a profile")
    n = engineer.evaluated
    before = (engineer.cs_sum / n if n else 0.0, engineer.sq_sum / n if n else 0.0)
    after = updated_means(before[0], before[1], n, cs, sq)  # eqs. 15-16
    engineer.cs_sum += cs
    engineer.sq_sum += sq
    engineer.evaluated = n + 1
    engineer.updated_ms = now
    figures = {"before": {"cs": before[0], "sq": before[1], "evaluated": n}}
    figures["after"] = {"cs": after[0], "sq": after[1], "evaluated": n + 1}
    job.evaluation_token_hash = None  # one time
    job.evaluation = {
        "cs": cs,
        "sq": sq,
        "comment": comment.strip(),
        "by": caller.user_id,
        "at": now,
    }
    move(session, job, JobState.EVALUATED, now)
    record(
        session,
        job,
        JobEvent.EVALUATION,
        caller.actor,
        now,
        {**job.evaluation, "engineer": engineer.user_id, "profile": figures},
    )
    return figures
