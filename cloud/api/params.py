"""Query and path parameters: their types and documented bounds, parsing, conditional headers.

Every parameter is declared as tightly as the API means it, so that the OpenAPI document
and the server agree: a value the document allows is one the server can answer (numbers
within `cloud.limits`, kinds and statuses from their lists, durations within a year or so),
and anything else is refused with a 422 before a handler runs.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, Field

from cloud.errors import InvalidInput
from cloud.limits import MAX_INT

POINT = re.compile(r"[a-z0-9_]{1,64}")
POINTS = r"^[a-z0-9_]{1,64}(,[a-z0-9_]{1,64})*$"
"""One or more point names, comma-separated."""
JSON_LITERALS = ("true", "false", "null")
"""Never point names: in a query string they are what a client's boolean or null became."""


def _no_literal(value: str) -> str:
    if value in JSON_LITERALS:
        raise ValueError(f"{value!r} is not a point name")
    return value


PointNames = Annotated[
    str,
    Field(pattern=POINTS, json_schema_extra={"not": {"enum": list(JSON_LITERALS)}}),
    AfterValidator(_no_literal),
]
"""One query value of point names (``a`` or ``a,b``)."""
MAX_POINTS_PER_QUERY = 32


Moment = (
    Annotated[int, Field(ge=0, le=MAX_INT)]
    | Annotated[str, Field(max_length=40, json_schema_extra={"format": "date-time"})]
)
"""A point in time: milliseconds since the Unix epoch, or an RFC 3339 date-time (`moment_ms`)."""

ID_PATH = Path(ge=1, le=MAX_INT)
"""A numeric id in a path."""
AFTER = Query(ge=0, le=MAX_INT, description="continue after this id")
OFFSET = Query(ge=0, le=MAX_INT, description="skip this many")

DURATION = (
    r"^([1-9][0-9]{0,9}(ms)?|[1-9][0-9]{0,7}s|[1-9][0-9]{0,5}m|[1-9][0-9]{0,4}h|[1-9][0-9]{0,2}d)$"
)
"""A positive duration: ``500ms`` or ``500`` (ms), ``30s``, ``15m``, ``1h``, ``1d`` (at most 10
digits of ms, 8 of s, 6 of m, 5 of h, 3 of d: never more than about three years)."""
_DURATION = re.compile(r"([1-9][0-9]*)(ms|s|m|h|d)?")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def moment_ms(value: int | str | None, name: str) -> int | None:
    """Milliseconds since the epoch of a `Moment` (None stays None); `InvalidInput` if it is
    neither a number of milliseconds in range nor an RFC 3339 date-time."""
    if value is None or isinstance(value, int):
        return value
    number = _integral(value)
    if number is not None and 0 <= number <= MAX_INT:
        return number
    ms = rfc3339_ms(value)
    if ms is None:
        raise InvalidInput(
            f"{name} must be milliseconds since the epoch or an RFC 3339 date-time "
            f"(e.g. 2026-11-21T00:00:00Z), got {value[:40]!r}",
            field=name,
        )
    return ms


def _integral(text: str) -> int | None:
    """`text` as an integer if it spells one (``900``, ``900.0``, ``9e2``), else None."""
    if len(text) > 32:
        return None
    try:
        number = float(text) if not text.isdigit() else int(text)
    except ValueError:
        return None
    if isinstance(number, float) and not number.is_integer():
        return None
    return int(number)


def rfc3339_ms(text: str) -> int | None:
    """Milliseconds since the epoch of an RFC 3339 date-time, or None if `text` is not one.

    All of RFC 3339 is taken, also what Python's `datetime` refuses (year 0000, a leap
    second ``:60``, lower-case ``t``/``z``): the arithmetic is done by hand.
    """
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= month <= 12 or not 1 <= day <= _DAYS[month - 1] + (month == 2 and leap):
        return None
    if hour > 23 or minute > 59 or second > 60:
        return None
    zone = match.group(8)
    offset = 0
    if zone not in ("Z", "z"):
        zone_h, zone_m = int(zone[1:3]), int(zone[4:6])
        if zone_h > 23 or zone_m > 59:
            return None
        offset = (zone_h * 60 + zone_m) * (1 if zone[0] == "+" else -1)
    fraction = match.group(7) or ".0"
    millis = int((fraction[1:] + "000")[:3])
    seconds = _days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
    return (seconds - offset * 60) * 1000 + millis


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = (year if year >= 0 else year - 399) // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def parse_time(text: str | None, name: str) -> int | None:
    """Milliseconds since the epoch from ``1763683200000`` or ISO 8601 with an offset."""
    if text is None or text == "":
        return None
    if text.isdigit():
        value = int(text)
        if value > MAX_INT:
            raise InvalidInput(f"{name} must be at most {MAX_INT}", field=name)
        return value
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
    if match is None or re.fullmatch(DURATION, text.strip()) is None:
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


def parse_points(values: list[str] | None) -> tuple[list[str] | None, list[str]]:
    """Point names (None: all points) and those left out past `MAX_POINTS_PER_QUERY`."""
    names = list(dict.fromkeys(parse_list(values)))
    for name in names:
        if not POINT.fullmatch(name):
            raise InvalidInput(f"not a point name: {name!r}", field="points")
    kept, omitted = names[:MAX_POINTS_PER_QUERY], names[MAX_POINTS_PER_QUERY:]
    return kept or None, omitted


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
