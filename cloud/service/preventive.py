"""Preventive visits: a service request raised from a predictive-maintenance warning in one
step, and the check, at verification, that the warning's precursor has gone.

From a warning of failure mode ``m`` the request is service type ``preventive``, problem
``predicted_m`` (the service rules give its skills and cost), described from the warning.
The boiler's owner raises it like any request (validated, analysed and crowdsourced at once;
the validation matches on the active warning); a tenant or support raises it for the owner to
authorise. One warning has at most one open job: asking again answers with that job.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud import thread
from cloud.access import can_see
from cloud.domain import Caller, JobState
from cloud.errors import Conflict, Forbidden, NotFound
from cloud.models import Device, Job, Prediction
from cloud.predict.recovery import Recovery, precursor_gone
from cloud.predict.runner import MODE_TEXT, REPAIR_VERIFIED, PredictionState, end_prediction
from cloud.service import requests
from cloud.service.config import PREVENTIVE, PlatformConfig, problem_of
from cloud.service.domain import RequestInput, WarningRequest


def open_job(session: Session, prediction: Prediction) -> Job | None:
    """The warning's job, while it is still going (not closed, not yet verified)."""
    if prediction.job_id is None:
        return None
    job = session.get(Job, prediction.job_id)
    if job is None or JobState(job.state).closed or job.state == JobState.VERIFIED:
        return None
    return job


def raise_from_warning(
    session: Session, config: PlatformConfig, caller: Caller, data: WarningRequest, now: int
) -> tuple[Job, bool]:
    """The preventive job for the warning (new, or the one already open for it)."""
    prediction = session.get(Prediction, data.prediction_id, with_for_update=True)
    device = None if prediction is None else session.get(Device, prediction.device_id)
    if (
        prediction is None
        or device is None
        or device.revoked
        or not can_see(session, caller, device)
    ):
        raise NotFound(f"no warning {data.prediction_id}", prediction_id=data.prediction_id)
    if not (caller.is_staff or caller.role in requests.REQUESTERS):
        raise Forbidden(
            f"{caller.role.article} may not raise a service request", role=caller.role.value
        )
    if (existing := open_job(session, prediction)) is not None:
        return existing, False
    if prediction.state != PredictionState.ACTIVE:
        raise Conflict(
            f"warning {prediction.id} has ended ({prediction.ended_reason or prediction.state})",
            state=prediction.state,
        )
    what = MODE_TEXT.get(prediction.mode, prediction.mode.replace("_", " "))
    stated = data.description.strip()
    description = (
        f"Preventive visit: {what}, {prediction.fault} forecast in about "
        f"{prediction.days_to_fault:.0f} days ({prediction.days_low:.0f} to "
        f"{prediction.days_high:.0f})" + (f". {stated}" if stated else "")
    )
    request = RequestInput(
        device_id=device.id,
        service_type=PREVENTIVE,
        problem=problem_of(prediction.mode),
        description=description[: requests.MAX_TEXT],
        preferred_ms=data.preferred_ms,
        principle=data.principle,
        min_performance=data.min_performance,
    )
    requests.check_input(config, request)
    job = requests.open_request(
        session,
        config,
        caller,
        device,
        request,
        now,
        evidence={"prediction": prediction.id, "prediction_evidence": prediction.evidence},
    )
    prediction.job_id = job.id
    prediction.updated_ms = max(prediction.updated_ms, now)
    thread.record(
        session,
        device_id=device.id,
        kind=thread.ThreadKind.PREDICTION,
        ts_ms=now,
        recorded_ms=now,
        actor=caller.actor,
        subject=job.id,
        data={"event": "job_raised", "prediction": prediction.id, "job": job.id},
    )
    return job, True


def linked_warning(session: Session, job: Job) -> Prediction | None:
    """The active warning a job was raised from, if any."""
    return session.scalars(
        select(Prediction).where(
            Prediction.job_id == job.id, Prediction.state == PredictionState.ACTIVE
        )
    ).first()


def check_precursor(
    session: Session, config: PlatformConfig, job: Job, now: int
) -> tuple[Prediction, Recovery] | None:
    """For a job raised from a still-active warning: has its precursor gone since the
    completion report? None for any other job."""
    warning = linked_warning(session, job)
    if warning is None or job.completed_ms is None:
        return None
    return warning, precursor_gone(session, config.detectors, warning, job.completed_ms, now)


def close_warning(session: Session, warning: Prediction, job: Job, now: int) -> None:
    """The repair is verified and the precursor gone: the warning ends."""
    end_prediction(
        session, warning, PredictionState.CLEARED, REPAIR_VERIFIED, now, actor=f"job:{job.id}"
    )
