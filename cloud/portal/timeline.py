"""Digital-thread events in plain words, for the timelines on boiler and job pages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloud.models import ThreadEvent

TITLES = {
    "alarm": "Alarm",
    "connectivity": "Connection",
    "birth": "Gateway started",
    "gap": "Missing data",
    "command": "Command requested",
    "command_state": "Command progress",
    "device": "Boiler record changed",
    "request": "Service requested",
    "authorization": "Owner's decision",
    "validation": "Request checked",
    "analysis": "Service analysed",
    "crowdsourcing": "Engineers invited",
    "response": "Engineer answered",
    "shortlist": "Shortlist formed",
    "contract": "Contract formed",
    "completion": "Repair reported",
    "verification": "Repair checked against live data",
    "evaluation": "Service rated",
    "cancellation": "Request cancelled",
    "reminder": "Annual check reminder",
}
DETAIL_KEYS = (
    "kind",
    "name",
    "fault",
    "code",
    "state",
    "from",
    "to",
    "outcome",
    "step",
    "approve",
    "status",
    "engineer_id",
    "available",
    "quote",
    "principle",
    "invited",
    "cause",
    "result",
    "reason",
    "why",
    "note",
    "cs",
    "sq",
)
"""Scalar fields worth showing, in this order; the rest stays in the API's thread."""
MAX_DETAIL = 240


@dataclass(frozen=True, slots=True)
class Described:
    """A thread event as a title and a one-line detail."""

    title: str
    detail: str


def describe(event: ThreadEvent) -> Described:
    """`event` in words: its kind's title and its notable fields."""
    title = TITLES.get(event.kind, event.kind.replace("_", " ").capitalize())
    data: dict[str, Any] = event.data or {}
    parts = []
    for key in DETAIL_KEYS:
        value = data.get(key)
        if value is None or isinstance(value, dict | list):
            continue
        if isinstance(value, bool):
            value = "yes" if value else "no"
        parts.append(f"{key.replace('_', ' ')}: {value}")
    if isinstance(data.get("invited"), list):
        parts.append("invited: " + ", ".join(str(v) for v in data["invited"]))
    detail = "; ".join(parts)
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return Described(title, detail)
