"""Templates and the words and numbers they show: times in the portal's zone, durations,
percentages, boiler states in plain words; `page` renders a whole page for a visitor."""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.domain import Role
from cloud.models import Notification, User
from cloud.portal.session import FLASH_COOKIE, Visitor, take_flash

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

STATUS_WORDS = {
    "standby": "Ready, nothing needs heat",
    "ch_demand": "Heating requested",
    "dhw_demand": "Hot water requested",
    "ignition": "Lighting the burner",
    "running": "Heating",
    "post_purge": "Finishing a heating cycle",
    "blocking_error": "Stopped by a fault that clears itself",
    "lockout": "Locked out: needs an engineer's reset",
}
"""What each controller status means to someone living with the boiler."""
CONNECTIVITY_WORDS = {
    "online": "Online",
    "offline": "Offline",
    "stale": "Not heard from lately",
    "unknown": "Never connected",
}
JOB_STATE_WORDS = {
    "pending_authorization": "Waiting for the owner's approval",
    "declined": "Declined by the owner",
    "flagged": "Waiting for a check of the reported problem",
    "crowdsourcing": "Engineers invited, waiting for answers",
    "shortlisted": "Shortlist ready: choose an engineer",
    "no_engineers": "No engineer available",
    "contracted": "Engineer booked",
    "completed": "Repair reported; checking the boiler runs normally",
    "verified": "Repair confirmed by the boiler's own data",
    "evaluated": "Repair confirmed and rated",
    "failed_verification": "The repair did not hold",
    "cancelled": "Cancelled",
}
"""A job's state as the people around it would say it."""
MAIN_PAGES = {
    Role.TENANT: "/tenant",
    Role.OWNER: "/owner",
    Role.ENGINEER: "/engineer",
    Role.SUPPORT: "/fleet",
    Role.ADMIN: "/fleet",
}
"""Where each role lands after logging in."""
NAV: dict[Role, tuple[tuple[str, str], ...]] = {
    Role.TENANT: (("/tenant", "My boiler"), ("/jobs", "My requests")),
    Role.OWNER: (("/owner", "My properties"), ("/jobs", "Requests and contracts")),
    Role.ENGINEER: (("/engineer", "Invitations and jobs"), ("/jobs", "All my jobs")),
    Role.SUPPORT: (("/fleet", "Fleet"), ("/jobs", "Jobs"), ("/engineers", "Engineers")),
    Role.ADMIN: (("/fleet", "Fleet"), ("/jobs", "Jobs"), ("/engineers", "Engineers")),
}


class Formats:
    """Turns stored values (ms timestamps, fractions) into text for one time zone."""

    def __init__(self, zone: str) -> None:
        self.zone = ZoneInfo(zone)

    def when(self, ms: int | None, with_seconds: bool = False) -> str:
        """``21 Nov 2026, 14:03`` in the portal's zone; an em dash for none."""
        if not ms:
            return "\N{EM DASH}"
        moment = dt.datetime.fromtimestamp(ms / 1000, tz=self.zone)
        return moment.strftime("%-d %b %Y, %H:%M:%S" if with_seconds else "%-d %b %Y, %H:%M")

    def iso(self, ms: int | None) -> str:
        """Machine-readable time for ``<time datetime>``."""
        if not ms:
            return ""
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds")


def duration(ms: int | float | None) -> str:
    """``3 h 20 min``, ``45 s``: a span for people."""
    if ms is None:
        return "\N{EM DASH}"
    seconds = int(ms // 1000)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {seconds} s" if seconds and minutes < 10 else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} days" + (f" {hours} h" if hours else "")


def percent(value: float | None, digits: int = 1) -> str:
    """``98.5%`` for 0.985; an em dash for none."""
    if value is None:
        return "\N{EM DASH}"
    return f"{value * 100:.{digits}f}%"


def number(value: Any, digits: int = 1, unit: str = "") -> str:
    """A reading rounded for display, with its unit; an em dash for none."""
    if value is None or isinstance(value, bool):
        return "\N{EM DASH}" if value is None else ("yes" if value else "no")
    text = f"{value:.{digits}f}" if isinstance(value, int | float) else str(value)
    return f"{text}\N{NO-BREAK SPACE}{unit}" if unit else text


def money(value: float | None) -> str:
    """``£190.00``."""
    return "\N{EM DASH}" if value is None else f"\N{POUND SIGN}{value:,.2f}"


def words(label: str | None, table: dict[str, str]) -> str:
    """The plain-words form of a stored label (the label itself when unknown)."""
    if label is None:
        return "\N{EM DASH}"
    return table.get(label, label.replace("_", " "))


@cache
def environment() -> Environment:
    """The portal's Jinja2 environment (autoescaped HTML, undefined names are errors)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        duration=duration,
        percent=percent,
        number=number,
        money=money,
        status_words=lambda label: words(label, STATUS_WORDS),
        connectivity_words=lambda label: words(label, CONNECTIVITY_WORDS),
        job_state_words=lambda label: words(label, JOB_STATE_WORDS),
        label=lambda text: str(text or "").replace("_", " "),
    )
    return env


@cache
def templates() -> Jinja2Templates:
    """Starlette's template responder on `environment`."""
    return Jinja2Templates(env=environment())


def name_lookup(session: Session | None) -> Any:
    """``name_of(user_id)`` for templates: the person's name (their login if they gave
    none), looked up once per page."""
    known: dict[str, str] = {}

    def name_of(user_id: str | None) -> str:
        if not user_id:
            return "\N{EM DASH}"
        if user_id not in known:
            user = session.get(User, user_id) if session is not None else None
            known[user_id] = (user.display_name or user_id) if user is not None else user_id
        return known[user_id]

    return name_of


def unread_count(session: Session, user_id: str) -> int:
    """How many notifications `user_id` has not read."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.user_id == user_id, Notification.read_ms.is_(None))
        )
        or 0
    )


def page(
    request: Request,
    template: str,
    visitor: Visitor | None,
    session: Session | None,
    status_code: int = 200,
    **values: Any,
) -> HTMLResponse:
    """A whole page: `template` with the navigation, the pending message and `values`."""
    ctx = request.app.state.context
    formats = Formats(ctx.settings.portal_timezone)
    unread = unread_count(session, visitor.caller.user_id) if visitor and session else 0
    message = take_flash(request)
    response = templates().TemplateResponse(
        request,
        template,
        {
            "visitor": visitor,
            "role": visitor.caller.role.value if visitor else None,
            "nav": NAV.get(visitor.caller.role, ()) if visitor else (),
            "csrf": visitor.csrf if visitor else "",
            "unread": unread,
            "flash": message,
            "when": formats.when,
            "iso": formats.iso,
            "now_ms": ctx.clock(),
            "path": request.url.path,
            "name_of": name_lookup(session),
            **values,
        },
        status_code=status_code,
        headers={"Cache-Control": "no-store"},
    )
    if message is not None:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def fragment(request: Request, template: str, **values: Any) -> str:
    """A partial template rendered to text (for live updates)."""
    ctx = request.app.state.context
    formats = Formats(ctx.settings.portal_timezone)
    return (
        environment()
        .get_template(template)
        .render(when=formats.when, iso=formats.iso, now_ms=ctx.clock(), **values)
    )
