"""Thermal physics of a combi boiler, its house and its hot-water draws, on simulated time.

First-order lumped models, chosen to be plausible rather than exact:

* the primary water loop (heat capacity ``water_capacity``) is heated by the burner and
  loses heat to the radiators when the pump runs in central-heating mode, and slowly to the
  boiler's surroundings;
* the house (``house_capacity``, loss coefficient ``house_loss``) is heated by the radiators
  and cools to the outdoor temperature, which follows a daily sinusoid (coldest at 05:00);
* a room thermostat calls for heat with a comfort/set-back schedule and a small hysteresis;
* hot-water draws happen at seeded random times of day (a morning shower, an evening one,
  a few short draws); while one runs the burner heats the draw through the plate exchanger;
* water pressure rises with temperature from its cold fill pressure.

Nothing here reads a clock: `Plant.step` advances by the seconds it is given.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from enum import StrEnum

SECONDS_PER_DAY = 86_400
WATER_CP = 4.186  # kJ/(kg K)
MAX_DHW_TEMP = 65.0


class HeatMode(StrEnum):
    """Where the burner's heat goes."""

    NONE = "none"
    CH = "ch"
    DHW = "dhw"


@dataclass(frozen=True, slots=True)
class PlantParameters:
    """Physical constants of the boiler, its heating circuit and the house."""

    max_output_kw: float = 24.0
    min_output_kw: float = 4.8
    water_capacity_kj_per_k: float = 200.0
    radiator_kw_per_k: float = 0.30
    boiler_loss_kw_per_k: float = 0.02
    pump_flow_kg_s: float = 0.25
    house_capacity_kj_per_k: float = 10_000.0
    house_loss_kw_per_k: float = 0.25
    boiler_room_temp: float = 18.0
    cold_water_temp: float = 10.0
    dhw_flow_l_min: float = 8.0
    dhw_time_constant_s: float = 8.0
    dhw_cooling_time_constant_s: float = 600.0
    outdoor_mean: float = 6.0
    outdoor_amplitude: float = 4.0
    comfort_temp: float = 21.0
    setback_temp: float = 16.0
    comfort_periods: tuple[tuple[float, float], ...] = ((6.0, 8.5), (16.5, 22.5))
    """Hours of the day (start, end) at comfort temperature; set-back otherwise."""
    thermostat_hysteresis: float = 0.3
    fill_pressure_bar: float = 1.5
    pressure_per_k: float = 0.008


@dataclass(frozen=True, slots=True)
class Draw:
    """One hot-water draw: start (seconds into the day) and duration in seconds."""

    start_s: float
    duration_s: float

    def active(self, second_of_day: float) -> bool:
        """Whether the tap is open at this second of the day."""
        return self.start_s <= second_of_day < self.start_s + self.duration_s


def daily_draws(seed: int, day: int, heavy: bool = False) -> tuple[Draw, ...]:
    """The hot-water draws of one day, the same for the same seed and day. A `heavy` household
    (healthy but unusual) adds baths and long showers through the day."""
    rng = random.Random(f"{seed}:{day}")
    draws = [
        Draw(rng.gauss(7 * 3600, 1200), rng.uniform(360, 600)),  # morning shower
        Draw(rng.uniform(19 * 3600, 21 * 3600), rng.uniform(300, 600)),  # evening shower
    ]
    draws += [Draw(rng.uniform(7 * 3600, 22 * 3600), rng.uniform(30, 120)) for _ in range(4)]
    if heavy:
        draws += [Draw(rng.uniform(6 * 3600, 23 * 3600), rng.uniform(600, 1200)) for _ in range(4)]
    return tuple(sorted(draws, key=lambda d: d.start_s))


@dataclass(slots=True)
class Plant:
    """The physical state: water loop, hot-water outlet, house and weather."""

    params: PlantParameters = field(default_factory=PlantParameters)
    seed: int = 0
    flow_temp: float = 20.0
    return_temp: float = 20.0
    dhw_temp: float = 20.0
    room_temp: float = 19.0
    cold_fill_bar: float = 1.5
    heat_output_kw: float = 0.0
    thermostat_calling: bool = False
    dhw_heavy: bool = False
    """A household using far more hot water than most (healthy, but unusual)."""
    _draw_cache: tuple[int, tuple[Draw, ...]] = (-1, ())

    def outdoor_temp(self, wall_s: float) -> float:
        """Outdoor temperature at a wall-clock time (seconds since the Unix epoch, local)."""
        hour = (wall_s % SECONDS_PER_DAY) / 3600
        p = self.params
        return p.outdoor_mean - p.outdoor_amplitude * math.cos(2 * math.pi * (hour - 5) / 24)

    def pressure_bar(self) -> float:
        """Circuit pressure: the cold fill pressure plus thermal expansion."""
        return max(0.0, self.cold_fill_bar + self.params.pressure_per_k * (self.flow_temp - 20))

    def room_target(self, wall_s: float) -> float:
        """The thermostat's target at a wall-clock time."""
        hour = (wall_s % SECONDS_PER_DAY) / 3600
        comfort = any(start <= hour < end for start, end in self.params.comfort_periods)
        return self.params.comfort_temp if comfort else self.params.setback_temp

    def update_thermostat(self, wall_s: float) -> bool:
        """Re-evaluate the room thermostat (with hysteresis); returns whether it calls."""
        target = self.room_target(wall_s)
        band = self.params.thermostat_hysteresis
        if self.room_temp < target - band:
            self.thermostat_calling = True
        elif self.room_temp > target + band:
            self.thermostat_calling = False
        return self.thermostat_calling

    def draw_active(self, wall_s: float) -> bool:
        """Whether a hot-water tap is open at a wall-clock time."""
        day = int(wall_s // SECONDS_PER_DAY)
        if self._draw_cache[0] != day:
            self._draw_cache = (day, daily_draws(self.seed, day, self.dhw_heavy))
        second = wall_s % SECONDS_PER_DAY
        return any(d.active(second) for d in self._draw_cache[1])

    def step(
        self, dt: float, wall_s: float, burner_kw: float, mode: HeatMode, pump_on: bool
    ) -> None:
        """Advance the physics by `dt` seconds with the burner delivering `burner_kw`."""
        p = self.params
        outdoor = self.outdoor_temp(wall_s)
        self.heat_output_kw = burner_kw
        to_radiators = 0.0
        if pump_on and mode is not HeatMode.DHW:
            to_radiators = max(0.0, p.radiator_kw_per_k * (self.flow_temp - self.room_temp))
        loss = p.boiler_loss_kw_per_k * (self.flow_temp - p.boiler_room_temp)
        if mode is HeatMode.DHW:
            # The diverter sends the primary water through the plate exchanger: the outlet
            # follows the heat the burner delivers into the draw, the primary a little above it.
            draw_kg_s = p.dhw_flow_l_min / 60
            outlet = min(p.cold_water_temp + burner_kw / (draw_kg_s * WATER_CP), MAX_DHW_TEMP)
            self.dhw_temp += (outlet - self.dhw_temp) * _blend(dt, p.dhw_time_constant_s)
            self.flow_temp += (self.dhw_temp + 10 - self.flow_temp) * _blend(dt, 20.0)
        else:
            idle_dhw = p.boiler_room_temp + 2
            self.dhw_temp += (idle_dhw - self.dhw_temp) * _blend(dt, p.dhw_cooling_time_constant_s)
            net_kw = burner_kw - to_radiators - loss
            self.flow_temp += net_kw * dt / p.water_capacity_kj_per_k
        if pump_on and mode is HeatMode.CH:
            self.return_temp = self.flow_temp - to_radiators / (p.pump_flow_kg_s * WATER_CP)
        else:
            self.return_temp += (self.flow_temp - self.return_temp) * _blend(dt, 60.0)
        house_net = to_radiators - p.house_loss_kw_per_k * (self.room_temp - outdoor)
        self.room_temp += house_net * dt / p.house_capacity_kj_per_k


def _blend(dt: float, time_constant: float) -> float:
    """Fraction of the way a first-order lag moves towards its target in `dt`."""
    return 1.0 - math.exp(-dt / time_constant)
