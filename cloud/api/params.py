"""Parsing of query parameters and conditional-request headers."""

from __future__ import annotations

import re
from datetime import datetime

from cloud.errors import InvalidInput

POINT = re.compile(r"[a-z0-9_]{1,64}")
MAX_POINTS_PER_QUERY = 32
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)?")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_time(text: str | None, name: str) -> int | None:
    """Milliseconds since the epoch from ``1763683200000`` or ISO 8601 with an offset."""
    if text is None or text == "":
        return None
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(
            f"{name} must be milliseconds since the epoch or an ISO 8601 time, got {text!r}",
            field=name,
        ) from exc
    if moment.tzinfo is None:
        raise InvalidInput(
            f"{name} needs a UTC offset (e.g. 2026-11-21T00:00:00Z), got {text!r}", field=name
        )
    return int(moment.timestamp() * 1000)


def parse_duration(text: str | None, name: str) -> int | None:
    """Milliseconds from ``900000`` (ms) or ``15m``, ``1h``, ``30s``, ``1d``, ``500ms``."""
    if text is None or text == "":
        return None
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise InvalidInput(
            f"{name} must be a positive duration in ms or with a unit (30s, 15m, 1h, 1d), "
            f"got {text!r}",
            field=name,
        )
    return int(match.group(1)) * _UNIT_MS[match.group(2) or "ms"]


def parse_list(values: list[str] | None) -> list[str]:
    """``a,b`` and repeated parameters alike, blanks dropped."""
    out: list[str] = []
    for value in values or []:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def parse_points(values: list[str] | None) -> list[str] | None:
    """Point names (None: all points)."""
    names = list(dict.fromkeys(parse_list(values)))
    for name in names:
        if not POINT.fullmatch(name):
            raise InvalidInput(f"not a point name: {name!r}", field="points")
    if len(names) > MAX_POINTS_PER_QUERY:
        raise InvalidInput(f"at most {MAX_POINTS_PER_QUERY} points per query", field="points")
    return names or None


def etag_list(header: str) -> list[str]:
    """The entity tags of an ``If-Match``/``If-None-Match`` header, or ``["*"]``."""
    return [part.strip() for part in header.split(",") if part.strip()]


def none_match(header: str | None, current: str) -> bool:
    """Whether ``If-None-Match`` matches `current` (weak comparison, RFC 9110 13.1.2)."""
    if header is None:
        return False
    tags = etag_list(header)
    return "*" in tags or current.removeprefix("W/") in (t.removeprefix("W/") for t in tags)


def match(header: str, current: str) -> bool:
    """Whether ``If-Match`` matches `current` (strong comparison, RFC 9110 13.1.1)."""
    tags = etag_list(header)
    return "*" in tags or current in tags
