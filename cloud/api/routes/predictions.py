"""Predictive-maintenance warnings: read one, and book a preventive visit from it in one step
(`cloud.service.preventive`). A warning on a boiler the caller may not see is a 404."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Response
from fastapi.responses import JSONResponse

from cloud.access import can_see
from cloud.api.deps import API_PREFIX, CallerDep, ContextDep, SessionDep
from cloud.api.problems import AUTHENTICATED_RESPONSES
from cloud.api.routes.jobs import job_location
from cloud.api.schemas import PreventiveCreate
from cloud.errors import NotFound
from cloud.models import Device, Prediction
from cloud.predict.views import prediction_json
from cloud.service.views import job_json

router = APIRouter(prefix=API_PREFIX, tags=["predictions"], responses=AUTHENTICATED_RESPONSES)

PredictionId = Path(ge=1, le=2**62, description="the warning's id")


@router.get("/predictions/{prediction_id}")
def get_prediction(
    caller: CallerDep, session: SessionDep, prediction_id: int = PredictionId
) -> dict[str, Any]:
    """One warning with its evidence (active or ended)."""
    prediction = session.get(Prediction, prediction_id)
    device = None if prediction is None else session.get(Device, prediction.device_id)
    if prediction is None or device is None or not can_see(session, caller, device):
        raise NotFound(f"no warning {prediction_id}", prediction_id=prediction_id)
    return prediction_json(prediction)


@router.post("/predictions/{prediction_id}/jobs", status_code=201)
def raise_preventive_job(
    caller: CallerDep,
    ctx: ContextDep,
    body: PreventiveCreate | None = None,
    prediction_id: int = PredictionId,
) -> Response:
    """Book a preventive visit from an active warning: service type ``preventive``, problem
    ``predicted_<mode>`` (skills and cost from the service rules). The owner's is validated
    and crowdsourced at once; a tenant's or support's waits for the owner's authorisation.
    Asking again while the warning's job is open answers 200 with that job."""
    data = (body or PreventiveCreate()).warning_request(prediction_id)
    job, created = ctx.platform.raise_preventive(caller, data)
    return JSONResponse(
        job_json(job, caller),
        status_code=201 if created else 200,
        headers={"Location": job_location(job.id)},
    )
