"""Digital-thread events in plain words, for the timelines on boiler and job pages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloud.models import ThreadEvent
from cloud.portal import timeline_gateway

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
    "rollout": "Software rollout",
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
    considered = data.get("considered")
    tail = f" ({considered} considered)" if isinstance(considered, int) else ""
    return ("Invited " + ", ".join(names) if names else "Nobody invited") + tail


def _shortlist(data: dict[str, Any]) -> str:
    """The shortlisted engineers, best first."""
    rows = data.get("candidates")
    if not isinstance(rows, list):
        return ""
    best = ", ".join(str(row.get("engineer_id")) for row in rows if isinstance(row, dict))
    principle = PRINCIPLES.get(str(data.get("principle")))
    return f"Best first: {best}" + (f" (ranked by {principle})" if principle else "")


def _prediction(data: dict[str, Any]) -> str:
    what = {"raised": "raised", "cleared": "cleared", "fulfilled": "the fault came"}
    said = f"{data.get('mode', '?')} heading for {data.get('fault', '?')}"
    days = data.get("days_to_fault")
    if data.get("event") == "raised" and isinstance(days, int | float):
        said += f" in about {days:.0f} days"
    return f"{said}: {what.get(str(data.get('event')), data.get('event'))}"


def _named(data: dict[str, Any], name_of: Callable[[str], str] | None) -> dict[str, Any]:
    """`data` with people's ids replaced by their names (a copy; the thread is untouched)."""
    if name_of is None:
        return data
    out = dict(data)
    for key in ("engineer", "engineer_id"):
        if isinstance(out.get(key), str):
            out[key] = name_of(out[key])
    if isinstance(out.get("notified"), list):
        out["notified"] = [name_of(u) if isinstance(u, str) else u for u in out["notified"]]
    for key in ("invited", "candidates"):
        if isinstance(out.get(key), list):
            out[key] = [
                {**row, "engineer_id": name_of(row["engineer_id"])}
                if isinstance(row, dict) and isinstance(row.get("engineer_id"), str)
                else row
                for row in out[key]
            ]
    return out


def _money(value: Any) -> str:
    return f"\N{POUND SIGN}{value:,.2f}" if isinstance(value, int | float) else ""


PRINCIPLES = {
    "low_carbon": "low carbon (shortest trip)",
    "low_cost": "low cost (quote nearest the estimate)",
    "cheapest": "cheapest quote",
}
ALARMS = {
    "lockout": "Lockout",
    "fault": "Fault",
    "fault_cleared": "Fault cleared",
    "comms_lost": "The gateway lost contact with the boiler",
    "comms_restored": "The gateway is in contact with the boiler again",
    "reset": "The boiler was reset",
    "agent_start": "The gateway's agent started",
    "gap": "The gateway reported readings it had to drop",
}
COMMAND_STATES = {
    "created": "created",
    "sent": "sent to the gateway",
    "delivered": "delivered to the gateway",
    "executing": "the gateway is carrying it out",
    "succeeded": "done",
    "failed": "failed",
    "rejected": "refused by the gateway",
    "expired": "expired before it was delivered",
    "timed_out": "no answer from the gateway in time",
}


def _alarm(data: dict[str, Any]) -> str:
    event = str(data.get("event", ""))
    raw = data.get("detail")
    detail: dict[str, Any] = raw if isinstance(raw, dict) else {}
    fault, text = detail.get("fault"), detail.get("text")
    if event == "state_change":
        change = str(detail.get("change", "")).replace("_", " ")
        return change.capitalize() if change else "The boiler's state changed"
    said = ALARMS.get(event, event.replace("_", " ").capitalize())
    if event in ("lockout", "fault", "fault_cleared") and fault:
        said += f" {fault}" + (f": {text}" if text and event != "fault_cleared" else "")
    return said


def _request(data: dict[str, Any]) -> str:
    principle = PRINCIPLES.get(str(data.get("principle")), data.get("principle"))
    return f"engineers to be ranked by {principle}" if principle else ""


def _validation(data: dict[str, Any]) -> str:
    outcome = {"matched": "confirmed by the boiler's live data", "flagged": "not confirmed"}
    said = outcome.get(str(data.get("outcome")), str(data.get("outcome", "")).replace("_", " "))
    reason = data.get("reason")
    return f"{said.capitalize()}: {reason}" if reason else said.capitalize()


def _analysis(data: dict[str, Any]) -> str:
    parts = []
    if data.get("complexity"):
        parts.append(f"{data['complexity']} complexity")
    if data.get("urgency"):
        parts.append(f"{data['urgency']} urgency")
    if _money(data.get("cost")):
        parts.append(f"estimated {_money(data.get('cost'))}")
    return ", ".join(parts).capitalize()


def _response(data: dict[str, Any]) -> str:
    who = data.get("engineer") or data.get("engineer_id") or "An engineer"
    if data.get("available"):
        quote = _money(data.get("quote"))
        return f"{who} is available" + (f", quoting {quote}" if quote else "")
    return f"{who} is not available"


def _contract(data: dict[str, Any]) -> str:
    who = data.get("engineer") or data.get("engineer_id") or "the engineer"
    quote = _money(data.get("quote"))
    return f"With {who}" + (f" for {quote}" if quote else "")


def _completion(data: dict[str, Any]) -> str:
    parts = []
    if data.get("cause"):
        parts.append(f"Cause: {data['cause']}")
    if data.get("actions"):
        parts.append(f"work done: {data['actions']}")
    return ". ".join(parts)


def _command(data: dict[str, Any]) -> str:
    name = {"restart": "Restart (lockout reset)"}.get(str(data.get("name")), data.get("name"))
    reason = data.get("reason")
    return f"{name}" + (f": {reason}" if reason else "") if name else ""


def _command_state(data: dict[str, Any]) -> str:
    state = str(data.get("to", ""))
    said = COMMAND_STATES.get(state, state.replace("_", " ")).capitalize()
    why = data.get("reason") or data.get("result")
    return f"{said} ({str(why).replace('_', ' ')})" if why and state != "succeeded" else said


def _verification(data: dict[str, Any]) -> str:
    outcome = str(data.get("outcome", ""))
    said = {"verified": "Verified: the boiler ran normally afterwards"}.get(
        outcome, outcome.replace("_", " ").capitalize()
    )
    why = data.get("why") or data.get("reason")
    return f"{said}: {why}" if why and outcome != "verified" else said


def _evaluation(data: dict[str, Any]) -> str:
    said = f"Satisfaction {data.get('cs')}/5, repair quality {data.get('sq')}/5"
    comment = data.get("comment")
    return (
        f"{said}: \N{LEFT DOUBLE QUOTATION MARK}{comment}\N{RIGHT DOUBLE QUOTATION MARK}"
        if comment
        else said
    )


def _connectivity(data: dict[str, Any]) -> str:
    words = {"online": "online", "offline": "offline", "unknown": "never connected"}
    to = words.get(str(data.get("to")), data.get("to"))
    return f"The gateway is {to}" if to else ""


def _authorization(data: dict[str, Any]) -> str:
    said = "Approved" if data.get("approved") else "Declined"
    return said + (f": {data['note']}" if data.get("note") else "")


SUMMARIES = {
    "alarm": _alarm,
    "request": _request,
    "authorization": _authorization,
    "validation": _validation,
    "analysis": _analysis,
    "crowdsourcing": _invited,
    "response": _response,
    "shortlist": _shortlist,
    "contract": _contract,
    "completion": _completion,
    "command": _command,
    "command_state": _command_state,
    "verification": _verification,
    "evaluation": _evaluation,
    "connectivity": _connectivity,
    "prediction": _prediction,
    **timeline_gateway.SUMMARIES,
}
"""Kinds told in a sentence of their own; any other kind lists its notable fields."""


def describe(event: ThreadEvent, name_of: Callable[[str], str] | None = None) -> Described:
    """`event` in words: its kind's title and a sentence about it; `name_of` turns the
    engineers' ids into their names."""
    title = TITLES.get(event.kind, event.kind.replace("_", " ").capitalize())
    data: dict[str, Any] = _named(event.data or {}, name_of)
    summary = SUMMARIES.get(event.kind)
    if summary is not None:
        detail = summary(data)
    else:
        parts = []
        for key in DETAIL_KEYS:
            value = data.get(key)
            if value is None or value == "" or isinstance(value, dict | list):
                continue
            if isinstance(value, bool):
                value = "yes" if value else "no"
            parts.append(f"{key.replace('_', ' ')} {value}")
        detail = "; ".join(parts).capitalize()
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return Described(title, detail)
