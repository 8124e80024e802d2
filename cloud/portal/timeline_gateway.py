"""The gateway's own thread events in plain words: its starts, lost readings, registry
changes, annual reminders and rollout decisions (the service story is in `timeline`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protocols.messages import GapReason

GAP_REASONS = {
    GapReason.OUTBOX_FULL.value: "its store was full and the oldest readings made room",
    GapReason.OUTBOX_CORRUPT.value: "stored readings could not be read back",
}


def _count(n: Any, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}" if isinstance(n, int) else many


def _span(data: dict[str, Any]) -> str:
    first, last = data.get("first_seq"), data.get("last_seq")
    if not (isinstance(first, int) and isinstance(last, int)):
        return ""
    return f" (number {first})" if first == last else f" (numbers {first} to {last})"


def birth(data: dict[str, Any]) -> str:
    """The agent (re)started and said what it runs and reads."""
    version = data.get("agent_version")
    said = "The gateway's agent" + (f" {version}" if version else "") + " started"
    return said + (f", reading register map {data['map_id']}" if data.get("map_id") else "")


def gap(data: dict[str, Any]) -> str:
    """Readings lost: owned up to by the gateway, missed by the cloud, or found later."""
    kind, n = data.get("kind"), data.get("count")
    if kind == "accounted":
        reason = str(data.get("reason", ""))
        why = GAP_REASONS.get(reason, reason.replace("_", " ") or "no reason given")
        return f"The gateway dropped {_count(n, 'message', 'messages')}: {why}"
    if kind == "unexplained":
        return f"{_count(n, 'message', 'messages')} did not arrive{_span(data)}".capitalize()
    if kind == "resolved":
        return f"The missing {_count(n, 'message', 'messages')}{_span(data)} arrived later"
    return ""


def _attributes(data: dict[str, Any]) -> str:
    changes = data.get("changes")
    names = ", ".join(str(k).replace("_", " ") for k in changes) if changes else ""
    by = f" by the {data['role']}" if data.get("role") else ""
    return f"Details changed{by}" + (f": {names}" if names else "")


def _model_serial(data: dict[str, Any]) -> str:
    """`` (X1 S-9)``: the boiler's model and serial as the event gives them, if any."""
    what = " ".join(str(data[k]) for k in ("model", "serial") if data.get(k))
    return f" ({what})" if what else ""


def _claimed(data: dict[str, Any]) -> str:
    said = "Claimed by its gateway" + _model_serial(data)
    return said + (f" with a token from batch {data['batch']}" if data.get("batch") else "")


def _registered(data: dict[str, Any]) -> str:
    key = f" with key {data['key']}" if data.get("key") else ""
    return "Registered" + _model_serial(data) + key


DEVICE_CHANGES: dict[str, Callable[[dict[str, Any]], str]] = {
    "registered": _registered,
    "claimed": _claimed,
    "broker_login": lambda d: "Broker login renewed" if d.get("renewed") else "Broker login made",
    "attributes": _attributes,
    "config_desired": lambda d: f"Configuration version {d.get('version', '?')} set for it",
    "key_rotated": lambda d: (
        f"Signing key changed to {d.get('key', '?')}; the old key is accepted for a grace period"
    ),
    "key_refused": lambda d: (
        "A new signing key was refused" + (f": {d['why']}" if d.get("why") else "")
    ),
    "revoked": lambda d: "Revoked: the gateway can no longer connect or send readings",
}


def device(data: dict[str, Any]) -> str:
    """A change to the boiler's record in the registry."""
    change = str(data.get("change", ""))
    told = DEVICE_CHANGES.get(change)
    return told(data) if told else change.replace("_", " ").capitalize()


def reminder(data: dict[str, Any]) -> str:
    """An annual gas-safety check came due."""
    due = data.get("due")
    said = "Annual gas-safety check due" + (f" on {due}" if due else "")
    notified = data.get("notified")
    return said + (f"; reminded {', '.join(map(str, notified))}" if notified else "")


def rollout(data: dict[str, Any]) -> str:
    """A software rollout's decision (halted with its reason)."""
    if data.get("change") == "halted":
        n = data.get("rolling_back")
        back = f"; {_count(n, 'gateway', 'gateways')} sent back" if n else ""
        return f"Halted ({data.get('why', 'no reason given')}){back}"
    return str(data.get("change", "")).replace("_", " ").capitalize()


SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "birth": birth,
    "gap": gap,
    "device": device,
    "reminder": reminder,
    "rollout": rollout,
}
"""The gateway's kinds, each told in a sentence."""
