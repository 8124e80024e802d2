"""Remote configuration: which agent settings the cloud may set, and the document's form.

A ``configure`` command carries ``version`` (int, increasing per device) and ``config``: the
JSON text of a map of sections to settings, a subset of ``edge.toml``. Only the settings in
`REMOTE_SETTINGS` may be set remotely: what tunes reporting and the data budget. Identity,
broker address, keys and the restart interlocks (`commands.*`) are never remote: a wrong
broker address would cut the gateway off for good, and the EN 298 reset limit is not the
cloud's to raise.

The cloud checks the form here (known keys, value types); the agent checks again and then
validates the whole merged configuration with the rules of ``edge check-config``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from protocols.errors import MalformedMessage

REMOTE_SETTINGS: Mapping[str, Mapping[str, type]] = {
    "report": {
        "poll_interval_s": float,
        "batch_interval_s": float,
        "heartbeat_s": float,
        "comms_lost_after": int,
        "deadband": dict,
    },
    "mqtt": {"keepalive_s": int},
    "outbox": {"max_bytes": int, "resend_after_s": float},
    "modbus": {"profile": str, "timeout_s": float, "retries": int},
    "health": {"interval_s": float},
}
"""Section -> setting -> type of what the cloud may set (``deadband``: point -> float)."""
MAX_CONFIG_BYTES = 16 * 1024


def check_document(document: object) -> dict[str, dict[str, Any]]:
    """`document` if it is a map of remote settings of the right types; `MalformedMessage`
    naming the first wrong key otherwise."""
    if not isinstance(document, Mapping):
        raise MalformedMessage("a configuration must be a map of sections")
    checked: dict[str, dict[str, Any]] = {}
    for section, values in document.items():
        known = REMOTE_SETTINGS.get(section) if isinstance(section, str) else None
        if known is None:
            raise MalformedMessage(
                f"{section}: not a section the cloud may set (may: {', '.join(REMOTE_SETTINGS)})"
            )
        if not isinstance(values, Mapping):
            raise MalformedMessage(f"{section}: must be a map of settings")
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise MalformedMessage(
                    f"{section}.{key}: not a setting the cloud may set (may: {', '.join(known)})"
                )
            out[key] = _typed(f"{section}.{key}", known[key], value)
        checked[section] = out
    return checked


def _typed(key: str, kind: type, value: object) -> Any:
    if kind is float:
        if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
            raise MalformedMessage(f"{key}: must be a number, got {value!r}")
        return float(value)  # type: ignore[arg-type]
    if kind is int:
        if type(value) is not int:
            raise MalformedMessage(f"{key}: must be a whole number, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str) or not value or len(value) > 300:
            raise MalformedMessage(f"{key}: must be text of 1 to 300 characters")
        return value
    if not isinstance(value, Mapping):
        raise MalformedMessage(f"{key}: must be a map of point -> number")
    return {str(p): _typed(f"{key}.{p}", float, v) for p, v in value.items()}


def encode(document: Mapping[str, Mapping[str, Any]]) -> str:
    """The canonical JSON text of a checked document (sorted keys, no spaces)."""
    text = json.dumps(check_document(document), sort_keys=True, separators=(",", ":"))
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise MalformedMessage(f"a configuration is at most {MAX_CONFIG_BYTES} bytes")
    return text


def decode(text: object) -> dict[str, dict[str, Any]]:
    """The checked document in a ``configure`` command's ``config`` argument."""
    if not isinstance(text, str) or len(text.encode()) > MAX_CONFIG_BYTES:
        raise MalformedMessage(f"config must be JSON text of at most {MAX_CONFIG_BYTES} bytes")
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise MalformedMessage(f"config is not JSON: {exc}") from None
    return check_document(document)


def merge(*layers: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Later layers win, setting by setting (``deadband`` point by point)."""
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            target = merged.setdefault(section, {})
            for key, value in values.items():
                if isinstance(value, Mapping):
                    target[key] = {**target.get(key, {}), **value}
                else:
                    target[key] = value
    return merged
