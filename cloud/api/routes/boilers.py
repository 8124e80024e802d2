"""Boilers: the fleet list, the product twin (ETag, conditional requests), attribute
changes, telemetry and the digital thread."""

from __future__ import annotations

import logging
from datetime import date
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud import thread
from cloud.access import redact_people, require_role, sees_people, visible_device
from cloud.api.deps import API_PREFIX, ApiContext, CallerDep, ContextDep, SessionDep
from cloud.api.params import (
    AFTER,
    DURATION,
    OFFSET,
    Moment,
    PointNames,
    match,
    moment_ms,
    none_match,
    parse_duration,
    parse_list,
    parse_points,
)
from cloud.api.problems import AUTHENTICATED_RESPONSES, PROBLEM_RESPONSES
from cloud.api.schemas import BoilerPatch
from cloud.domain import STAFF, Connectivity, Role
from cloud.errors import Conflict, InvalidInput, PreconditionFailed, PreconditionRequired
from cloud.fleet_views import boiler_rows
from cloud.models import Twin, TwinValue, User
from cloud.predict.views import device_predictions, prediction_json
from cloud.service.domain import JobEvent
from cloud.twin import update
from cloud.twin.figures import timeseries
from cloud.twin.read import connectivity, etag, stale_ms, twin_json
from protocols.reference import REFERENCE_MAP, BoilerStatus

log = logging.getLogger(__name__)

router = APIRouter(
    prefix=f"{API_PREFIX}/boilers", tags=["boilers"], responses=AUTHENTICATED_RESPONSES
)

DAY_MS = 86_400_000
StatusLabel = StrEnum(  # type: ignore[misc]
    "StatusLabel", {status.label: status.label for status in BoilerStatus}
)
"""The status filter's values: the labels of `BoilerStatus` (standby ... lockout)."""
_KIND_NAMES = [
    value
    for source in (thread.ThreadKind, JobEvent)
    for name, value in vars(source).items()
    if name.isupper() and isinstance(value, str)
]
THREAD_KINDS = rf"^({'|'.join(_KIND_NAMES)})(,({'|'.join(_KIND_NAMES)}))*$"
"""One or more thread event kinds (the core's and the service platform's), comma-separated."""


@router.get("")
def list_boilers(
    caller: CallerDep,
    session: SessionDep,
    ctx: ContextDep,
    connectivity: Connectivity | None = None,
    status: Annotated[StatusLabel | None, Query(description="status label, e.g. lockout")] = None,
    q: Annotated[
        str | None, Query(max_length=100, description="search id/serial/model/address")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, OFFSET] = 0,
) -> dict[str, Any]:
    """The boilers the caller may see, by id, with optional filters; ``total`` ignores paging."""
    label = status.value if status is not None else None
    items, total = boiler_rows(
        session, caller, ctx.settings, ctx.clock(), connectivity, label, q, limit, offset
    )
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/{device_id}", responses={304: {"description": "Not modified (If-None-Match)"}})
def get_boiler(
    device_id: str,
    caller: CallerDep,
    session: SessionDep,
    ctx: ContextDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The product twin, with its version as a strong ``ETag``; 304 for a matching
    ``If-None-Match``."""
    device = visible_device(session, caller, device_id)
    twin = session.get(Twin, device.id)
    tag = _tag(twin, ctx)
    headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
    if none_match(if_none_match, tag):
        return Response(status_code=304, headers=headers)
    body = twin_json(session, device, ctx.clock(), ctx.settings)
    if not sees_people(session, caller, device):
        body = redact_people(body)
    return JSONResponse(body, headers=headers)


PATCH_ROLES = STAFF
_PATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: PROBLEM_RESPONSES[code] | {"description": text}
    for code, text in (
        (409, "owner or tenant names no user with that role"),
        (412, "If-Match is stale"),
        (428, "If-Match is missing"),
    )
}


@router.patch("/{device_id}", responses=_PATCH_RESPONSES)
def patch_boiler(
    device_id: str,
    body: BoilerPatch,
    caller: CallerDep,
    session: SessionDep,
    ctx: ContextDep,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Change attributes (admin/support). Needs ``If-Match`` with the current ETag: 428
    without one, 412 if the twin changed since. Bumps the version and records who changed
    what in the thread."""
    device = visible_device(session, caller, device_id)
    require_role(caller, PATCH_ROLES, "change boiler attributes")
    if if_match is None:
        raise PreconditionRequired(
            "send If-Match with the boiler's current ETag", device_id=device_id
        )
    twin = session.get(Twin, device.id)
    version = twin.version if twin else 0
    if not match(if_match, _tag(twin, ctx)):
        raise PreconditionFailed(
            "the boiler changed since that ETag; fetch it again", device_id=device_id
        )
    now = ctx.clock()
    changes = update.change_attributes(
        session,
        device,
        _wanted(session, body),
        version=version,
        actor=caller.actor,
        role=caller.role.value,
        now=now,
    )
    if changes:
        session.commit()
        log.info("%s: attributes %s changed by %s", device.id, ", ".join(changes), caller.user_id)
    session.refresh(device)
    twin = session.get(Twin, device.id, populate_existing=True)
    return JSONResponse(
        twin_json(session, device, now, ctx.settings), headers={"ETag": _tag(twin, ctx)}
    )


def _tag(twin: Twin | None, ctx: ApiContext) -> str:
    """The twin's ETag now: its version and the connectivity it shows at this moment."""
    state = connectivity(twin, ctx.clock(), stale_ms(ctx.settings))
    return etag(twin.version if twin else 0, state)


def _wanted(session: Session, body: BoilerPatch) -> dict[str, Any]:
    """Device columns and values for the fields present in `body` (checked, not yet set)."""
    fields = body.model_fields_set
    wanted: dict[str, Any] = {}
    for name in ("model", "serial", "address"):
        if name in fields:
            wanted[name] = getattr(body, name)
    if "install_date" in fields:
        day: date | None = body.install_date
        wanted["install_date"] = day.isoformat() if day else None
    if "owner" in fields:
        wanted["owner_id"] = _user_with_role(session, body.owner, Role.OWNER, "owner")
    if "tenant" in fields:
        wanted["tenant_id"] = _user_with_role(session, body.tenant, Role.TENANT, "tenant")
    if "location" in fields:
        wanted["lat"] = body.location.lat if body.location else None
        wanted["lon"] = body.location.lon if body.location else None
    return wanted


def _user_with_role(session: Session, user_id: str | None, role: Role, field: str) -> str | None:
    if user_id is None:
        return None
    user = session.get(User, user_id)
    if user is None or user.role != role.value:
        # Well formed, but it names no such user: a conflict with what is stored.
        raise Conflict(f"{field} must be an existing {role} user", field=field, user=user_id)
    return user.id


def known_points(session: Session, device_id: str) -> set[str]:
    """The points a telemetry query may name: the reference map's and any the boiler has
    reported (a gateway with its own register map profile may have more)."""
    reported = session.scalars(
        select(TwinValue.point).where(TwinValue.device_id == device_id)
    ).all()
    return {point.name for point in REFERENCE_MAP.points} | set(reported)


@router.get("/{device_id}/telemetry")
def telemetry(
    device_id: str,
    caller: CallerDep,
    session: SessionDep,
    ctx: ContextDep,
    points: Annotated[
        list[PointNames] | None,
        Query(description="point names, a,b or repeated; all if absent"),
    ] = None,
    since: Annotated[
        Moment | None, Query(description="ms since the epoch or RFC 3339; default until - 24 h")
    ] = None,
    until: Annotated[
        Moment | None, Query(description="ms since the epoch or RFC 3339; default now")
    ] = None,
    step: Annotated[
        str | None, Query(pattern=DURATION, description="bucket width: ms or 30s/15m/1h/1d")
    ] = None,
    max_points: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """Readings in ``[since, until)``: raw, or averaged per bucket (avg/min/max/count) when
    ``step`` is given or there are more than ``max_points`` readings of a point. A step
    that would give more than ``max_points`` buckets is widened (``step`` in the answer says
    which was used); an empty range has no readings. At most 32 points per query: any
    further names are listed in ``omitted_points``."""
    device = visible_device(session, caller, device_id)
    until_ms = moment_ms(until, "until")
    if until_ms is None:
        until_ms = ctx.clock()
    since_ms = moment_ms(since, "since")
    if since_ms is None:
        since_ms = max(0, until_ms - DAY_MS)
    names, omitted = parse_points(points)
    if names is not None:
        known = known_points(session, device.id)
        unknown = [name for name in names if name not in known]
        if unknown:
            raise InvalidInput(
                f"unknown point{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"this boiler's points are {', '.join(sorted(known))}",
                field="points",
            )
    series = timeseries(
        session, device.id, names, since_ms, until_ms, parse_duration(step, "step"), max_points
    )
    if omitted:
        series["omitted_points"] = omitted
    return series


@router.get("/{device_id}/thread")
def boiler_thread(
    device_id: str,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    after: Annotated[int, AFTER] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    kind: Annotated[
        list[Annotated[str, Field(pattern=THREAD_KINDS)]] | None,
        Query(description="event kinds, a,b or repeated; all if absent"),
    ] = None,
) -> Response:
    """The boiler's digital thread, oldest first. ``next`` (and a ``Link: rel="next"``
    header) continues it; null at the end."""
    device = visible_device(session, caller, device_id)
    kinds = parse_list(kind)
    if caller.role is Role.ENGINEER:  # the boiler's own events; jobs have their own thread
        kinds = [k for k in kinds or thread.BOILER_KINDS if k in thread.BOILER_KINDS] or ["-"]
    page = thread.page(session, device.id, after=after, limit=limit, kinds=kinds)
    headers = {}
    if page.next_after is not None:
        url = request.url.include_query_params(after=page.next_after)
        headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    body = {"events": [thread.event_json(e) for e in page.events], "next": page.next_after}
    return JSONResponse(body, headers=headers)


@router.get("/{device_id}/predictions")
def boiler_predictions(
    device_id: str,
    caller: CallerDep,
    session: SessionDep,
    include_ended: Annotated[bool, Query(description="also cleared and fulfilled ones")] = False,
) -> dict[str, Any]:
    """Predictive-maintenance warnings for the boiler: the failure mode, the fault it leads
    to, the forecast time to fault with its bounds, the evidence and the rules version."""
    device = visible_device(session, caller, device_id)
    rows = device_predictions(session, device.id, include_ended=include_ended)
    return {"predictions": [prediction_json(p) for p in rows]}
