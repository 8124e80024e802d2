"""The support desk's gateway-lifecycle page (staff only): configuration layers, rollouts
and the agent versions across the fleet; the same figures as the API's
``GET /api/v1/config/layers``, ``GET /api/v1/updates/rollouts/{id}`` and
``GET /api/v1/fleet/versions`` (`cloud.device_config`, `cloud.rollouts`). Changes are made
through the API or ``boilertwin cloud config`` / ``cloud rollouts``."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from cloud.api.deps import SessionDep
from cloud.device_config import layers
from cloud.lifecycle_models import Rollout
from cloud.portal.pages.staff import staff_caller
from cloud.portal.render import page
from cloud.portal.session import VisitorDep
from cloud.rollouts import fleet_versions, rollout_json

router = APIRouter(include_in_schema=False)

RECENT_ROLLOUTS = 20


@router.get("/fleet/lifecycle", response_class=HTMLResponse)
def lifecycle_page(request: Request, visitor: VisitorDep, session: SessionDep) -> Response:
    """Configuration layers, recent rollouts with their gateways by state, versions."""
    staff_caller(visitor)
    rollouts = session.scalars(
        select(Rollout).order_by(Rollout.id.desc()).limit(RECENT_ROLLOUTS)
    ).all()
    return page(
        request,
        "lifecycle.html",
        visitor,
        session,
        layers=[
            {
                "scope": layer.scope,
                "target": layer.target,
                "settings": json.dumps(layer.settings, sort_keys=True),
                "updated_by": layer.updated_by,
            }
            for layer in layers(session)
        ],
        rollouts=[rollout_json(session, rollout) for rollout in rollouts],
        versions=sorted(fleet_versions(session).items()),
    )
