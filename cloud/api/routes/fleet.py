"""Fleet-wide operations views (staff only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cloud.access import require_role
from cloud.api.deps import API_PREFIX, CallerDep, SessionDep
from cloud.api.problems import AUTHENTICATED_RESPONSES
from cloud.domain import STAFF
from cloud.fleet_views import ingest_figures

router = APIRouter(prefix=API_PREFIX, tags=["fleet"], responses=AUTHENTICATED_RESPONSES)


@router.get("/ingest/stats")
def ingest_stats(caller: CallerDep, session: SessionDep) -> dict[str, Any]:
    """Ingest outcomes by reason, and delivery totals over the fleet: what arrived, what was
    duplicated, what the gateways said they dropped, and what is missing unexplained."""
    require_role(caller, STAFF, "read ingest statistics")
    return ingest_figures(session)
