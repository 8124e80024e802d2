"""Crowdsourcing service engineers: who is invited to a job, and who is shortlisted (eqs. 2-17).

Rules and invariants (the paper's section 4, with the decisions it leaves open):

- An engineer is assessed against a task by five named constraints, reported in this order:
  ``unavailable`` (not taking work at all), ``skills`` (constraint 1: must hold every required
  skill), ``price`` (constraint 2: passes with no price history or a zero estimate, which
  carry no price information; else ``|average_price - cost| <= price_tolerance * cost``),
  ``radius`` (constraint 3: home within ``radius_km`` great-circle kilometres of the boiler)
  and ``performance`` (constraint 4: ``W >= task.min_performance``). Every failure is
  reported, not just the first.
- The normalisation pool is the engineers passing the first four checks. CS* and SQ* are
  min-max normalised over that pool only (`min_max`); engineers outside it have no CS*, SQ*
  or W (``None``), so they can fail every constraint but ``performance``.
- `min_max` maps ``v`` to ``(v - min) / (max - min)``. With no spread (``max == min``) there is
  no information to rank by, so every value maps to 1.0 if it is positive and 0.0 if it is
  not (an all-zero pool is a pool without history). Empty input gives an empty list.
- W (eq. 9) is ``q_ar * AR + q_cs * CS* + q_sq * SQ*`` with AR (eq. 6) as a fraction 0..1.
  AR, CS and SQ start at 0 with no history, as the paper sets them.
- The eligible pool passes all five checks. ``top_k = invite_count(len(eligible))``: 0 for an
  empty pool, else ``ceil(invite_fraction * n)`` clamped to ``[invite_min, invite_max]`` and
  never above ``n`` (the paper's phi). The top ``top_k`` by ``(-W, id)`` are invited, so ties
  go to the lower engineer id and results do not depend on input order.
- Cold start: up to ``newcomer_slots`` further eligible engineers with fewer than
  ``newcomer_invitations`` invitations are invited by ``(-W, distance_km, id)``. They never
  displace a top engineer; with ``newcomer_slots=0`` the result is exactly the paper's.
- Threshold comparisons are inclusive, with a relative slack of 1e-9 so a value equal to its
  threshold on paper is not failed by floating-point rounding.
- Shortlisting (eqs. 11-14) ranks only responses that are available with a quote and a
  location; the paper's "rank 0 if unavailable" is read as "not shortlisted". The rank is the
  principle's figure min-max normalised over every ranked response, times 100: 0% is best and
  with no spread every rank is 0%. Ties go to the lower engineer id.
- After a job, eqs. 15-16 fold the new 1-5 scores into the running means and eq. 17 updates the
  acceptance rate, again as a fraction 0..1.

Everything here is pure: no database, no I/O, no clock. Nonsense inputs raise `ValueError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), for great-circle distances."""

SCORE_MIN = 1.0
"""Lowest customer-satisfaction or service-quality score a customer can give."""
SCORE_MAX = 5.0
"""Highest customer-satisfaction or service-quality score a customer can give."""

_SLACK = 1e-9


def _at_most(value: float, limit: float) -> bool:
    """``value <= limit``, forgiving floating-point error at the boundary."""
    return value <= limit + _SLACK * max(1.0, abs(limit))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


class Principle(StrEnum):
    """How the shortlist is ordered (section 4.2)."""

    LOW_CARBON = "low_carbon"
    """Eq. 14: nearest engineer first (least travel, least CO2)."""
    LOW_COST = "low_cost"
    """Eq. 13: quote closest to the estimated cost first."""
    CHEAPEST = "cheapest"
    """Lowest quote first."""


@dataclass(frozen=True, slots=True)
class Place:
    """A point on Earth in decimal degrees."""

    lat: float
    lon: float

    def __post_init__(self) -> None:
        if not -90.0 <= self.lat <= 90.0:
            raise ValueError(f"latitude must be in [-90, 90], got {self.lat}")
        if not -180.0 <= self.lon <= 180.0:
            raise ValueError(f"longitude must be in [-180, 180], got {self.lon}")


def haversine_km(a: Place, b: Place) -> float:
    """Great-circle distance between two places, in kilometres."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat = lat2 - lat1
    dlon = math.radians(b.lon - a.lon)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class CrowdRules:
    """Tunables of the invitation step (mirrors the service settings)."""

    q_ar: float = 0.5
    q_cs: float = 0.2
    q_sq: float = 0.3
    """Weights of eq. 9 (the paper's case study)."""
    price_tolerance: float = 0.3
    """Constraint 2: ``|average price - estimate| <= tolerance * estimate``."""
    radius_km: float = 30.0
    """Constraint 3: home within this great-circle distance of the boiler."""
    invite_fraction: float = 0.1
    invite_min: int = 1
    invite_max: int = 10
    """Invite ``ceil(fraction * pool)``, at least `invite_min`, at most `invite_max`."""
    newcomer_slots: int = 1
    """Cold start: extra invitations for newcomers; 0 is the paper's mode exactly."""
    newcomer_invitations: int = 3
    """An engineer with fewer invitations than this is a newcomer."""

    def __post_init__(self) -> None:
        for name in ("q_ar", "q_cs", "q_sq", "price_tolerance"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.radius_km > 0:
            raise ValueError(f"radius_km must be positive, got {self.radius_km}")
        if not 0 < self.invite_fraction <= 1:
            raise ValueError(f"invite_fraction must be in (0, 1], got {self.invite_fraction}")
        if not 0 <= self.invite_min <= self.invite_max:
            raise ValueError(
                f"need 0 <= invite_min <= invite_max, got {self.invite_min}, {self.invite_max}"
            )
        if self.newcomer_slots < 0 or self.newcomer_invitations < 0:
            raise ValueError("newcomer_slots and newcomer_invitations must not be negative")


@dataclass(frozen=True, slots=True)
class EngineerRecord:
    """An engineer's profile and history, as the invitation step needs it."""

    id: str
    skills: frozenset[str]
    home: Place
    invitations: int = 0
    """Num(T_all): invitations closed so far (accepted or not)."""
    accepted: int = 0
    """Num(T_accepted)."""
    evaluated: int = 0
    """Jobs the customer has scored."""
    cs_sum: float = 0.0
    """Sum of customer-satisfaction scores (1-5 each)."""
    sq_sum: float = 0.0
    """Sum of service-quality scores (1-5 each)."""
    average_price: float | None = None
    """Average price for this task's service type; None without history."""
    available: bool = True
    """Taking work at all."""

    def __post_init__(self) -> None:
        if not 0 <= self.accepted <= self.invitations:
            raise ValueError(
                f"engineer {self.id}: need 0 <= accepted <= invitations, "
                f"got {self.accepted}, {self.invitations}"
            )
        if self.evaluated < 0:
            raise ValueError(f"engineer {self.id}: evaluated must not be negative")
        if self.average_price is not None and not self.average_price >= 0:
            raise ValueError(f"engineer {self.id}: average_price must not be negative")

    @property
    def ar(self) -> float:
        """Acceptance rate (eq. 6) as a fraction 0..1; 0.0 with no invitations."""
        return self.accepted / self.invitations if self.invitations else 0.0

    @property
    def cs(self) -> float:
        """Mean customer satisfaction (eq. 7); 0.0 with no evaluations."""
        return self.cs_sum / self.evaluated if self.evaluated else 0.0

    @property
    def sq(self) -> float:
        """Mean service quality (eq. 8); 0.0 with no evaluations."""
        return self.sq_sum / self.evaluated if self.evaluated else 0.0

    def newcomer(self, rules: CrowdRules) -> bool:
        """Too few invitations yet to have a meaningful record."""
        return self.invitations < rules.newcomer_invitations


@dataclass(frozen=True, slots=True)
class Task:
    """A service task as the invitation step sees it (definition 2, trimmed)."""

    skills: frozenset[str]
    cost: float
    """Estimated service cost (SC); 0 means no estimate, so constraint 2 is not applied."""
    location: Place
    min_performance: float = 0.0
    """Constraint 4: the lowest W the requester accepts."""

    def __post_init__(self) -> None:
        if not self.cost >= 0:
            raise ValueError(f"task cost must not be negative, got {self.cost}")
        if math.isnan(self.min_performance):
            raise ValueError("min_performance must be a number")


@dataclass(frozen=True, slots=True)
class Assessment:
    """One engineer's figures for one task."""

    engineer_id: str
    failed: tuple[str, ...]
    """Constraints failed, in the order unavailable, skills, price, radius, performance."""
    missing_skills: tuple[str, ...]
    """Required skills the engineer lacks, sorted."""
    distance_km: float
    price_gap: float | None
    """``|average_price - cost| / cost``; None without price history or estimate."""
    ar: float
    cs: float
    sq: float
    cs_norm: float | None
    sq_norm: float | None
    performance: float | None
    """W (eq. 9); None (like CS* and SQ*) outside the normalisation pool."""
    invited: bool = False
    reason: str | None = None
    """``"top"`` or ``"newcomer"`` when invited."""

    @property
    def eligible(self) -> bool:
        """Passes every constraint."""
        return not self.failed

    def figures(self) -> dict[str, Any]:
        """Every field (and `eligible`), floats rounded to 4 places, JSON-safe."""
        return {
            "engineer_id": self.engineer_id,
            "eligible": self.eligible,
            "failed": list(self.failed),
            "missing_skills": list(self.missing_skills),
            "distance_km": _round(self.distance_km),
            "price_gap": _round(self.price_gap),
            "ar": _round(self.ar),
            "cs": _round(self.cs),
            "sq": _round(self.sq),
            "cs_norm": _round(self.cs_norm),
            "sq_norm": _round(self.sq_norm),
            "performance": _round(self.performance),
            "invited": self.invited,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class CrowdResult:
    """The outcome of the invitation step for one task."""

    assessments: tuple[Assessment, ...]
    """Every engineer given, sorted by id."""
    invited: tuple[Assessment, ...]
    """Invitation order: the top ones by (-W, id), then newcomers."""
    pool_size: int
    """Engineers passing constraints 1-4 (the eligible pool)."""
    top_k: int
    """How many were invited as "top"."""


def min_max(values: Sequence[float]) -> list[float]:
    """Min-max normalisation to [0, 1]; with no spread, 1.0 for positive values, else 0.0."""
    if not values:
        return []
    low, high = min(values), max(values)
    if high == low:
        return [1.0 if v > 0 else 0.0 for v in values]
    return [(v - low) / (high - low) for v in values]


def performance(ar: float, cs_norm: float, sq_norm: float, rules: CrowdRules) -> float:
    """Historical performance W (eq. 9), AR as a fraction 0..1."""
    return rules.q_ar * ar + rules.q_cs * cs_norm + rules.q_sq * sq_norm


def invite_count(pool_size: int, rules: CrowdRules) -> int:
    """How many of an eligible pool to invite as "top" (the paper's phi)."""
    if pool_size < 0:
        raise ValueError(f"pool_size must not be negative, got {pool_size}")
    if pool_size == 0:
        return 0
    # Rounded first so that 0.1 * 30 = 3.0000000000000004 gives 3, not 4.
    wanted = math.ceil(round(rules.invite_fraction * pool_size, 9))
    return min(pool_size, rules.invite_max, max(rules.invite_min, wanted))


def _screen(task: Task, engineer: EngineerRecord, rules: CrowdRules) -> Assessment:
    """Constraints 1-3 and availability; no normalised figures yet."""
    failed: list[str] = []
    if not engineer.available:
        failed.append("unavailable")
    missing = tuple(sorted(task.skills - engineer.skills))
    if missing:
        failed.append("skills")
    price_gap: float | None = None
    if engineer.average_price is not None and task.cost > 0:
        gap = abs(engineer.average_price - task.cost)
        price_gap = gap / task.cost
        if not _at_most(gap, rules.price_tolerance * task.cost):
            failed.append("price")
    distance = haversine_km(engineer.home, task.location)
    if not _at_most(distance, rules.radius_km):
        failed.append("radius")
    return Assessment(
        engineer_id=engineer.id,
        failed=tuple(failed),
        missing_skills=missing,
        distance_km=distance,
        price_gap=price_gap,
        ar=engineer.ar,
        cs=engineer.cs,
        sq=engineer.sq,
        cs_norm=None,
        sq_norm=None,
        performance=None,
    )


def _w(assessment: Assessment) -> float:
    assert assessment.performance is not None  # only called on the normalisation pool
    return assessment.performance


def crowdsource(task: Task, engineers: Sequence[EngineerRecord], rules: CrowdRules) -> CrowdResult:
    """Assess every engineer against `task` and choose whom to invite (eqs. 2-10)."""
    ordered = sorted(engineers, key=lambda e: e.id)
    ids = [e.id for e in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError("engineer ids must be unique")
    by_id = {e.id: e for e in ordered}
    screened = [_screen(task, e, rules) for e in ordered]

    pool = [a for a in screened if a.eligible]
    cs_norms = min_max([a.cs for a in pool])
    sq_norms = min_max([a.sq for a in pool])
    scored: dict[str, Assessment] = {}
    for a, cs_norm, sq_norm in zip(pool, cs_norms, sq_norms, strict=True):
        w = performance(a.ar, cs_norm, sq_norm, rules)
        # Constraint 4: the requester's threshold is at most W.
        failed = () if _at_most(task.min_performance, w) else ("performance",)
        scored[a.engineer_id] = replace(
            a, failed=failed, cs_norm=cs_norm, sq_norm=sq_norm, performance=w
        )
    assessed = [scored.get(a.engineer_id, a) for a in screened]

    eligible = [a for a in assessed if a.eligible]
    top_k = invite_count(len(eligible), rules)
    top = sorted(eligible, key=lambda a: (-_w(a), a.engineer_id))[:top_k]
    top_ids = {a.engineer_id for a in top}
    newcomers = sorted(
        (
            a
            for a in eligible
            if a.engineer_id not in top_ids and by_id[a.engineer_id].newcomer(rules)
        ),
        key=lambda a: (-_w(a), a.distance_km, a.engineer_id),
    )[: rules.newcomer_slots]

    invited = tuple(
        [replace(a, invited=True, reason="top") for a in top]
        + [replace(a, invited=True, reason="newcomer") for a in newcomers]
    )
    invited_by_id = {a.engineer_id: a for a in invited}
    return CrowdResult(
        assessments=tuple(invited_by_id.get(a.engineer_id, a) for a in assessed),
        invited=invited,
        pool_size=len(eligible),
        top_k=top_k,
    )


@dataclass(frozen=True, slots=True)
class TravelModel:
    """Rough travel figures from a great-circle distance (stated, not measured)."""

    road_factor: float = 1.3
    """Road distance = great-circle distance x this."""
    speed_kmh: float = 40.0
    """Average car speed."""
    co2_kg_per_km: float = 0.17
    """Average car, kg CO2e per km."""

    def __post_init__(self) -> None:
        if not self.road_factor > 0:
            raise ValueError(f"road_factor must be positive, got {self.road_factor}")
        if not self.speed_kmh > 0:
            raise ValueError(f"speed_kmh must be positive, got {self.speed_kmh}")
        if not self.co2_kg_per_km >= 0:
            raise ValueError(f"co2_kg_per_km must not be negative, got {self.co2_kg_per_km}")

    def road_km(self, great_circle_km: float) -> float:
        """Estimated road distance, one way."""
        return great_circle_km * self.road_factor

    def minutes(self, great_circle_km: float) -> float:
        """Estimated driving time, one way."""
        return self.road_km(great_circle_km) / self.speed_kmh * 60.0

    def co2_kg(self, great_circle_km: float) -> float:
        """Estimated CO2e of the round trip (there and back)."""
        return 2.0 * self.road_km(great_circle_km) * self.co2_kg_per_km

    def assumptions(self) -> dict[str, Any]:
        """The model's assumptions, for the API to state alongside its figures."""
        return {
            "road_factor": self.road_factor,
            "speed_kmh": self.speed_kmh,
            "co2_kg_per_km": self.co2_kg_per_km,
            "distance": "great-circle distance x road_factor",
            "travel_min": "one way, by car",
            "co2_kg": "round trip, by car",
        }


@dataclass(frozen=True, slots=True)
class Response:
    """An invited engineer's answer: availability, quote and current location."""

    engineer_id: str
    available: bool
    quote: float | None
    location: Place | None
    performance: float
    """W at invitation time, carried through to the shortlist."""

    def __post_init__(self) -> None:
        if self.quote is not None and not self.quote >= 0:
            raise ValueError(f"engineer {self.engineer_id}: quote must not be negative")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One shortlisted engineer, with the figures the requester chooses by."""

    engineer_id: str
    position: int
    """1-based place on the shortlist."""
    rank_pct: float
    """Eqs. 13-14: 0% is best, 100% worst among every ranked response."""
    distance_km: float
    travel_min: float
    co2_kg: float
    quote: float
    quote_gap: float
    """``|quote - cost|`` (eq. 11)."""
    performance: float

    def as_json(self) -> dict[str, Any]:
        """Every field, floats rounded to 4 places."""
        return {
            "engineer_id": self.engineer_id,
            "position": self.position,
            "rank_pct": round(self.rank_pct, 4),
            "distance_km": round(self.distance_km, 4),
            "travel_min": round(self.travel_min, 4),
            "co2_kg": round(self.co2_kg, 4),
            "quote": round(self.quote, 4),
            "quote_gap": round(self.quote_gap, 4),
            "performance": round(self.performance, 4),
        }


def _rank_pct(values: Sequence[float]) -> list[float]:
    """Eqs. 13-14: min-max as a percentage; 0.0 for every value with no spread."""
    low, high = min(values), max(values)
    if high == low:
        return [0.0 for _ in values]
    return [(v - low) / (high - low) * 100.0 for v in values]


def shortlist(
    responses: Sequence[Response],
    *,
    cost: float,
    boiler: Place,
    principle: Principle,
    travel: TravelModel,
    size: int = 3,
) -> tuple[Candidate, ...]:
    """Rank the available, quoted responses by `principle` and keep the best `size`."""
    if not cost >= 0:
        raise ValueError(f"cost must not be negative, got {cost}")
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    ids = [r.engineer_id for r in responses]
    if len(set(ids)) != len(ids):
        raise ValueError("response engineer ids must be unique")
    ranked: list[tuple[str, float, float, float]] = []  # id, quote, distance, performance
    for r in responses:
        if r.available and r.quote is not None and r.location is not None:
            ranked.append((r.engineer_id, r.quote, haversine_km(r.location, boiler), r.performance))
    if not ranked:
        return ()
    if principle is Principle.LOW_COST:
        figure = [abs(quote - cost) for _, quote, _, _ in ranked]
    elif principle is Principle.LOW_CARBON:
        figure = [distance for _, _, distance, _ in ranked]
    else:
        figure = [quote for _, quote, _, _ in ranked]
    order = sorted(zip(_rank_pct(figure), ranked, strict=True), key=lambda p: (p[0], p[1][0]))
    return tuple(
        Candidate(
            engineer_id=engineer_id,
            position=position,
            rank_pct=pct,
            distance_km=distance,
            travel_min=travel.minutes(distance),
            co2_kg=travel.co2_kg(distance),
            quote=quote,
            quote_gap=abs(quote - cost),
            performance=w,
        )
        for position, (pct, (engineer_id, quote, distance, w)) in enumerate(order[:size], 1)
    )


def _check_score(name: str, score: float) -> None:
    if not SCORE_MIN <= score <= SCORE_MAX:
        raise ValueError(f"{name} must be in [{SCORE_MIN:g}, {SCORE_MAX:g}], got {score}")


def updated_means(
    cs: float, sq: float, evaluated: int, score_cs: float, score_sq: float
) -> tuple[float, float]:
    """CS+ and SQ+ (eqs. 15-16): fold one more pair of 1-5 scores into the running means."""
    if evaluated < 0:
        raise ValueError(f"evaluated must not be negative, got {evaluated}")
    _check_score("score_cs", score_cs)
    _check_score("score_sq", score_sq)
    n = evaluated + 1
    return (cs * evaluated + score_cs) / n, (sq * evaluated + score_sq) / n


def updated_acceptance(accepted: int, invitations: int, was_accepted: bool) -> float:
    """AR+ (eq. 17) as a fraction 0..1, counting one more closed invitation."""
    if not 0 <= accepted <= invitations:
        raise ValueError(f"need 0 <= accepted <= invitations, got {accepted}, {invitations}")
    return (accepted + 1 if was_accepted else accepted) / (invitations + 1)
