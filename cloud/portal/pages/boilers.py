"""The boiler page (every role that may see the boiler, checked as the API checks it): the
twin now, live; what to do about it; charts over a chosen range; availability against the
guarantee; fault history; service jobs; and the digital thread."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud import thread
from cloud.access import redact_people, sees_people, visible_device, visible_jobs
from cloud.api.deps import ApiContext, ContextDep, SessionDep
from cloud.device_config import config_view
from cloud.domain import Caller, Role
from cloud.models import Device, Job, ThreadEvent, Twin
from cloud.portal.charts import chart_svg, lines_from
from cloud.portal.feed import twin_key
from cloud.portal.live import Snapshot, live_response
from cloud.portal.pages.commands import command_on_page, new_key
from cloud.portal.pages.lifecycle import dotted
from cloud.portal.render import Formats, fragment, name_lookup, page
from cloud.portal.session import VisitorDep
from cloud.portal.timeline import describe
from cloud.predict.views import device_predictions, prediction_json
from cloud.service import preventive
from cloud.twin.figures import timeseries
from cloud.twin.read import connectivity, stale_ms, twin_json
from cloud.twin.rollups import HOUR_MS, MINUTE_MS
from protocols.reference import BoilerStatus, fault_name, fault_text, status_label

router = APIRouter(include_in_schema=False)

RANGES = {"15m": 900_000, "1h": 3_600_000, "6h": 6 * 3_600_000, "24h": 86_400_000}
RANGES["7d"] = 7 * 86_400_000
RANGES["30d"] = 30 * 86_400_000
RANGE_NAMES = {"15m": "Last 15 minutes", "1h": "Last hour", "6h": "Last 6 hours"}
RANGE_NAMES |= {"24h": "Last 24 hours"}
RANGE_NAMES |= {"7d": "Last 7 days", "30d": "Last 30 days"}
CHARTS: dict[str, dict[str, tuple[str, str]]] = {
    "Temperatures": {
        "flow_temp": ("Flow", "\N{DEGREE SIGN}C"),
        "return_temp": ("Return", "\N{DEGREE SIGN}C"),
        "dhw_temp": ("Hot water", "\N{DEGREE SIGN}C"),
        "outdoor_temp": ("Outdoor", "\N{DEGREE SIGN}C"),
    },
    "Water pressure": {"ch_pressure": ("Pressure", "bar")},
    "Burner modulation": {"modulation": ("Modulation", "%")},
}
CHART_POINTS = 300
THREAD_EVENTS = 60
CONFIG_STATES = {
    "in_sync": "Up to date",
    "pending": "Waiting for the gateway",
    "rejected": "Refused by the gateway",
}
OPEN_STATES = ("pending_authorization", "flagged", "crowdsourcing", "shortlisted", "contracted")


def now_panel(session: Session, ctx: ApiContext, caller: Caller, device: Device) -> dict[str, Any]:
    """The twin as `caller` may see it (people redacted for an invited engineer)."""
    body = twin_json(session, device, ctx.clock(), ctx.settings)
    row = session.get(Twin, device.id)
    status, fault = (row.status, row.fault_code) if row else (None, None)
    body["now"] = {
        "status": status_label(status),
        "fault": fault_name(fault),
        "fault_text": fault_text(fault),
    }
    return body if sees_people(session, caller, device) else redact_people(body)


def chart_start(now_ms: int, range_ms: int) -> int:
    """Where a chart of the last `range_ms` begins: on a whole hour for a week or more, else
    on a whole minute, so that its buckets are read from rollups on PostgreSQL
    (`cloud.twin.rollups`) instead of every raw reading."""
    whole = HOUR_MS if range_ms >= 7 * 86_400_000 else MINUTE_MS
    return (now_ms - range_ms) // whole * whole


def now_key(session: Session, ctx: ApiContext, device_id: str) -> tuple[int, str]:
    """Changes whenever the 'now' panel would: the twin's version and connectivity."""
    twin = session.get(Twin, device_id)
    state = connectivity(twin, ctx.clock(), stale_ms(ctx.settings))
    return (twin.version if twin else 0, state.value)


def open_job(session: Session, caller: Caller, device_id: str) -> Job | None:
    """The caller's visible job on this boiler that is still in progress, if any."""
    return session.scalars(
        select(Job)
        .where(Job.device_id == device_id, Job.state.in_(OPEN_STATES), visible_jobs(caller))
        .order_by(Job.created_ms.desc())
        .limit(1)
    ).first()


@router.get("/boilers/{device_id}", response_class=HTMLResponse)
def boiler_page(
    request: Request,
    device_id: str,
    visitor: VisitorDep,
    session: SessionDep,
    ctx: ContextDep,
    range: Annotated[str, Query(pattern="^(15m|1h|6h|24h|7d|30d)$")] = "24h",
    command: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """One boiler as the visitor may see it."""
    caller = visitor.caller
    device = visible_device(session, caller, device_id)
    twin = now_panel(session, ctx, caller, device)
    now = ctx.clock()
    since = chart_start(now, RANGES[range])
    series = timeseries(
        session,
        device.id,
        [p for chart in CHARTS.values() for p in chart],
        since,
        now,
        None,
        CHART_POINTS,
    )["points"]
    charts = [
        (title, chart_svg(title, lines_from(series, labels), since, now, _short_when(ctx)))
        for title, labels in CHARTS.items()
    ]
    jobs = session.scalars(
        select(Job)
        .where(Job.device_id == device.id, visible_jobs(caller))
        .order_by(Job.created_ms.desc())
        .limit(20)
    ).all()
    warnings = device_predictions(session, device.id)
    name_of = name_lookup(session)
    restart, config = None, None
    if caller.is_staff:
        restart = ctx.commands.restart_refusal(session, caller, device)
        config = config_view(session, device.id)
    return page(
        request,
        "boiler.html",
        visitor,
        session,
        device=device,
        twin=twin,
        range=range,
        ranges=RANGE_NAMES,
        charts=charts,
        jobs=jobs,
        open_job=open_job(session, caller, device.id),
        events=[(e, describe(e, name_of)) for e in _thread(session, caller, device.id)],
        may_request=caller.role in (Role.OWNER, Role.TENANT),
        staff=caller.is_staff,
        restart_refusal=restart,
        restart_not_needed=_not_locked_out(session, device.id),
        restart_key=new_key(),
        command=command_on_page(session, caller, device.id, command, now),
        predictions=[prediction_json(p) for p in warnings],
        booked={p.id for p in warnings if preventive.open_job(session, p) is not None},
        may_book=caller.is_staff or caller.role in (Role.OWNER, Role.TENANT),
        day_text=functools.partial(_day_text, day_s=ctx.settings.predict_day_s),
        config=config,
        config_text=dotted(config["desired"]["settings"]) if config else "",
        config_states=CONFIG_STATES,
    )


@router.get("/boilers/{device_id}/live")
def boiler_live(
    request: Request, device_id: str, visitor: VisitorDep, session: SessionDep, ctx: ContextDep
) -> Response:
    """The 'now' panel, again whenever the twin changes (SSE event ``now``)."""
    caller = visitor.caller
    visible_device(session, caller, device_id)  # 404 before the stream starts
    session.close()

    def look() -> Snapshot:
        with ctx.sessions() as live:
            device = visible_device(live, caller, device_id)
            key = now_key(live, ctx, device_id)
            twin = now_panel(live, ctx, caller, device)
            html = fragment(request, "_boiler_now.html", twin=twin, role=caller.role.value)
            return Snapshot(key, html)

    return live_response(request, "now", twin_key(device_id), look)


def _not_locked_out(session: Session, device_id: str) -> bool:
    """The boiler runs (or waits) normally: a restart is not needed, not refused."""
    twin = session.get(Twin, device_id)
    return twin is not None and twin.status is not None and twin.status != BoilerStatus.LOCKOUT


def _thread(session: Session, caller: Caller, device_id: str) -> list[ThreadEvent]:
    """The newest thread events the caller may see (engineers: the boiler's own kinds)."""
    query = select(ThreadEvent).where(ThreadEvent.device_id == device_id)
    if caller.role is Role.ENGINEER:
        query = query.where(ThreadEvent.kind.in_(thread.BOILER_KINDS))
    return list(session.scalars(query.order_by(ThreadEvent.id.desc()).limit(THREAD_EVENTS)))


def _short_when(ctx: ApiContext) -> Any:
    return Formats(ctx.settings.portal_timezone).when


def _day_text(day: object, day_s: float = 86_400.0) -> str:
    """A predictor day number (days of `day_s` since 1970-01-01) as ``5 Dec`` (or, for days
    shorter than a day, ``5 Dec 14:02``); "an unknown day" for anything else."""
    try:
        moment = dt.datetime.fromtimestamp(float(day) * day_s, dt.UTC)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return "an unknown day"
    text = f"{moment.day} {moment:%b}"
    return text if day_s >= 86_400 else f"{text} {moment:%H:%M:%S}"
