"""Agent releases and staged rollouts (admin to start, halt and resume; staff to read), the
fleet's agent versions, and the artifacts gateways download (`cloud.rollouts`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from cloud import key_rotation
from cloud.access import require_role
from cloud.api.deps import API_PREFIX, CallerDep, ContextDep, SessionDep
from cloud.api.problems import AUTHENTICATED_RESPONSES, PROBLEM_RESPONSES
from cloud.db import transaction
from cloud.domain import STAFF, Role
from cloud.errors import NotFound
from cloud.lifecycle_models import Release, Rollout
from cloud.rollouts import (
    artifact_for,
    fleet_versions,
    halt_by_hand,
    resume,
    rollout_json,
    start_rollout,
)

router = APIRouter(prefix=API_PREFIX, tags=["updates"], responses=AUTHENTICATED_RESPONSES)
artifacts = APIRouter(prefix=API_PREFIX, tags=["updates"])
ADMIN = frozenset({Role.ADMIN})
RolloutId = Path(ge=1, le=2**62, description="the rollout's id")


class RolloutBody(BaseModel):
    """A rollout to start."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64, examples=["0.2.0"])
    waves: list[float] = Field(default=[1, 10, 50, 100], min_length=1, max_length=20)
    max_failure_rate: float = Field(default=0.1, ge=0, lt=1)
    min_wave_s: float = Field(default=600, ge=0, le=30 * 86400)
    model: str | None = Field(default=None, max_length=100)


@router.get("/updates/releases")
def list_releases(caller: CallerDep, session: SessionDep) -> dict[str, Any]:
    """Every release, newest first."""
    require_role(caller, STAFF, "read releases")
    rows = session.scalars(select(Release).order_by(Release.created_ms.desc()))
    return {
        "releases": [
            {
                "version": r.version,
                "sha256": r.sha256,
                "size": r.size,
                "min_agent": r.min_agent,
                "created_ms": r.created_ms,
            }
            for r in rows
        ]
    }


@router.post("/updates/rollouts", status_code=201)
def create_rollout(caller: CallerDep, ctx: ContextDep, body: RolloutBody) -> dict[str, Any]:
    """Start a staged rollout; its first wave is sent at once."""
    require_role(caller, ADMIN, "start a rollout")
    with transaction(ctx.sessions) as session:
        rollout = start_rollout(
            session,
            body.version,
            waves=body.waves,
            max_failure_rate=body.max_failure_rate,
            min_wave_s=body.min_wave_s,
            model=body.model,
            now_ms=ctx.clock(),
            publisher=ctx.publisher(caller.user_id),
        )
        answer = rollout_json(session, rollout)
    if ctx.commands.wake is not None:
        ctx.commands.wake()
    return answer


@router.get("/updates/rollouts/{rollout_id}")
def get_rollout(
    caller: CallerDep, session: SessionDep, rollout_id: int = RolloutId
) -> dict[str, Any]:
    """A rollout and its gateways by state and wave."""
    require_role(caller, STAFF, "read rollouts")
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"no rollout {rollout_id}", rollout=rollout_id)
    return rollout_json(session, rollout)


@router.post("/updates/rollouts/{rollout_id}/halt")
def halt_rollout(caller: CallerDep, ctx: ContextDep, rollout_id: int = RolloutId) -> dict[str, Any]:
    """Halt by hand: no more waves, and the gateways updated so far go back."""
    require_role(caller, ADMIN, "halt a rollout")
    with transaction(ctx.sessions) as session:
        halt_by_hand(session, rollout_id, ctx.clock(), ctx.publisher(caller.user_id))
        answer = rollout_json(session, session.get_one(Rollout, rollout_id))
    if ctx.commands.wake is not None:
        ctx.commands.wake()
    return answer


@router.post("/updates/rollouts/{rollout_id}/resume")
def resume_rollout(
    caller: CallerDep, ctx: ContextDep, rollout_id: int = RolloutId
) -> dict[str, Any]:
    """Carry on after a halt (judged afresh on what finishes from now on)."""
    require_role(caller, ADMIN, "resume a rollout")
    with transaction(ctx.sessions) as session:
        rollout = resume(session, rollout_id, ctx.clock())
        return rollout_json(session, rollout)


class KeyRotationBody(BaseModel):
    """How long the old key still verifies once the new one is registered."""

    model_config = ConfigDict(extra="forbid")

    grace_s: int = Field(default=86_400, ge=60, le=30 * 86_400)


@router.post(
    "/boilers/{device_id}/key-rotation", status_code=202, responses={409: PROBLEM_RESPONSES[409]}
)
def rotate_device_key(
    caller: CallerDep, ctx: ContextDep, device_id: str, body: KeyRotationBody | None = None
) -> dict[str, Any]:
    """Rotate the gateway's key: it makes and proves a new one, the cloud registers it, then
    tells it to use it; the old key verifies for ``grace_s`` more (`cloud.key_rotation`)."""
    require_role(caller, ADMIN, "rotate a device key")
    grace = (body or KeyRotationBody()).grace_s
    with transaction(ctx.sessions) as session:
        command = key_rotation.start(
            session, device_id, ctx.issuer(caller.user_id), now_ms=ctx.clock(), grace_s=grace
        )
        answer = {"device_id": device_id, "command_id": command.id, "grace_s": grace}
    if ctx.commands.wake is not None:
        ctx.commands.wake()
    return answer


@router.get("/fleet/versions")
def versions(caller: CallerDep, session: SessionDep) -> dict[str, Any]:
    """Gateways per running agent version."""
    require_role(caller, STAFF, "read the fleet's versions")
    return {"versions": fleet_versions(session)}


@artifacts.get(
    "/updates/artifacts/{sha256}",
    response_class=FileResponse,
    responses={code: PROBLEM_RESPONSES[code] for code in (404, 422)},
)
def download_artifact(
    ctx: ContextDep,
    sha256: str = Path(pattern="^[0-9a-f]{64}$"),
    dev: str = Query(default="", max_length=64, description="the gateway the link is for"),
    t: str = Query(default="", max_length=64, description="the link's token"),
) -> FileResponse:
    """A release's wheel, by its SHA-256 (``Range`` supported, to resume), for the gateway
    whose update command carried this link (any other request: 404)."""
    with ctx.sessions() as session:
        path = artifact_for(session, ctx.commands.key, ctx.settings.artifacts_dir, sha256, dev, t)
    return FileResponse(path, media_type="application/octet-stream")
