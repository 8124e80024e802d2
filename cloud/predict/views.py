"""Read side of the warnings: JSON for the API and the portal, the fleet's "at risk" list."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.models import Device, Prediction
from cloud.predict.runner import MODE_TEXT, PredictionState
from protocols.reference import FaultCode

AT_RISK_LIMIT = 200


def prediction_json(prediction: Prediction, *, evidence: bool = True) -> dict[str, Any]:
    """One warning: what, when the fault is forecast (with bounds), why, and its state."""
    try:
        fault_text = FaultCode.parse(prediction.fault).text
    except ValueError:
        fault_text = None
    body: dict[str, Any] = {
        "id": prediction.id,
        "device_id": prediction.device_id,
        "mode": prediction.mode,
        "text": MODE_TEXT.get(prediction.mode, prediction.mode),
        "fault": prediction.fault,
        "fault_text": fault_text,
        "state": prediction.state,
        "raised": prediction.raised_ms,
        "updated": prediction.updated_ms,
        "ended": prediction.ended_ms,
        "ended_reason": prediction.ended_reason,
        "days_to_fault": prediction.days_to_fault,
        "days_low": prediction.days_low,
        "days_high": prediction.days_high,
        "due": prediction.due_ms,
        "model_version": prediction.model_version,
        "job_id": prediction.job_id,
    }
    if evidence:
        body["evidence"] = prediction.evidence
    return body


def device_predictions(
    session: Session, device_id: str, *, include_ended: bool = False, limit: int = 50
) -> list[Prediction]:
    """A boiler's warnings, active first, then the most recent ended ones."""
    query = select(Prediction).where(Prediction.device_id == device_id)
    if not include_ended:
        query = query.where(Prediction.state == PredictionState.ACTIVE)
    rows = session.scalars(query.order_by(Prediction.raised_ms.desc()).limit(limit))
    return sorted(rows, key=lambda p: (p.state != PredictionState.ACTIVE, p.due_ms))


def at_risk(
    session: Session, devices: Collection[str] | None = None, limit: int = AT_RISK_LIMIT
) -> list[tuple[Prediction, Device]]:
    """Active warnings, soonest forecast fault first (`devices`: only these boilers)."""
    query = (
        select(Prediction, Device)
        .join(Device, Device.id == Prediction.device_id)
        .where(Prediction.state == PredictionState.ACTIVE)
    )
    if devices is not None:
        query = query.where(Prediction.device_id.in_(devices))
    return [(p, d) for p, d in session.execute(query.order_by(Prediction.due_ms).limit(limit))]


def at_risk_count(session: Session) -> int:
    """Boilers with at least one active warning."""
    return (
        session.scalar(
            select(func.count(func.distinct(Prediction.device_id))).where(
                Prediction.state == PredictionState.ACTIVE
            )
        )
        or 0
    )
