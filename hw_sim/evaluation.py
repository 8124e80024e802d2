"""The predictive-maintenance evaluation's fleet: statistical boilers that wear out.

``boilertwin sim evaluate`` needs 200 boilers over 90 simulated days in a few minutes; the
physical simulator (`hw_sim.boiler`, one-second steps) would take hours. So each boiler here
is a statistical model, sampled once per simulated hour, that shows on the reference
registers what the physical simulator shows (the same `hw_sim.degradation` effect functions),
with weather shared by the fleet, per-boiler variation and sensor noise:

* heating demand follows the outdoor temperature (a seasonal drift plus day-to-day weather,
  the same for every boiler, as in one region) and a comfort schedule; hot water is drawn
  morning and evening (far more in a `heavy_dhw` household);
* a running boiler's flow temperature sits near its setpoint, the return below it by a
  load-dependent difference, pressure rises with flow temperature from the cold fill;
* counters (``burner_starts``, ``failed_ignitions``) count what happened since the last hour.

A degradation's fault happens when the boiler's own state says so (a leak trips F22 once the
pressure reads below 0.6 bar, a worn electrode locks out when three ignitions in a row fail,
...), and the boiler then stays faulted: nobody acts. That moment is the ground truth a
warning's lead time is measured against.

Every hour becomes readings; every `EvaluationSettings.message_s` they are sealed as one
signed telemetry batch per boiler, the way a gateway's outbox batches them; faults also go
out as ``fault``/``lockout`` events. The twin under test is anything with the `TwinUnderTest`
shape (the real cloud ingest and detectors, in ``boilertwin sim evaluate``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hw_sim import degradation as effects
from hw_sim.degradation import DAYS_TO_FAULT, SECONDS_PER_DAY, Degradation, Mode
from protocols.cose import generate_private_key, seal
from protocols.messages import DetailValue, Event, EventKind, Quality, Reading, TelemetryBatch
from protocols.reference import BoilerStatus, FaultCode
from protocols.topics import TopicKind, topic

HOUR_S = 3600.0
F22_BELOW_BAR = 0.6
MODEL = "BT-24C"
SENSOR_FAULT_BAR = 655.35

MIX = (
    (Mode.LEAK, 0.12),
    (Mode.ELECTRODE, 0.12),
    (Mode.SCALING, 0.12),
    (Mode.FAN, 0.06),
    (Mode.SENSOR_DRIFT, 0.06),
    (Mode.HEAVY_DHW, 0.12),
    (None, 0.40),
)
"""Share of the fleet per pattern (None: healthy, nothing unusual). Documented in
docs/predictive-maintenance.md."""

FIRST_ONSET_DAY = 12.0
"""Degradations start no earlier than this (every boiler has some history first) ..."""
ONSET_MARGIN_DAYS = 5.0
"""... and no later than this many days before the end."""


@dataclass(frozen=True, slots=True)
class EvaluationSettings:
    """What the evaluation simulates."""

    boilers: int = 200
    days: int = 90
    seed: int = 0
    start_s: float = 1_767_225_600.0
    """Simulated wall-clock start (2026-01-01 00:00 UTC: winter, when boilers work hardest)."""
    message_s: float = 6 * HOUR_S
    """Simulated seconds of readings per signed batch."""

    def __post_init__(self) -> None:
        if not 1 <= self.boilers <= 100_000:
            raise ValueError("boilers must be 1..100000")
        if not 30 <= self.days <= 3650:
            raise ValueError("days must be 30..3650 (detectors need a few weeks of history)")


@dataclass(frozen=True, slots=True)
class BoilerPlan:
    """One boiler of the evaluation fleet, as drawn from the seed."""

    device_id: str
    seed: int
    pattern: Degradation | None
    fill_bar: float
    flame_factor: float
    delta_k: float
    fan_factor: float
    setpoint: float

    @property
    def mode(self) -> Mode | None:
        return self.pattern.mode if self.pattern is not None else None


def plan_fleet(settings: EvaluationSettings) -> list[BoilerPlan]:
    """The fleet: patterns in `MIX` proportions, onsets and rates drawn from documented
    ranges (`FIRST_ONSET_DAY`, `ONSET_MARGIN_DAYS`, `hw_sim.degradation.DAYS_TO_FAULT`)."""
    rng = random.Random(f"plan:{settings.seed}")
    modes: list[Mode | None] = []
    for mode, share in MIX:
        modes += [mode] * round(share * settings.boilers)
    modes = (modes + [None] * settings.boilers)[: settings.boilers]
    rng.shuffle(modes)
    plans = []
    for i, mode in enumerate(modes):
        pattern = None
        if mode is not None:
            latest = max(FIRST_ONSET_DAY, settings.days - ONSET_MARGIN_DAYS)
            onset = rng.uniform(FIRST_ONSET_DAY, latest) * SECONDS_PER_DAY
            rate = 1.0
            if not mode.healthy:
                low, high = DAYS_TO_FAULT[mode]
                rate = 1.0 / rng.uniform(low, high)
            pattern = Degradation(mode, onset, rate)
        plans.append(
            BoilerPlan(
                device_id=f"eval-{settings.seed}-{i:05d}",
                seed=rng.randrange(2**31),
                pattern=pattern,
                fill_bar=rng.uniform(1.2, 1.8),
                flame_factor=rng.gauss(1.0, 0.06),
                delta_k=rng.uniform(9.0, 15.0),
                fan_factor=rng.gauss(1.0, 0.015),
                setpoint=rng.choice((55.0, 60.0, 65.0, 70.0)),
            )
        )
    return plans


class Weather:
    """Daily mean outdoor temperature, the same for the whole fleet (one region)."""

    def __init__(self, seed: int, days: int) -> None:
        rng = random.Random(f"weather:{seed}")
        self.daily: list[float] = []
        anomaly = 0.0
        for day in range(days + 2):
            anomaly = 0.8 * anomaly + rng.gauss(0.0, 1.6)
            seasonal = 4.0 + 6.0 * day / max(days, 1)  # winter into spring
            self.daily.append(seasonal + anomaly)

    def at(self, sim_s: float) -> float:
        day = min(int(sim_s // SECONDS_PER_DAY), len(self.daily) - 1)
        hour = (sim_s % SECONDS_PER_DAY) / HOUR_S
        return self.daily[day] - 3.5 * math.cos(2 * math.pi * (hour - 5) / 24)


@dataclass(slots=True)
class StatBoiler:
    """One statistical boiler: `sample` gives the registers for an hour of simulated time."""

    plan: BoilerPlan
    rng: random.Random = field(init=False)
    burner_starts: int = field(init=False)
    failed_ignitions: int = 0
    fault: FaultCode = FaultCode.NONE
    fault_s: float | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.plan.seed)
        self.burner_starts = 60_000 + self.rng.randrange(20_000)

    def wear(self, mode: Mode, sim_s: float) -> float:
        pattern = self.plan.pattern
        return pattern.progress(sim_s) if pattern is not None and pattern.mode is mode else 0.0

    def sample(self, sim_s: float, outdoor: float) -> dict[str, float | int | bool]:
        """The registers at `sim_s`, after an hour of operation (counters count it)."""
        if self.fault is not FaultCode.NONE:
            return self._faulted(outdoor)
        rng, plan = self.rng, self.plan
        hour = (sim_s % SECONDS_PER_DAY) / HOUR_S
        comfort = 6 <= hour < 9 or 16 <= hour < 23
        load = max(0.05, min(1.0, (19.0 - outdoor) / 20.0)) * (1.0 if comfort else 0.45)
        heavy = plan.mode is Mode.HEAVY_DHW
        draw_chance = 0.35 if hour in (7, 20) or (6 <= hour < 23 and heavy and hour % 3 == 0) else 0
        drawing = rng.random() < (draw_chance * (2.2 if heavy else 1.0))
        running = drawing or rng.random() < 0.25 + 0.6 * load
        scaled = effects.scaling_factor(self.wear(Mode.SCALING, sim_s))
        starts = _poisson(rng, (1.5 + 3.0 * load + (3.0 if drawing else 0.0)) * (1 + 0.8 * scaled))
        chance = effects.ignition_failure_chance(self.wear(Mode.ELECTRODE, sim_s))
        failed = sum(1 for _ in range(starts * 2) if rng.random() < chance)
        self.burner_starts += starts
        self.failed_ignitions += failed
        if running and drawing:
            flow = rng.uniform(55.0, 68.0)
            ret = flow - rng.uniform(2.0, 6.0)
            modulation = rng.uniform(60.0, 100.0)
        elif running:
            overshoot = effects.SCALING_OVERSHOOT_K * scaled * rng.uniform(0.4, 1.0)
            flow = plan.setpoint + rng.gauss(0.0, 2.0) + overshoot
            delta = plan.delta_k * (0.75 + 0.5 * load) + effects.SCALING_EXTRA_DELTA_K * scaled
            ret = flow - delta + rng.gauss(0.0, 0.8)
            modulation = max(20.0, min(100.0, 25.0 + 70.0 * load + rng.gauss(0.0, 8.0)))
        else:
            flow = 22.0 + 25.0 * load + rng.gauss(0.0, 2.0)
            ret = flow - rng.uniform(0.0, 2.0)
            modulation = 0.0
        leak = self.wear(Mode.LEAK, sim_s)
        true_bar = (
            plan.fill_bar
            - effects.pressure_loss_bar(leak, plan.fill_bar, F22_BELOW_BAR)
            + 0.008 * (flow - 20.0)
            + rng.gauss(0.0, 0.008)
        )
        drift = self.wear(Mode.SENSOR_DRIFT, sim_s)
        read_bar = true_bar + effects.sensor_offset_bar(drift)
        if drift > 0:
            read_bar += rng.gauss(0.0, effects.sensor_noise_bar(drift))
        flame_base = effects.flame_current_ua(self.wear(Mode.ELECTRODE, sim_s)) * plan.flame_factor
        fan_ratio = effects.fan_speed_factor(self.wear(Mode.FAN, sim_s)) * plan.fan_factor
        values: dict[str, float | int | bool] = {
            "status": int(BoilerStatus.RUNNING if running else BoilerStatus.STANDBY),
            "fault_code": 0,
            "flow_temp": round(flow, 1),
            "return_temp": round(ret, 1),
            "outdoor_temp": round(outdoor, 1),
            "ch_pressure": round(max(0.0, read_bar), 2),
            "modulation": round(modulation),
            "flame_current": round(max(0.0, flame_base + rng.gauss(0.0, 0.15)), 1)
            if running
            else 0.0,
            "fan_speed": round((1500 + 35 * modulation) * fan_ratio + rng.gauss(0.0, 25.0))
            if running
            else 0,
            "burner_starts": self.burner_starts,
            "failed_ignitions": self.failed_ignitions,
            "dhw_active": running and drawing,
        }
        self._check_fault(sim_s, true_bar, chance, starts, flame_base, scaled, running)
        return values if self.fault is FaultCode.NONE else self._faulted(outdoor)

    def _check_fault(
        self,
        sim_s: float,
        true_bar: float,
        chance: float,
        starts: int,
        flame_base: float,
        scaled: float,
        running: bool,
    ) -> None:
        fault = FaultCode.NONE
        if self.wear(Mode.SENSOR_DRIFT, sim_s) >= 1.0:
            fault = FaultCode.F75
        elif true_bar < F22_BELOW_BAR:
            fault = FaultCode.F22
        elif starts and self.rng.random() < 1 - (1 - chance**3) ** starts:
            fault = FaultCode.F28
        elif running and flame_base < 1.0:
            fault = FaultCode.F29
        elif running and scaled >= 1.0:
            fault = FaultCode.F20
        elif starts and self.wear(Mode.FAN, sim_s) >= 1.0:
            fault = FaultCode.F32
        if fault is not FaultCode.NONE:
            self.fault, self.fault_s = fault, sim_s

    def _faulted(self, outdoor: float) -> dict[str, float | int | bool]:
        status = BoilerStatus.LOCKOUT if self.fault.is_lockout else BoilerStatus.BLOCKING_ERROR
        pressure = SENSOR_FAULT_BAR if self.fault is FaultCode.F75 else None
        values: dict[str, float | int | bool] = {
            "status": int(status),
            "fault_code": int(self.fault),
            "outdoor_temp": round(outdoor, 1),
            "modulation": 0,
            "flame_current": 0.0,
            "fan_speed": 0,
            "burner_starts": self.burner_starts,
            "failed_ignitions": self.failed_ignitions,
            "dhw_active": False,
        }
        if pressure is not None:
            values["ch_pressure"] = pressure
        return values


def _poisson(rng: random.Random, mean: float) -> int:
    threshold, count, product = math.exp(-mean), 0, rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


@dataclass(frozen=True, slots=True)
class Uplinks:
    """What the fleet sent in one step: (topic, sealed envelope) pairs, and the time."""

    now_ms: int
    messages: tuple[tuple[str, bytes], ...]


@dataclass(slots=True)
class EvaluationFleet:
    """The whole fleet, stepping through simulated time and sealing what it sends."""

    settings: EvaluationSettings
    plans: list[BoilerPlan] = field(init=False)
    boilers: dict[str, StatBoiler] = field(init=False)
    keys: dict[str, Ed25519PrivateKey] = field(init=False)
    seq: dict[str, int] = field(init=False)
    weather: Weather = field(init=False)
    sent: int = 0

    def __post_init__(self) -> None:
        self.plans = plan_fleet(self.settings)
        self.boilers = {p.device_id: StatBoiler(p) for p in self.plans}
        self.keys = {p.device_id: generate_private_key() for p in self.plans}
        self.seq = dict.fromkeys(self.boilers, 0)
        self.weather = Weather(self.settings.seed, self.settings.days)

    def run(self) -> Iterator[Uplinks]:
        """One `Uplinks` per `message_s` of simulated time, to the end."""
        s = self.settings
        step, end = s.message_s, s.days * SECONDS_PER_DAY
        sim_s = 0.0
        while sim_s < end:
            batch_end = min(end, sim_s + step)
            hours = []
            t = sim_s + HOUR_S
            while t <= batch_end + 1e-6:
                hours.append(t)
                t += HOUR_S
            messages: list[tuple[str, bytes]] = []
            for device_id, boiler in self.boilers.items():
                messages += self._messages(device_id, boiler, hours)
            sim_s = batch_end
            self.sent += len(messages)
            yield Uplinks(self._ms(sim_s), tuple(messages))

    def _ms(self, sim_s: float) -> int:
        return int((self.settings.start_s + sim_s) * 1000)

    def _messages(
        self, device_id: str, boiler: StatBoiler, hours: Sequence[float]
    ) -> list[tuple[str, bytes]]:
        readings: list[Reading] = []
        out: list[tuple[str, bytes]] = []
        for t in hours:
            was = boiler.fault
            values = boiler.sample(t, self.weather.at(t))
            ts = self._ms(t)
            readings += [Reading(k, ts, v, Quality.GOOD) for k, v in values.items()]
            if boiler.fault is not was:
                out.append(self._event(device_id, boiler, ts))
        batch = TelemetryBatch(
            dev=device_id,
            epoch=1,
            seq=self._next(device_id),
            ts=self._ms(hours[-1]),
            sync=True,
            readings=tuple(readings),
        )
        out.insert(0, (topic(device_id, TopicKind.DATA), seal(batch, self.keys[device_id])))
        return out

    def _event(self, device_id: str, boiler: StatBoiler, ts: int) -> tuple[str, bytes]:
        fault = boiler.fault
        kind = EventKind.LOCKOUT if fault.is_lockout else EventKind.FAULT
        detail: dict[str, DetailValue] = {
            "fault": f"F{int(fault)}",
            "text": fault.text,
            "fault_code": int(fault),
        }
        event = Event(
            dev=device_id,
            epoch=1,
            seq=self._next(device_id),
            ts=ts,
            sync=True,
            kind=kind,
            detail=detail,
        )
        return topic(device_id, TopicKind.EVENT), seal(event, self.keys[device_id])

    def _next(self, device_id: str) -> int:
        self.seq[device_id] += 1
        return self.seq[device_id]
