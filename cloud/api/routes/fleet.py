"""Fleet-wide operations views (staff only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cloud.access import require_role
from cloud.api.deps import API_PREFIX, CallerDep, SessionDep
from cloud.api.problems import AUTHENTICATED_RESPONSES
from cloud.domain import STAFF
from cloud.fleet_views import ingest_figures
from cloud.predict.views import at_risk, at_risk_count, prediction_json

router = APIRouter(prefix=API_PREFIX, tags=["fleet"], responses=AUTHENTICATED_RESPONSES)


@router.get("/ingest/stats")
def ingest_stats(caller: CallerDep, session: SessionDep) -> dict[str, Any]:
    """Ingest outcomes by reason, and delivery totals over the fleet: what arrived, what was
    duplicated, what the gateways said they dropped, and what is missing unexplained."""
    require_role(caller, STAFF, "read ingest statistics")
    return ingest_figures(session)


@router.get("/fleet/at-risk")
def fleet_at_risk(caller: CallerDep, session: SessionDep) -> dict[str, Any]:
    """Boilers with an active predictive-maintenance warning, the soonest forecast fault
    first (at most 200 warnings; ``boilers`` counts them all)."""
    require_role(caller, STAFF, "read the fleet's warnings")
    rows = at_risk(session)
    return {
        "boilers": at_risk_count(session),
        "warnings": [
            prediction_json(p, evidence=False) | {"model": d.model, "address": d.address}
            for p, d in rows
        ],
    }
