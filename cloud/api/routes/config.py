"""Remote configuration (staff only): layers for the fleet, a model or one boiler, and
each boiler's desired vs reported configuration (`cloud.device_config`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from cloud.access import require_role
from cloud.api.deps import API_PREFIX, CallerDep, ContextDep, SessionDep
from cloud.api.problems import AUTHENTICATED_RESPONSES
from cloud.api.schemas import ConfigLayerBody
from cloud.db import transaction
from cloud.device_config import config_view, layers, set_layer
from cloud.domain import STAFF
from cloud.errors import NotFound
from cloud.lifecycle_models import ConfigLayer
from cloud.models import Device

router = APIRouter(prefix=API_PREFIX, tags=["configuration"], responses=AUTHENTICATED_RESPONSES)

Scope = Path(pattern="^(fleet|model|device)$", description="fleet, model or device")
Target = Path(min_length=1, max_length=100, description="* for the fleet; a model; a device id")


def layer_json(layer: ConfigLayer) -> dict[str, Any]:
    return {
        "scope": layer.scope,
        "target": layer.target,
        "settings": layer.settings,
        "updated_ms": layer.updated_ms,
        "updated_by": layer.updated_by,
    }


@router.get("/config/layers")
def list_layers(caller: CallerDep, session: SessionDep) -> dict[str, Any]:
    """Every configuration layer, the fleet's first."""
    require_role(caller, STAFF, "read remote configuration")
    return {"layers": [layer_json(layer) for layer in layers(session)]}


@router.put("/config/layers/{scope}/{target}")
def put_layer(
    caller: CallerDep,
    ctx: ContextDep,
    body: ConfigLayerBody,
    scope: str = Scope,
    target: str = Target,
) -> dict[str, Any]:
    """Set a layer (an empty ``settings`` removes it); every boiler whose configuration
    changes is sent its next version at once. Answers which boilers were sent one."""
    require_role(caller, STAFF, "change remote configuration")
    with transaction(ctx.sessions) as session:
        issued = set_layer(
            session,
            scope,
            target,
            body.settings.document(),
            now_ms=ctx.clock(),
            issuer=ctx.issuer(caller.user_id),
        )
    if issued and ctx.commands.wake is not None:
        ctx.commands.wake()
    return {"scope": scope, "target": target, "issued": len(issued), "devices": issued[:1000]}


@router.get("/boilers/{device_id}/config")
def boiler_config(caller: CallerDep, session: SessionDep, device_id: str) -> dict[str, Any]:
    """The configuration the boiler should run (desired) and the one it runs (reported),
    with the reason if it rejected the last one."""
    require_role(caller, STAFF, "read remote configuration")
    if session.get(Device, device_id) is None:
        raise NotFound(f"no boiler {device_id}", device_id=device_id)
    return {"device_id": device_id, **config_view(session, device_id)}
