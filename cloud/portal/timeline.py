"""Digital-thread events in plain words, for the timelines on boiler and job pages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloud.models import ThreadEvent

TITLES = {
    "alarm": "Alarm",
    "connectivity": "Connection",
    "prediction": "Fault warning",
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
    "because",
    "step",
    "status",
    "engineer",
    "engineer_id",
    "available",
    "quote",
    "principle",
    "complexity",
    "urgency",
    "cost",
    "considered",
    "cause",
    "actions",
    "result",
    "reason",
    "why",
    "note",
    "cs",
    "sq",
    "comment",
)
"""Scalar fields worth showing, in this order; the rest stays in the API's thread."""
MAX_DETAIL = 240


@dataclass(frozen=True, slots=True)
class Described:
    """A thread event as a title and a one-line detail."""

    title: str
    detail: str


def _invited(data: dict[str, Any]) -> str:
    """Who a crowdsourcing round invited, from its assessments."""
    rows = data.get("invited")
    if not isinstance(rows, list):
        return ""
    names = [
        str(row.get("engineer_id"))
        for row in rows
        if isinstance(row, dict) and row.get("invited", True)
    ]
    return "invited " + ", ".join(names) if names else "nobody invited"


def _shortlist(data: dict[str, Any]) -> str:
    """The shortlisted engineers, best first."""
    rows = data.get("candidates")
    if not isinstance(rows, list):
        return ""
    return "best first: " + ", ".join(
        str(row.get("engineer_id")) for row in rows if isinstance(row, dict)
    )


def _prediction(data: dict[str, Any]) -> str:
    what = {"raised": "raised", "cleared": "cleared", "fulfilled": "the fault came"}
    said = f"{data.get('mode', '?')} heading for {data.get('fault', '?')}"
    days = data.get("days_to_fault")
    if data.get("event") == "raised" and isinstance(days, int | float):
        said += f" in about {days:.0f} days"
    return f"{said}: {what.get(str(data.get('event')), data.get('event'))}"


SUMMARIES = {"crowdsourcing": _invited, "shortlist": _shortlist, "prediction": _prediction}
"""Kinds whose essence is in a list, not in scalar fields."""


def describe(event: ThreadEvent) -> Described:
    """`event` in words: its kind's title and its notable fields."""
    title = TITLES.get(event.kind, event.kind.replace("_", " ").capitalize())
    data: dict[str, Any] = event.data or {}
    parts = []
    summary = SUMMARIES.get(event.kind)
    if summary is not None and (said := summary(data)):
        parts.append(said)
    if event.kind == "authorization" and "approved" in data:
        parts.append("approved" if data["approved"] else "declined")
    for key in DETAIL_KEYS:
        value = data.get(key)
        if value is None or value == "" or isinstance(value, dict | list):
            continue
        if isinstance(value, bool):
            value = "yes" if value else "no"
        parts.append(f"{key.replace('_', ' ')}: {value}")
    detail = "; ".join(parts)
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return Described(title, detail)
