"""Exports (`cloud.exports`): a boiler's telemetry and thread for whoever may see the boiler
(an engineer gets the boiler's own events, as from ``GET /boilers/{id}/thread``), and the
fleet's for staff; CSV or Parquet, streamed, over ``[since, until)`` (default: the last 24
hours)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import Select

from cloud import exports, thread
from cloud.access import require_role, visible_device
from cloud.api.deps import API_PREFIX, CallerDep, ContextDep, SessionDep
from cloud.api.params import Moment, PointNames, moment_ms, parse_points
from cloud.api.problems import AUTHENTICATED_RESPONSES
from cloud.domain import STAFF, Role
from cloud.errors import InvalidInput

router = APIRouter(prefix=API_PREFIX, tags=["exports"], responses=AUTHENTICATED_RESPONSES)

DAY_MS = 86_400_000
Format = Annotated[str, Query(pattern="^(csv|parquet)$", description="csv or parquet")]
Since = Annotated[Moment | None, Query(description="ms or RFC 3339; default until - 24 h")]
Until = Annotated[Moment | None, Query(description="ms or RFC 3339; default now")]
Points = Annotated[list[PointNames] | None, Query(description="point names; all if absent")]
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
        "description": "the rows, streamed",
    }
}


def _range(ctx: ContextDep, since: int | str | None, until: int | str | None) -> tuple[int, int]:
    until_ms = moment_ms(until, "until")
    until_ms = ctx.clock() if until_ms is None else until_ms
    since_ms = moment_ms(since, "since")
    since_ms = max(0, until_ms - DAY_MS) if since_ms is None else since_ms
    return since_ms, until_ms  # an empty range exports no rows, as telemetry answers none


def _point_names(points: list[str] | None) -> list[str] | None:
    """The points asked for (None: all); an export names at most 32."""
    names, omitted = parse_points(points)
    if omitted:
        raise InvalidInput("at most 32 points per export", field="points")
    return names


def _response(
    ctx: ContextDep,
    table: exports.Table,
    form: str,
    name: str,
    query: Select[Any],
    to_row: Callable[[Any], tuple[Any, ...]],
) -> StreamingResponse:
    batches = exports.chunks(ctx.sessions, query, to_row)
    return StreamingResponse(
        exports.stream(table, form, batches),
        media_type=exports.FORMATS[form],
        headers={"Content-Disposition": f'attachment; filename="{name}.{form}"'},
    )


@router.get("/boilers/{device_id}/export/telemetry", responses=STREAMED)
def boiler_telemetry(
    device_id: str,
    caller: CallerDep,
    session: SessionDep,
    ctx: ContextDep,
    format: Format = "csv",
    since: Since = None,
    until: Until = None,
    points: Points = None,
) -> StreamingResponse:
    """One boiler's readings, oldest first."""
    device = visible_device(session, caller, device_id)
    session.close()
    names = _point_names(points)
    span = _range(ctx, since, until)
    query = exports.telemetry_query([device.id], names, *span)
    name = f"telemetry-{device.id}"
    return _response(ctx, exports.TELEMETRY, format, name, query, exports.telemetry_row)


@router.get("/boilers/{device_id}/export/thread", responses=STREAMED)
def boiler_thread(
    device_id: str,
    caller: CallerDep,
    session: SessionDep,
    ctx: ContextDep,
    format: Format = "csv",
    since: Since = None,
    until: Until = None,
) -> StreamingResponse:
    """One boiler's digital thread, oldest first (an engineer: the boiler's own events)."""
    device = visible_device(session, caller, device_id)
    session.close()
    kinds = list(thread.BOILER_KINDS) if caller.role is Role.ENGINEER else None
    query = exports.thread_query([device.id], kinds, *_range(ctx, since, until))
    return _response(ctx, exports.THREAD, format, f"thread-{device.id}", query, exports.thread_row)


@router.get("/fleet/export/telemetry", responses=STREAMED)
def fleet_telemetry(
    caller: CallerDep,
    ctx: ContextDep,
    format: Format = "csv",
    since: Since = None,
    until: Until = None,
    points: Points = None,
) -> StreamingResponse:
    """Every boiler's readings (staff only), by boiler then time."""
    require_role(caller, STAFF, "export the fleet's telemetry")
    names = _point_names(points)
    query = exports.telemetry_query(None, names, *_range(ctx, since, until))
    return _response(
        ctx, exports.TELEMETRY, format, "telemetry-fleet", query, exports.telemetry_row
    )


@router.get("/fleet/export/thread", responses=STREAMED)
def fleet_thread(
    caller: CallerDep,
    ctx: ContextDep,
    format: Format = "csv",
    since: Since = None,
    until: Until = None,
) -> StreamingResponse:
    """Every thread event (staff only), in the order they were recorded."""
    require_role(caller, STAFF, "export the fleet's thread")
    query = exports.thread_query(None, None, *_range(ctx, since, until))
    return _response(ctx, exports.THREAD, format, "thread-fleet", query, exports.thread_row)
