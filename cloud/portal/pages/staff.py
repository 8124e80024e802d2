"""The manufacturer's staff pages (admin and support): the fleet overview with counts, the
filtered boiler list and ingest health; the engineers directory and engineer profiles.

The fleet list and the ingest figures come from `cloud.fleet_views`, the same code the API's
``GET /boilers`` and ``GET /ingest/stats`` run, so page and API always agree. Engineer
profiles follow the API's visibility rule: staff, the engineer, or the owner or tenant of a
job the engineer was invited to; anyone else gets "not found", as from the API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.access import may_see_engineer
from cloud.api.deps import ApiContext, ContextDep, SessionDep
from cloud.domain import Caller, Connectivity
from cloud.errors import Forbidden, InvalidInput, NotFound
from cloud.fleet_views import STATUS_BY_LABEL, boiler_query, boiler_rows, count_of, ingest_figures
from cloud.models import Job, User
from cloud.portal.render import number, page
from cloud.portal.session import Visitor, VisitorDep
from cloud.predict.views import at_risk, at_risk_count, prediction_json
from cloud.service.engineers import engineer_json, list_engineers, load_engineer

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
RECENT_JOBS = 20
STAFF_ONLY = "this page is for the manufacturer's staff"
COUNT_TILES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("online", "Online", {"connectivity": "online"}),
    ("offline", "Offline", {"connectivity": "offline"}),
    ("stale", "Not heard from lately", {"connectivity": "stale"}),
    ("unknown", "Never connected", {"connectivity": "unknown"}),
    ("lockout", "Locked out", {"status": "lockout"}),
    ("all", "All boilers", {}),
)
"""Count tiles on the fleet page: id suffix, caption, and the list filter each links to."""
GAP_WORDS = {
    "accounted": "Dropped by the gateway (it said so)",
    "unexplained_open": "Missing, no explanation",
    "unexplained_resolved": "Arrived late after all",
}
SORTS = {"name": "Name", "ar": "Acceptance rate (AR)", "cs": "Satisfaction (CS)"}
SORTS["sq"] = "Service quality (SQ)"
"""Engineer directory orders: the best figures first; names alphabetically."""
NONE = "\N{EM DASH}"
NO_RATINGS = "no ratings yet"
NO_INVITATIONS = "no invitations yet"
HOME_DIGITS = 3
"""Home shown to about 100 m (staff and the engineer only)."""


def staff_caller(visitor: Visitor) -> Caller:
    """The visitor's caller if they are staff; `Forbidden` otherwise."""
    if not visitor.caller.is_staff:
        raise Forbidden(STAFF_ONLY, role=visitor.caller.role.value)
    return visitor.caller


# --- fleet --------------------------------------------------------------------------------


def parse_connectivity(value: str) -> Connectivity | None:
    """A connectivity filter from the form (blank for any); `InvalidInput` if unknown."""
    if not value:
        return None
    try:
        return Connectivity(value)
    except ValueError:
        known = ", ".join(state.value for state in Connectivity)
        raise InvalidInput(
            f"unknown connectivity {value!r}; known: {known}", field="connectivity"
        ) from None


def fleet_link(filters: dict[str, str], number: int = 1) -> str:
    """``/fleet`` with the non-blank `filters` and page `number` (page 1 left out)."""
    params = {name: value for name, value in filters.items() if value}
    if number > 1:
        params["page"] = str(number)
    return "/fleet" + (f"?{urlencode(params)}" if params else "")


def fleet_counts(session: Session, ctx: ApiContext, caller: Caller) -> dict[str, int]:
    """How many boilers each count tile stands for, by the list's own filters."""
    now = ctx.clock()
    counts = {}
    for name, _, filters in COUNT_TILES:
        state = parse_connectivity(filters.get("connectivity", ""))
        query = boiler_query(caller, ctx.settings, now, state, filters.get("status"))
        counts[name] = count_of(session, query)
    return counts


def ingest_summary(figures: dict[str, Any]) -> dict[str, int]:
    """Accepted and rejected message totals (by counter outcome) from `ingest_figures`."""
    accepted = sum(c["count"] for c in figures["counters"] if c["outcome"] == "accepted")
    rejected = sum(c["count"] for c in figures["counters"] if c["outcome"] == "rejected")
    return {"accepted": accepted, "rejected": rejected}


@router.get("/fleet", response_class=HTMLResponse)
def fleet_page(
    request: Request,
    visitor: VisitorDep,
    session: SessionDep,
    ctx: ContextDep,
    connectivity: Annotated[str, Query(max_length=20)] = "",
    status: Annotated[str, Query(max_length=40)] = "",
    q: Annotated[str, Query(max_length=100)] = "",
    number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> Response:
    """The support desk's overview: counts, the filtered boiler list, ingest health."""
    caller = staff_caller(visitor)
    q = q.strip()
    filters = {"connectivity": connectivity, "status": status, "q": q}
    items: list[dict[str, Any]] = []
    total, problem = 0, None
    try:
        state = parse_connectivity(connectivity)
        offset = (number - 1) * PAGE_SIZE
        items, total = boiler_rows(
            session, caller, ctx.settings, ctx.clock(), state, status or None, q, PAGE_SIZE, offset
        )
    except InvalidInput as refused:  # a bad filter is explained on the page, as the API does
        problem = refused
    pages = max(1, -(-total // PAGE_SIZE))
    figures = ingest_figures(session)
    return page(
        request,
        "fleet.html",
        visitor,
        session,
        problem.status if problem else 200,
        problem=problem.detail if problem else None,
        counts=fleet_counts(session, ctx, caller),
        tiles=[(name, caption, fleet_link(f)) for name, caption, f in COUNT_TILES],
        items=items,
        total=total,
        filters=filters,
        connectivities=[state.value for state in Connectivity],
        statuses=list(STATUS_BY_LABEL),
        number=number,
        pages=pages,
        first=(number - 1) * PAGE_SIZE + 1,
        previous=fleet_link(filters, number - 1) if number > 1 else None,
        next=fleet_link(filters, number + 1) if number < pages else None,
        ingest=ingest_summary(figures),
        gaps=figures["gaps"],
        at_risk=[(prediction_json(p, evidence=False), d) for p, d in at_risk(session, limit=50)],
        at_risk_total=at_risk_count(session),
    )


@router.get("/fleet/ingest", response_class=HTMLResponse)
def ingest_page(
    request: Request, visitor: VisitorDep, session: SessionDep, ctx: ContextDep
) -> Response:
    """Ingest health: what was refused and why, delivery totals, and gaps by group."""
    staff_caller(visitor)
    figures = ingest_figures(session)
    return page(
        request,
        "ingest.html",
        visitor,
        session,
        refused=[c for c in figures["counters"] if c["outcome"] != "accepted"],
        summary=ingest_summary(figures),
        fleet=figures["fleet"],
        gaps=figures["gaps"],
        gap_words=GAP_WORDS,
    )


# --- engineers ----------------------------------------------------------------------------


def matches(profile: dict[str, Any], q: str) -> bool:
    """Whether `q` occurs (any case) in the engineer's id, name or a skill."""
    needle = q.lower()
    haystack = [profile["id"], profile["display_name"], *profile["skills"]]
    return any(needle in str(text).lower() for text in haystack)


def figures_text(profile: dict[str, Any]) -> dict[str, str]:
    """AR, CS and SQ as shown: the API's figures formatted; "no ratings yet" (not 0.00) for a
    newcomer."""
    history, figures = profile["history"], profile["figures"]
    rated = history["evaluated"] > 0  # CS and SQ are 0 without ratings; that is not a score
    return {
        "ar": number(figures["ar_pct"], 1) + "%"
        if history["invitations"]
        else "no invitations yet",
        "cs": number(figures["cs"], 2) if rated else NO_RATINGS,
        "sq": number(figures["sq"], 2) if rated else NO_RATINGS,
    }


def sort_key(sort: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """The directory order for `sort`: figures best first (ties by id), names A-Z."""
    if sort == "name":
        return lambda p: ((p["display_name"] or p["id"]).lower(), p["id"])
    return lambda p: (-p["figures"][sort], p["id"])


@router.get("/engineers", response_class=HTMLResponse)
def engineers_page(
    request: Request,
    visitor: VisitorDep,
    session: SessionDep,
    q: Annotated[str, Query(max_length=100)] = "",
    sort: Annotated[str, Query(pattern="^(name|ar|cs|sq)$")] = "name",
) -> Response:
    """Every engineer with AR, CS and SQ, searchable and sortable (staff only)."""
    staff_caller(visitor)
    q = q.strip()
    profiles = [p for p in list_engineers(session) if not q or matches(p, q)]
    return page(
        request,
        "engineers.html",
        visitor,
        session,
        engineers=[(p, figures_text(p)) for p in sorted(profiles, key=sort_key(sort))],
        q=q,
        sort=sort,
        sorts=SORTS,
    )


def recent_jobs(session: Session, engineer_id: str) -> list[Job]:
    """The newest jobs the engineer was contracted on."""
    query = select(Job).where(Job.engineer_id == engineer_id)
    return list(session.scalars(query.order_by(Job.created_ms.desc()).limit(RECENT_JOBS)))


@router.get("/engineers/{engineer_id}", response_class=HTMLResponse)
def engineer_page(
    request: Request, engineer_id: str, visitor: VisitorDep, session: SessionDep
) -> Response:
    """One engineer's profile, for those the API shows it to (not found for anyone else)."""
    caller = visitor.caller
    if not may_see_engineer(session, caller, engineer_id):
        raise NotFound(f"engineer {engineer_id} not found", user_id=engineer_id)
    row, prices = load_engineer(session, engineer_id)
    user = session.get(User, engineer_id)
    profile = engineer_json(row, prices, user.display_name if user else "")
    close = caller.is_staff or caller.user_id == engineer_id  # home and jobs are not for clients
    home = profile["home"] if close else None
    return page(
        request,
        "engineer_profile.html",
        visitor,
        session,
        profile=profile,
        shown=figures_text(profile),
        home={k: round(v, HOME_DIGITS) for k, v in home.items()} if home else None,
        jobs=recent_jobs(session, engineer_id) if close else None,
        staff=caller.is_staff,
    )
