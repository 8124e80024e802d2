"""The statistics the detectors use: small, explainable, pure.

* `theil_sen`: the median of pairwise slopes, with Sen's distribution-free confidence
  interval. One bad day cannot bend it (breakdown point 29%), unlike least squares.
* `cusum`: a one-sided cumulative sum of standardised deviations from a baseline (Page's
  CUSUM); it says whether, and from which point, a series has moved in one direction for
  longer than noise would.
* `robust_scale`: the median absolute deviation as a standard deviation.

The series are short (a boiler's daily features over a few weeks), so plain Python is
fast enough: a fit over 21 days is 210 slopes. numpy/scipy would add nothing here but a
dependency (scipy's ``theilslopes`` computes the same interval).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MAD_TO_SD = 1.4826
"""Scales a median absolute deviation to a normal standard deviation."""


@dataclass(frozen=True, slots=True)
class TrendFit:
    """A robust straight line through (x, y) points, with the slope's confidence bounds."""

    slope: float
    intercept: float
    slope_low: float
    slope_high: float
    points: int

    def at(self, x: float) -> float:
        """The line's value at `x`."""
        return self.intercept + self.slope * x


def theil_sen(xs: Sequence[float], ys: Sequence[float], confidence: float = 0.90) -> TrendFit:
    """Theil-Sen line through at least two points with distinct x; Sen's two-sided interval
    for the slope at `confidence`."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    slopes = sorted(
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] != xs[i]
    )
    if not slopes:
        raise ValueError("a trend needs two points at different x")
    slope = statistics.median(slopes)
    intercept = statistics.median(y - slope * x for x, y in zip(xs, ys, strict=True))
    n, count = len(xs), len(slopes)
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    spread = z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    low_rank = max(0, math.floor((count - spread) / 2))
    high_rank = min(count - 1, math.ceil((count + spread) / 2))
    return TrendFit(slope, intercept, slopes[low_rank], slopes[high_rank], n)


def robust_scale(values: Sequence[float], floor: float) -> float:
    """Median absolute deviation as a standard deviation, never below `floor`."""
    if len(values) < 2:
        return floor
    centre = statistics.median(values)
    mad = statistics.median(abs(v - centre) for v in values)
    return max(floor, MAD_TO_SD * mad)


@dataclass(frozen=True, slots=True)
class CusumResult:
    """Where a one-sided CUSUM stands after a series."""

    statistic: float
    alarm: bool
    start: int | None
    """Index where the current excursion began (the estimated change point), if any."""


def cusum(
    values: Sequence[float], baseline: float, scale: float, *, k: float = 0.5, h: float = 5.0
) -> CusumResult:
    """Upward CUSUM of ``(value - baseline) / scale`` with allowance `k` and limit `h`
    (negate the values and the baseline for a downward one)."""
    statistic, start = 0.0, None
    for index, value in enumerate(values):
        statistic = max(0.0, statistic + (value - baseline) / scale - k)
        if statistic == 0.0:
            start = None
        elif start is None:
            start = index
    return CusumResult(statistic, statistic >= h, start)
