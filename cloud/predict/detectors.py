"""Per-boiler detectors: baseline, change point, robust trend, forecast of time to fault.

`detect` looks at one boiler's daily features (oldest first) and returns a `Forecast` for each
failure mode whose rule fires (the method is in ``rules.toml``'s header). Every forecast
carries its evidence: the values it saw, the baseline, the change point, the fitted line,
the threshold and the forecast with its bounds, so a person can check the reasoning.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloud.predict.features import DayFeatures
from cloud.predict.rules import ModeRule
from cloud.predict.stats import cusum, robust_scale, theil_sen

MAX_FORECAST_DAYS = 3650.0
"""Forecasts further away than this are reported as this (a flat line never arrives)."""


@dataclass(frozen=True, slots=True)
class Forecast:
    """A failure mode heading for its fault: when, how sure, and why."""

    mode: str
    fault: str
    days_to_fault: float
    days_low: float
    days_high: float
    evidence: dict[str, Any]


def detect(
    rules: Sequence[ModeRule],
    history: Sequence[tuple[int, DayFeatures]],
    repaired: Mapping[str, int] | None = None,
) -> list[Forecast]:
    """Forecasts for a boiler with `history` ``(day number, features)``, oldest first; the
    last day is "today". Modes listed in another's ``unless`` are decided first.

    A boiler's history starts again after its last faulted day (what came before was a
    boiler on its way to that fault, and most likely repaired since), and, per mode, after
    the day in `repaired` (mode -> day a repair of it was verified): the old trend must not
    warn again about what was fixed; the new baseline builds up from there."""
    last_fault = max((day for day, f in history if f.faulted), default=None)
    if last_fault is not None:
        history = [(day, f) for day, f in history if day > last_fault or day == history[-1][0]]
    found: dict[str, Forecast] = {}
    ordered = sorted(rules, key=lambda r: len(r.unless))
    for rule in ordered:
        if any(other in found for other in rule.unless):
            continue
        since = (repaired or {}).get(rule.name)
        days = history if since is None else [(d, f) for d, f in history if d > since]
        forecast = detect_mode(rule, days)
        if forecast is not None:
            found[rule.name] = forecast
    return [found[r.name] for r in rules if r.name in found]


def detect_mode(rule: ModeRule, history: Sequence[tuple[int, DayFeatures]]) -> Forecast | None:
    """One mode's forecast, or None when its rule does not fire."""
    if not history:
        return None
    today = history[-1][0]
    series = [
        (day, value)
        for day, features in history
        if day > today - rule.history_days
        and not features.faulted
        and (value := features.value(rule.feature)) is not None
    ]
    if len(series) < rule.baseline_days + rule.min_days:
        return None
    sign = rule.direction.sign
    base_values = [v for _, v in series[: rule.baseline_days]]
    baseline = sorted(base_values)[len(base_values) // 2]
    scale = robust_scale(base_values, rule.min_scale)
    watched = series[rule.baseline_days :]
    change = cusum(
        [sign * v for _, v in watched], sign * baseline, scale, k=rule.cusum_k, h=rule.cusum_h
    )
    if not change.alarm or change.start is None:
        return None
    start = _hinge(watched, baseline, change.start, len(watched) - rule.min_days)
    fitted = watched[start:][-rule.window_days :]
    xs = [float(d) for d, _ in fitted]
    fit = theil_sen(xs, [v for _, v in fitted], rule.confidence)
    wear_slope = sign * fit.slope
    slow, fast = sorted((sign * fit.slope_low, sign * fit.slope_high))
    if wear_slope <= 0 or slow <= 0:
        return None  # not clearly heading the way of wear
    level = fit.at(float(today))
    if sign * (level - baseline) < rule.min_change:
        return None
    threshold = rule.threshold
    if threshold is None:
        threshold = baseline + sign * (rule.threshold_change or 0.0)
    gap = sign * (threshold - level)
    days, low, high = (_days(gap, s) for s in (wear_slope, fast, slow))
    if days > rule.horizon_days:
        return None
    evidence = {
        "feature": rule.feature,
        "baseline": round(baseline, 4),
        "spread": round(scale, 4),
        "change_day": fitted[0][0],
        "cusum": round(change.statistic, 2),
        "level": round(level, 4),
        "slope_per_day": round(fit.slope, 5),
        "slope_interval": [round(fit.slope_low, 5), round(fit.slope_high, 5)],
        "confidence": rule.confidence,
        "fit_days": fit.points,
        "threshold": round(threshold, 4),
        "values": [[d, round(v, 4)] for d, v in series[-rule.window_days :]],
    }
    return Forecast(rule.name, rule.fault, days, low, high, evidence)


def _hinge(points: Sequence[tuple[int, float]], baseline: float, first: int, last: int) -> int:
    """Where the wear began: the index in ``first..last`` that best splits `points` into
    "at the baseline" and "a straight line away from it" (least absolute deviations). The
    CUSUM's own start is often a few noisy days early, and those flat days would flatten
    the trend."""
    first = max(0, min(first, last))
    best, best_cost = first, math.inf
    for split in range(first, last + 1):
        x0 = points[split][0]
        after = points[split + 1 :]
        if not after:
            break
        slope = statistics.median((v - baseline) / (d - x0) for d, v in after)
        cost = sum(abs(v - baseline) for _, v in points[first:split]) + sum(
            abs(v - baseline - slope * (d - x0)) for d, v in points[split:]
        )
        if cost < best_cost:
            best, best_cost = split, cost
    return best


def _days(gap: float, slope: float) -> float:
    """Days to close `gap` at `slope` per day (0 when already past; capped)."""
    if gap <= 0:
        return 0.0
    if slope <= 0 or not math.isfinite(gap / slope):
        return MAX_FORECAST_DAYS
    return min(MAX_FORECAST_DAYS, gap / slope)
