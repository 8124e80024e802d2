"""Fleet-wide operations views (staff only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import func, select

from cloud.access import require_role
from cloud.api.deps import API_PREFIX, CallerDep, SessionDep
from cloud.api.problems import PROBLEM_RESPONSES
from cloud.domain import STAFF
from cloud.models import Gap, IngestCounter, Twin

router = APIRouter(prefix=API_PREFIX, tags=["fleet"], responses=PROBLEM_RESPONSES)

GAP_GROUPS = ("accounted", "unexplained_open", "unexplained_resolved")
"""Accounted gaps (the gateway said it dropped them), and unexplained ones still missing or
that arrived late after all."""
_OPEN = {True: "open", False: "resolved"}


@router.get("/ingest/stats")
def ingest_stats(caller: CallerDep, session: SessionDep) -> dict[str, Any]:
    """Ingest outcomes by reason, and delivery totals over the fleet: what arrived, what was
    duplicated, what the gateways said they dropped, and what is missing unexplained."""
    require_role(caller, STAFF, "read ingest statistics")
    counters = [
        {"outcome": row.outcome, "reason": row.reason, "count": row.count}
        for row in session.scalars(
            select(IngestCounter).order_by(IngestCounter.outcome, IngestCounter.reason)
        )
    ]
    twins = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(Twin.received), 0),
            func.coalesce(func.sum(Twin.duplicates), 0),
            func.coalesce(func.sum(Twin.lost_accounted), 0),
        )
    ).one()
    gaps = {name: {"ranges": 0, "messages": 0} for name in GAP_GROUPS}
    still_open = Gap.resolved_ms.is_(None)
    rows = session.execute(
        select(
            Gap.kind,
            still_open.label("open"),
            func.count().label("ranges"),
            func.coalesce(func.sum(Gap.last_seq - Gap.first_seq + 1), 0).label("messages"),
        ).group_by(Gap.kind, still_open)
    )
    for row in rows:
        name = row.kind if row.kind == "accounted" else f"{row.kind}_{_OPEN[bool(row.open)]}"
        group = gaps.setdefault(name, {"ranges": 0, "messages": 0})
        group["ranges"] += int(row.ranges)
        group["messages"] += int(row.messages)
    return {
        "counters": counters,
        "fleet": {
            "boilers": int(twins[0]),
            "received": int(twins[1]),
            "duplicates": int(twins[2]),
            "lost_accounted": int(twins[3]),
        },
        "gaps": gaps,
    }
