"""The support desk's gateway-lifecycle page (staff only): configuration layers, rollouts
and the agent versions across the fleet; the same figures as the API's
``GET /api/v1/config/layers``, ``GET /api/v1/updates/rollouts/{id}`` and
``GET /api/v1/fleet/versions`` (`cloud.device_config`, `cloud.rollouts`).

Its forms are the API's actions with the API's rules: staff set or remove a configuration
layer (``PUT /api/v1/config/layers/{scope}/{target}``, the settings checked by the same
schema), admins halt and resume a rollout. Settings are written as TOML dotted keys, one
per line (``report.poll_interval_s = 30``), the way they appear in ``edge.toml``.
"""

from __future__ import annotations

import json
import tomllib
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from cloud.access import require_role
from cloud.api.deps import ApiContext, ContextDep, SessionDep
from cloud.api.schemas import ConfigLayerBody
from cloud.db import transaction
from cloud.device_config import SCOPES, layers, set_layer
from cloud.domain import STAFF, Role
from cloud.errors import InvalidInput
from cloud.lifecycle_models import Rollout
from cloud.models import Device
from cloud.portal.forms import act, parse
from cloud.portal.pages.staff import staff_caller
from cloud.portal.render import page
from cloud.portal.session import PosterDep, VisitorDep
from cloud.rollouts import fleet_versions, halt_by_hand, resume, rollout_json

router = APIRouter(include_in_schema=False)

PAGE = "/fleet/lifecycle"
RECENT_ROLLOUTS = 20
ADMIN = frozenset({Role.ADMIN})
SCOPE_NAMES = {"fleet": "Every gateway", "model": "A boiler model", "device": "One gateway"}


@router.get(PAGE, response_class=HTMLResponse)
def lifecycle_page(request: Request, visitor: VisitorDep, session: SessionDep) -> Response:
    """Configuration layers, recent rollouts with their gateways by state, versions."""
    caller = staff_caller(visitor)
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
                "settings": dotted(layer.settings),
                "updated_by": layer.updated_by,
            }
            for layer in layers(session)
        ],
        scopes=SCOPE_NAMES,
        rollouts=[rollout_json(session, rollout) for rollout in rollouts],
        versions=sorted(fleet_versions(session).items()),
        admin=caller.role is Role.ADMIN,
    )


@router.post(f"{PAGE}/layers")
def set_config_layer(
    visitor: PosterDep,
    ctx: ContextDep,
    scope: Annotated[str, Form(max_length=20)] = "",
    target: Annotated[str, Form(max_length=100)] = "",
    settings: Annotated[str, Form(max_length=20_000)] = "",
) -> Response:
    """Set a layer (no settings: remove it); its gateways are sent their next version."""
    caller = staff_caller(visitor)

    def apply() -> str:
        require_role(caller, STAFF, "change remote configuration")
        if scope not in SCOPES:
            raise InvalidInput(f"choose who the settings are for ({', '.join(SCOPES)})")
        if scope != "fleet" and not target.strip():
            raise InvalidInput(f"name the {'model' if scope == 'model' else 'gateway'}")
        body = parse(ConfigLayerBody, {"settings": settings_from(settings)})
        with transaction(ctx.sessions) as session:
            if scope == "device" and session.get(Device, target.strip()) is None:
                raise InvalidInput(f"no gateway {target.strip()}", field="target")
            issued = set_layer(
                session,
                scope,
                target.strip() or "*",
                body.settings.document(),
                now_ms=ctx.clock(),
                issuer=ctx.issuer(caller.user_id),
            )
        _wake(ctx, bool(issued))
        what = "removed" if not body.settings.document() else "saved"
        return f"Layer {what}: {_gateways(len(issued))} sent a new configuration."

    return act(PAGE, apply)


@router.post(f"{PAGE}/rollouts/{{rollout_id}}/halt")
def halt_rollout(visitor: PosterDep, ctx: ContextDep, rollout_id: int) -> Response:
    """Halt by hand (admin): no more waves; the gateways updated so far go back."""
    caller = staff_caller(visitor)

    def stop() -> str:
        require_role(caller, ADMIN, "halt a rollout")
        with transaction(ctx.sessions) as session:
            halted = halt_by_hand(session, rollout_id, ctx.clock(), ctx.publisher(caller.user_id))
        if not halted:
            return f"Rollout {rollout_id} was not running; nothing changed."
        _wake(ctx, True)
        return f"Rollout {rollout_id} halted: the gateways it updated are going back."

    return act(PAGE, stop)


@router.post(f"{PAGE}/rollouts/{{rollout_id}}/resume")
def resume_rollout(visitor: PosterDep, ctx: ContextDep, rollout_id: int) -> Response:
    """Carry on after a halt (admin)."""
    caller = staff_caller(visitor)

    def carry_on() -> str:
        require_role(caller, ADMIN, "resume a rollout")
        with transaction(ctx.sessions) as session:
            resume(session, rollout_id, ctx.clock())
        return f"Rollout {rollout_id} resumed from its current wave."

    return act(PAGE, carry_on)


def settings_from(text: str) -> dict[str, Any]:
    """Settings written as TOML (dotted keys or tables); `InvalidInput` naming the line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"settings: {exc}", field="settings") from None


def dotted(settings: dict[str, Any], prefix: str = "") -> str:
    """`settings` as TOML dotted keys, one per line (what `settings_from` reads back)."""
    lines: list[str] = []
    for key, value in sorted(settings.items()):
        if isinstance(value, dict):
            lines.extend(filter(None, dotted(value, f"{prefix}{key}.").splitlines()))
        else:
            lines.append(f"{prefix}{key} = {json.dumps(value)}")
    return "\n".join(lines)


def _gateways(count: int) -> str:
    return "1 gateway" if count == 1 else f"{count:,} gateways"


def _wake(ctx: ApiContext, anything_issued: bool) -> None:
    """Have the dispatcher send new commands now, not at its next sweep."""
    if anything_issued and ctx.commands.wake is not None:
        ctx.commands.wake()
