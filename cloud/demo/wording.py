"""The repair story in words: one short line per job, engineer, evidence or thread event."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any


def short(job_id: str) -> str:
    return job_id[:8]


def gbp(amount: Any) -> str:
    """``£190.00``: the one currency format, as the portal writes it."""
    return f"\N{POUND SIGN}{amount:,.2f}" if isinstance(amount, int | float) else "-"


def num(value: Any, spec: str = ".3f") -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def ar(profile: Mapping[str, Any]) -> str:
    figures, history = profile.get("figures") or {}, profile.get("history") or {}
    if "ar_pct" not in figures:
        return "-"
    return f"{figures['ar_pct']:.1f}% ({history.get('accepted')}/{history.get('invitations')})"


def task(analysis: Mapping[str, Any]) -> str:
    return (
        f"{analysis.get('complexity')} complexity, urgency {analysis.get('urgency')}, "
        f"estimate {gbp(analysis.get('cost'))}, skills {', '.join(analysis.get('skills') or [])}"
    )


def evidence(evidence: Mapping[str, Any], brief: bool = False) -> str:
    """The live data a decision rested on, in a line."""
    parts = [str(evidence.get("connectivity") or "?")]
    status = evidence.get("status_label") or evidence.get("status")
    if status is not None:
        parts.append(f"status {status}")
    if evidence.get("fault_name"):
        parts.append(f"fault {evidence['fault_name']} ({evidence.get('fault_text')})")
    elif "fault_code" in evidence:
        parts.append(f"fault {evidence['fault_code']}" if evidence["fault_code"] else "no fault")
    if brief:
        return ", ".join(parts)
    values = evidence.get("values") or {}
    for point, unit in (("ch_pressure", "bar"), ("outdoor_temp", "C"), ("flow_temp", "C")):
        if isinstance(values.get(point), int | float):
            parts.append(f"{point} {values[point]:.1f} {unit}")
    history = evidence.get("fault_history") or {}
    if history:
        parts.append("in the last year " + ", ".join(f"{k} x{n}" for k, n in history.items()))
    return ", ".join(parts)


def sourcing(data: Mapping[str, Any]) -> str:
    """A crowdsourcing round in a line."""
    if data.get("error"):
        return str(data["error"])
    failed = data.get("failed_by_constraint") or {}
    invited = data.get("invited") or []
    newcomers = sum(1 for i in invited if i.get("reason") == "newcomer")
    return (
        f"{data.get('considered', 0)} engineers considered, left out by constraint: "
        + (", ".join(f"{name} {n}" for name, n in sorted(failed.items())) or "none")
        + f"; of {data.get('pool_size', 0)} eligible the top {data.get('top_k', 0)} by W invited"
        + (f", plus {newcomers} newcomer(s)" if newcomers else "")
    )


def response(d: Mapping[str, Any]) -> str:
    if d.get("expired"):
        return f"{d.get('engineer')}: no answer by the deadline"
    if not d.get("available"):
        return f"{d.get('engineer')}: not available"
    return f"{d.get('engineer')}: available, {gbp(d.get('quote'))}"


def verification(d: Mapping[str, Any]) -> str:
    if d.get("outcome") == "verified":
        return f"verified: normal for {num(d.get('normal_for_s'), '.1f')} s"
    return f"{d.get('outcome')}: {d.get('because')}"


_SUMMARIES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "request": lambda d: (
        f"{d.get('service_type')}/{d.get('problem')} by the {d.get('role')}; "
        f"twin: {evidence(d.get('twin') or {}, brief=True)}"
    ),
    "authorization": lambda d: (
        ("approved" if d.get("approved") else "declined")
        + (f": {d['note']}" if d.get("note") else "")
    ),
    "validation": lambda d: f"{d.get('step')}: {d.get('outcome')}",
    "analysis": task,
    "crowdsourcing": lambda d: (
        "invited "
        + (", ".join(str(i.get("engineer_id")) for i in d.get("invited") or []) or "nobody")
    ),
    "response": response,
    "shortlist": lambda d: ", ".join(
        f"{c['position']}. {c['engineer_id']} ({c['rank_pct']:.0f}%)"
        for c in d.get("candidates") or []
    ),
    "contract": lambda d: f"{d.get('engineer')}, {gbp(d.get('quote'))}, at {d.get('address')}",
    "completion": lambda d: f"cause: {d.get('cause')}",
    "command": lambda d: f"{d.get('name')}: {d.get('reason') or '-'}",
    "command_state": lambda d: f"{d.get('from') or '-'} -> {d.get('to')}",
    "verification": verification,
    "evaluation": lambda d: f"CS {d.get('cs')}, SQ {d.get('sq')} by {d.get('by')}",
    "cancellation": lambda d: f"cancelled: {d.get('reason')}",
}


def summary(event: Mapping[str, Any]) -> str:
    """A thread event in a short line."""
    data = dict(event.get("data") or {})
    words = _SUMMARIES.get(str(event.get("kind")))
    if words is not None:
        return words(data)
    text = json.dumps(data, separators=(",", ":"), default=str)
    return text if len(text) <= 100 else text[:97] + "..."
