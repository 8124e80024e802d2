"""Fleet views shared by the API and the portal: the boiler list (filters, search, paging)
and the ingest health figures, so both show exactly the same rows and numbers.

Nothing here imports FastAPI; callers check roles (`ingest_figures` is for staff only).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from cloud.access import redact_people, sees_people, visible_devices
from cloud.domain import Caller, Connectivity, Role
from cloud.errors import InvalidInput
from cloud.models import Device, Gap, IngestCounter, Quarantine, Twin
from cloud.quarantine import Stage
from cloud.settings import CloudSettings
from cloud.twin.read import boiler_summary, connectivity_clause, stale_ms
from protocols.reference import BoilerStatus

STATUS_BY_LABEL = {status.label: status for status in BoilerStatus}
"""Status filter values (``lockout``...) and the register value each stands for."""
SEARCHED = (Device.id, Device.serial, Device.model, Device.address)
"""The columns the boiler search looks in."""
GAP_GROUPS = ("accounted", "unexplained_open", "unexplained_resolved")
"""Accounted gaps (the gateway said it dropped them), and unexplained ones still missing or
that arrived late after all."""
_OPEN = {True: "open", False: "resolved"}


def status_code(status: str) -> int:
    """The register value of a status label; `InvalidInput` naming the known ones otherwise."""
    if status not in STATUS_BY_LABEL:
        raise InvalidInput(
            f"unknown status {status!r}; known: {', '.join(STATUS_BY_LABEL)}", field="status"
        )
    return int(STATUS_BY_LABEL[status])


def like_pattern(text: str) -> str:
    """A case-insensitive ``LIKE`` pattern matching `text` anywhere, wildcards escaped."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def boiler_query(
    caller: Caller,
    settings: CloudSettings,
    now: int,
    connectivity: Connectivity | None = None,
    status: str | None = None,
    q: str | None = None,
) -> Select[Device, Twin]:
    """Boilers `caller` may see with their twins, filtered; unordered and unpaged."""
    query = select(Device, Twin).outerjoin(Twin, Twin.device_id == Device.id)
    query = query.where(visible_devices(caller))
    if connectivity is not None:
        query = query.where(connectivity_clause(connectivity, now, stale_ms(settings)))
    if status is not None:
        query = query.where(Twin.status == status_code(status))
    if q:
        pattern = like_pattern(q)
        query = query.where(
            or_(*(func.lower(column).like(pattern, escape="\\") for column in SEARCHED))
        )
    return query


def count_of(session: Session, query: Select[*tuple[Any, ...]]) -> int:
    """How many rows `query` selects."""
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def boiler_rows(
    session: Session,
    caller: Caller,
    settings: CloudSettings,
    now: int,
    connectivity: Connectivity | None = None,
    status: str | None = None,
    q: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of the boiler list by id (`boiler_summary` rows) and the unpaged total.

    An engineer only invited to a boiler's job sees it without people and address.
    """
    query = boiler_query(caller, settings, now, connectivity, status, q)
    total = count_of(session, query)
    rows = session.execute(query.order_by(Device.id).limit(limit).offset(offset)).all()
    items = [boiler_summary(device, twin, now, settings) for device, twin in rows]
    if caller.role is Role.ENGINEER:
        devices = {device.id: device for device, _ in rows}
        items = [
            item if sees_people(session, caller, devices[item["id"]]) else redact_people(item)
            for item in items
        ]
    return items, total


def ingest_figures(session: Session) -> dict[str, Any]:
    """Ingest outcomes by reason, delivery totals over the fleet, and gaps by group."""
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
    return {
        "counters": counters,
        "fleet": {
            "boilers": int(twins[0]),
            "received": int(twins[1]),
            "duplicates": int(twins[2]),
            "lost_accounted": int(twins[3]),
        },
        "gaps": gap_groups(session),
        "quarantined": quarantined(session),
    }


def quarantined(session: Session) -> dict[str, int]:
    """Unreleased quarantine holds by stage (`cloud.quarantine`), every stage present."""
    held = {stage.value: 0 for stage in Stage}
    rows = session.execute(
        select(Quarantine.stage, func.count())
        .where(Quarantine.released_ms.is_(None))
        .group_by(Quarantine.stage)
    )
    for stage, count in rows:
        held[stage] = int(count)
    return held


def gap_groups(session: Session) -> dict[str, dict[str, int]]:
    """Gap ranges and missing messages per group of `GAP_GROUPS` (every group present)."""
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
    return gaps
