"""A boiler-day in a few numbers: what the detectors follow from day to day.

`day_features` reads one boiler's good-quality samples of one (UTC) day in time order and
carries every point's last value forward (from the day before, too), so it works the same
on report-by-exception data (a point appears only when it changed) as on regular snapshots.
Each feature is a median over the moments its condition held, so a burst of readings or one
wild value moves it little:

=====================  ======================================================================
feature                what it is
=====================  ======================================================================
``pressure_20``        CH pressure brought to a 20 degC flow (``p - k (flow - 20)``): a leak
                       shows as a fall under the daily thermal-expansion swing
``pressure_noise``     spread of that compensated pressure from one reading to the next
                       (median absolute first difference, as a standard deviation): a
                       failing sensor reads erratically
``flame_ua``           ionisation current while running (electrode wear, fouling)
``ignition_fail``      failed ignitions over ignition attempts, from the two counters
``delta_t``            flow minus return while heating (not hot water) is running (scaling)
``fan_ratio``          fan speed over the model's target at that modulation (fan wear)
``starts``             burner starts that day; ``run_share`` share of readings running
=====================  ======================================================================

A day where the boiler showed a fault code is marked ``faulted``: the detectors skip it (a
boiler already broken is not a forecast). Pure: no I/O.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from cloud.predict.stats import MAD_TO_SD
from protocols.reference import BoilerStatus

POINTS = (
    "status",
    "fault_code",
    "flow_temp",
    "return_temp",
    "ch_pressure",
    "flame_current",
    "modulation",
    "fan_speed",
    "burner_starts",
    "failed_ignitions",
    "dhw_active",
)
"""The points the features are made from (all on the reference register map)."""

SENSOR_FAULT_ABOVE_BAR = 10.0
"""A pressure reading above this is the sensor's fault value, not a pressure."""


@dataclass(frozen=True, slots=True)
class FeatureRules:
    """Per-model constants the features need (from the detector rules file)."""

    pressure_per_k: float = 0.008
    """Pressure rise per kelvin of flow temperature (the expansion vessel's behaviour)."""
    fan_base_rpm: float = 1500.0
    fan_rpm_per_pct: float = 35.0
    """The fan's target speed: ``base + per_pct * modulation``."""


@dataclass(frozen=True, slots=True)
class DayFeatures:
    """One boiler's day, summed up."""

    readings: int = 0
    faulted: bool = False
    pressure_20: float | None = None
    pressure_noise: float | None = None
    flame_ua: float | None = None
    ignition_fail: float | None = None
    starts: float | None = None
    delta_t: float | None = None
    fan_ratio: float | None = None
    run_share: float | None = None
    vs_peers: Mapping[str, float] = field(default_factory=dict)
    """Feature minus the median of the same model's boilers that day (`with_peers`)."""
    last: Mapping[str, float] = field(default_factory=dict)
    """Every point's value at the end of the day: the next day starts from it."""

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly, rounded, without empty features."""
        out: dict[str, Any] = {}
        for key in _FIELDS:
            value = getattr(self, key)
            if isinstance(value, float):
                value = round(value, 4)
            elif isinstance(value, Mapping):
                value = {k: round(v, 4) for k, v in sorted(value.items())} or None
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DayFeatures:
        """Back from `to_json` (unknown keys ignored, so old rows still load)."""
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})

    def value(self, name: str) -> float | None:
        """A feature by name (None if absent); ``<feature>_vs_peers`` for a peer residual."""
        if name.endswith(PEER_SUFFIX):
            return self.vs_peers.get(name.removesuffix(PEER_SUFFIX))
        found = getattr(self, name, None)
        if isinstance(found, bool) or not isinstance(found, int | float):
            return None
        return float(found)

    def with_peers(self, medians: Mapping[str, float]) -> DayFeatures:
        """These features with their residuals against the peers' `medians`."""
        residuals = {}
        for name, median in medians.items():
            own = self.value(name)
            if own is not None:
                residuals[name] = own - median
        return replace(self, vs_peers=residuals)


_FIELDS = frozenset(f.name for f in fields(DayFeatures))


PEER_FEATURES = ("pressure_20", "flame_ua", "delta_t", "fan_ratio", "starts")
"""Features compared with the same model's boilers on the same day."""
PEER_SUFFIX = "_vs_peers"
MIN_PEERS = 5
"""Fewer boilers of a model than this reporting a feature that day: no peer figure."""


def peer_medians(days: Iterable[DayFeatures]) -> dict[str, float]:
    """Median of each `PEER_FEATURES` feature over one model's boilers of one day."""
    values: dict[str, list[float]] = {name: [] for name in PEER_FEATURES}
    for day in days:
        if day.faulted:
            continue
        for name in PEER_FEATURES:
            found = day.value(name)
            if found is not None:
                values[name].append(found)
    return {k: statistics.median(v) for k, v in values.items() if len(v) >= MIN_PEERS}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def day_features(
    rows: Iterable[tuple[int, str, float | None]],
    rules: FeatureRules = FeatureRules(),
    start: Mapping[str, float] | None = None,
) -> DayFeatures:
    """Features of one boiler-day from its ``(ts_ms, point, value)`` samples (any order).

    `start`: each point's value when the day began (the previous day's `DayFeatures.last`),
    so a point that did not change all day (report by exception) still counts, and the
    counters count from where they stood."""
    ordered = sorted((r for r in rows if r[2] is not None), key=lambda r: r[0])
    state: dict[str, float] = dict(start or {})
    pressures: list[float] = []
    flames: list[float] = []
    deltas: list[float] = []
    fans: list[float] = []
    counters: dict[str, list[float]] = {
        name: [state[name]] if name in state else []
        for name in ("burner_starts", "failed_ignitions")
    }
    moments = running_moments = 0
    faulted = False
    index = 0
    while index < len(ordered):
        ts = ordered[index][0]
        while index < len(ordered) and ordered[index][0] == ts:
            _, point, value = ordered[index]
            state[point] = float(value)  # type: ignore[arg-type]
            if point in counters:
                counters[point].append(float(value))  # type: ignore[arg-type]
            index += 1
        moments += 1
        if state.get("fault_code", 0.0):
            faulted = True
            continue
        running = state.get("status") == BoilerStatus.RUNNING
        running_moments += running
        flow, pressure = state.get("flow_temp"), state.get("ch_pressure")
        if flow is not None and pressure is not None and pressure <= SENSOR_FAULT_ABOVE_BAR:
            pressures.append(pressure - rules.pressure_per_k * (flow - 20.0))
        if not running:
            continue
        flame, modulation, fan = (
            state.get(p) for p in ("flame_current", "modulation", "fan_speed")
        )
        if flame:
            flames.append(flame)
        if modulation and fan:
            fans.append(fan / (rules.fan_base_rpm + rules.fan_rpm_per_pct * modulation))
        ret = state.get("return_temp")
        if flow is not None and ret is not None and not state.get("dhw_active"):
            deltas.append(flow - ret)
    starts = _spread(counters["burner_starts"])
    failed = _spread(counters["failed_ignitions"])
    ignition = None
    if starts is not None and failed is not None and starts + failed > 0:
        ignition = failed / (starts + failed)
    noise = None
    if len(pressures) >= 4:
        steps = [abs(b - a) for a, b in itertools.pairwise(pressures)]
        noise = MAD_TO_SD * statistics.median(steps) / 2**0.5
    return DayFeatures(
        readings=moments,
        faulted=faulted,
        pressure_20=_median(pressures),
        pressure_noise=noise,
        flame_ua=_median(flames),
        ignition_fail=ignition,
        starts=starts,
        delta_t=_median(deltas),
        fan_ratio=_median(fans),
        run_share=running_moments / moments if moments else None,
        last=state,
    )


def _spread(values: list[float]) -> float | None:
    """How far a counter moved in the day (None without two readings; a counter that went
    backwards, e.g. a replaced controller, counts only its forward steps)."""
    if len(values) < 2:
        return None
    return sum(max(0.0, b - a) for a, b in itertools.pairwise(values))
