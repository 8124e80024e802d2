"""Slow degradations for `sim fleet` gateways: what a wearing boiler's registers show at each
report, and the fault it ends in.

A share of the fleet's boilers (``--degrade-share``) gets one degradation of `FLEET_MODES`
(or the one ``--degrade-mode`` names), its onset drawn in the first third of the run and its
days to fault from `hw_sim.degradation.DAYS_TO_FAULT`, so the cloud's predictor sees leaks,
worn electrodes, scale, worn fans and drifting sensors arrive through the real broker and
ingest. The signals are the effect functions the physical simulator uses. Run the fleet with
a time scale and the cloud with ``predict_day_s = 86400 / time_scale`` so both agree on
how long a day is.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hw_sim import degradation as effects
from hw_sim.degradation import DAYS_TO_FAULT, Degradation, Mode
from protocols.reference import FaultCode

FAULT_OF_MODE = {
    Mode.LEAK: FaultCode.F22,
    Mode.ELECTRODE: FaultCode.F28,
    Mode.SCALING: FaultCode.F20,
    Mode.FAN: FaultCode.F32,
    Mode.SENSOR_DRIFT: FaultCode.F75,
}
"""The fault each fleet degradation ends in."""
FLEET_MODES = tuple(FAULT_OF_MODE)
FILL_BAR = 1.4
"""Cold fill pressure of the fleet's boilers (their healthy reading, as `Gateway.report`)."""
TRIP_BAR = 0.6
"""F22 below this."""
PRESSURE_PER_K = 0.008
"""Thermal expansion: bar per kelvin of flow temperature."""
DELTA_K = 15.0
"""The fleet's healthy flow-return difference while heating."""


def draw(rng: random.Random, duration_s: float, mode: Mode | None = None) -> Degradation:
    """A degradation for one boiler: `mode` (or one of `FLEET_MODES`), onset in the first
    third of `duration_s`, days to fault from the documented range."""
    chosen = mode or rng.choice(FLEET_MODES)
    low, high = DAYS_TO_FAULT[chosen]
    return Degradation(chosen, rng.uniform(0.0, duration_s / 3), 1.0 / rng.uniform(low, high))


@dataclass
class Wear:
    """One fleet boiler's degradation and the counters it moves."""

    degradation: Degradation
    rng: random.Random
    burner_starts: int = 60_000
    failed_ignitions: int = 0

    @property
    def fault(self) -> FaultCode:
        """The fault this wear ends in."""
        return FAULT_OF_MODE[self.degradation.mode]

    def due(self, t: float) -> bool:
        """Whether the fault has arrived at simulated second `t`."""
        return self.degradation.progress(t) >= 1.0

    def readings(self, t: float, running: bool, flow: float) -> dict[str, float]:
        """The registers the wear moves at simulated second `t`, as the gateway reports
        them (the others stay as a healthy boiler's)."""
        progress, rng = self.degradation.progress(t), self.rng
        mode = self.degradation.mode
        out: dict[str, float] = {}
        if mode in (Mode.LEAK, Mode.SENSOR_DRIFT):
            leak = progress if mode is Mode.LEAK else 0.0
            bar = (
                FILL_BAR
                - effects.pressure_loss_bar(leak, FILL_BAR, TRIP_BAR)
                + PRESSURE_PER_K * (flow - 20.0)
                + rng.gauss(0.0, 0.008)
            )
            if mode is Mode.SENSOR_DRIFT:
                bar += effects.sensor_offset_bar(progress)
                bar += rng.gauss(0.0, effects.sensor_noise_bar(progress))
            out["ch_pressure"] = round(max(0.0, bar), 2)
        if not running:
            return out
        if mode is Mode.ELECTRODE:
            self.burner_starts += 1
            if rng.random() < effects.ignition_failure_chance(progress):
                self.failed_ignitions += 1
            flame = effects.flame_current_ua(progress) + rng.gauss(0.0, 0.15)
            out |= {
                "flame_current": round(max(0.0, flame), 1),
                "burner_starts": self.burner_starts,
                "failed_ignitions": self.failed_ignitions,
            }
        elif mode is Mode.SCALING:
            extra = effects.SCALING_EXTRA_DELTA_K * effects.scaling_factor(progress)
            out["return_temp"] = round(flow - DELTA_K - extra + rng.gauss(0.0, 0.8), 1)
        elif mode is Mode.FAN:
            modulation = max(20.0, min(100.0, 50.0 + rng.gauss(0.0, 5.0)))
            target = 1500.0 + 35.0 * modulation
            fan = target * effects.fan_speed_factor(progress) + rng.gauss(0.0, 25.0)
            out |= {"modulation": round(modulation), "fan_speed": round(fan)}
        return out
