"""Slow physical degradations that end in a real fault if nobody acts, and one healthy pattern.

A `Degradation` starts at `onset_s` (simulated seconds) and progresses linearly at `rate`
(the share of the way to the fault per simulated day: ``rate = 0.1`` reaches the fault
about ten days after onset). `progress` is 0 before onset and 1 where the fault is due; how
exactly the fault then shows is the boiler's own business (a leak trips F22 first on a cold
circuit, a worn electrode locks out when three ignitions in a row fail).

The effect functions below are shared by the physical simulator (`hw_sim.boiler`) and the
fleet evaluation's faster statistical boilers (`hw_sim.evaluation`), so both show the same
signals on the same registers:

===============  ==========================================================  =========
mode             what the registers show as it develops                     ends in
===============  ==========================================================  =========
leak             ``ch_pressure`` falls (thermal expansion swings on top)     F22
electrode        ``flame_current`` falls; ``failed_ignitions`` climbs       F28 / F29
scaling          flow-return difference and flow overshoot grow, more       F20
                 burner starts per hour of burning
fan              ``fan_speed`` falls short of its target at a modulation    F32
sensor_drift     ``ch_pressure`` reads low and noisier, then nothing        F75
heavy_dhw        healthy: several long hot-water draws a day (more burner   nothing
                 starts, higher flow temperatures); must not raise a warning
===============  ==========================================================  =========

`DAYS_TO_FAULT` holds the documented ranges the evaluation draws from (days from onset to
fault), so any seed is a fair test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

SECONDS_PER_DAY = 86_400.0


class Mode(StrEnum):
    """What is wearing out (or, for `HEAVY_DHW`, what is merely unusual)."""

    LEAK = "leak"
    ELECTRODE = "electrode"
    SCALING = "scaling"
    FAN = "fan"
    SENSOR_DRIFT = "sensor_drift"
    HEAVY_DHW = "heavy_dhw"

    @property
    def healthy(self) -> bool:
        """Whether the pattern is normal use that must not raise a warning."""
        return self is Mode.HEAVY_DHW


DAYS_TO_FAULT = {
    Mode.LEAK: (8.0, 30.0),
    Mode.ELECTRODE: (12.0, 40.0),
    Mode.SCALING: (15.0, 45.0),
    Mode.FAN: (12.0, 40.0),
    Mode.SENSOR_DRIFT: (8.0, 30.0),
}
"""Documented range of days from onset to fault, per mode (uniform draws)."""


@dataclass(frozen=True, slots=True)
class Degradation:
    """One degradation of one boiler."""

    mode: Mode
    onset_s: float = 0.0
    rate: float = 0.1
    """Share of the way to the fault per simulated day (ignored for healthy patterns)."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.rate) or not 0 < self.rate <= 50:
            raise ValueError(f"rate must be in (0, 50] (share of the way per day), not {self.rate}")
        if not math.isfinite(self.onset_s):
            raise ValueError("onset_s must be finite")

    def progress(self, sim_s: float) -> float:
        """0 before onset, rising linearly; 1 where the fault is due (may exceed 1)."""
        if self.mode.healthy or sim_s <= self.onset_s:
            return 0.0
        return (sim_s - self.onset_s) / SECONDS_PER_DAY * self.rate

    def snapshot(self, sim_s: float) -> dict[str, float]:
        """JSON-friendly state at `sim_s` (for the control endpoint)."""
        return {
            "onset_s": self.onset_s,
            "rate_per_day": self.rate,
            "progress": round(self.progress(sim_s), 4),
        }

    @property
    def due_s(self) -> float | None:
        """Simulated second at which progress reaches 1 (None for healthy patterns)."""
        if self.mode.healthy:
            return None
        return self.onset_s + SECONDS_PER_DAY / self.rate


# ----- effects, as functions of progress (0..1+) -------------------------------------------

HEALTHY_FLAME_UA = 4.5
WORN_FLAME_UA = 0.8
"""Ionisation current of a healthy and of a fully worn/fouled electrode."""
IGNITION_MARGIN_UA = 2.0
"""Below this the controller starts to miss the flame at ignition."""


def pressure_loss_bar(progress: float, fill_bar: float, trip_bar: float) -> float:
    """How far a slow leak has taken the cold fill pressure down: at progress 1 the cold
    circuit sits at the F22 trip pressure."""
    return max(0.0, min(progress, 1.2)) * (fill_bar - trip_bar)


def flame_current_ua(progress: float) -> float:
    """Mean ionisation current with a flame, as the electrode wears or fouls."""
    p = max(0.0, min(progress, 1.0))
    return HEALTHY_FLAME_UA - p * (HEALTHY_FLAME_UA - WORN_FLAME_UA)


def ignition_failure_chance(progress: float) -> float:
    """Chance one ignition attempt misses the flame (0 while the current is healthy)."""
    current = flame_current_ua(progress)
    return max(0.0, min(1.0, (IGNITION_MARGIN_UA - current) / (IGNITION_MARGIN_UA - 0.9)))


def scaling_factor(progress: float) -> float:
    """Loss of heat-exchanger transfer, 0 (clean) to 1 (scaled to the overheat point)."""
    return max(0.0, min(progress, 1.2))


SCALING_EXTRA_DELTA_K = 9.0
"""Extra flow-return difference when fully scaled."""
SCALING_OVERSHOOT_K = 8.0
"""Extra flow overshoot above the setpoint when fully scaled (the high limit trips past it)."""


def fan_speed_factor(progress: float) -> float:
    """Actual over target fan speed: a worn fan falls short, by 25% at the fault."""
    return 1.0 - 0.25 * max(0.0, min(progress, 1.2))


def sensor_offset_bar(progress: float) -> float:
    """A drifting pressure sensor reads low by this much."""
    return -0.25 * max(0.0, min(progress, 1.0))


def sensor_noise_bar(progress: float) -> float:
    """Extra spread of a drifting pressure sensor's readings (standard deviation)."""
    return 0.12 * math.pow(max(0.0, min(progress, 1.0)), 1.5)
