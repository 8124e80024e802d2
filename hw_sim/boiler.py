"""The simulated boiler controller: burner sequence, faults with causes, lockout and reset.

Invariants (the tests hold the model to them):

* The burner sequence is pre-purge -> ignition (safety time ``ignition_safety_s``) ->
  running -> post-purge. A failed ignition is followed by an inter-purge and a retry; the
  ``max_ignition_attempts``-th failure in a row locks the boiler out with F28.
* Faults have causes. A fault is *injected* by setting its cause; the cause stays until
  `repair`. F22 (low pressure, from a leak) and F75 (pressure sensor) block the burner and
  clear by themselves once the cause is gone; F28 (no gas / ignition) and F29 (flame loss)
  lock the boiler out and only a reset clears the lockout. Resetting a lockout whose cause is
  still there ends, after the retries, in the same lockout again.
* A lockout survives a power cycle (as EN 298 requires of burner controls); counters do too.
* At most ``max_resets`` resets are accepted in any ``reset_window_s`` (the remote-reset limit
  of EN 14459); further requests are refused and counted.
* The model never reads a clock: `advance` moves simulated time by the seconds it is given,
  so a simulated day can run in milliseconds.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hw_sim import degradation as effects
from hw_sim.degradation import Degradation, Mode
from hw_sim.errors import SimulatorError
from hw_sim.physics import HeatMode, Plant, PlantParameters
from protocols.reference import PRESSURE_SENSOR_FAULT, BoilerStatus, FaultCode


class Cause(StrEnum):
    """Physical causes behind the fault codes."""

    WATER_LEAK = "water_leak"  # pressure falls -> F22
    GAS_SUPPLY = "gas_supply"  # no gas reaches the burner -> F28
    FLAME_SENSE = "flame_sense"  # weak flame signal, flame lost while running -> F29
    PRESSURE_SENSOR = "pressure_sensor"  # sensor reads nothing -> F75
    SCALING = "scaling"  # scaled heat exchanger overheats -> F20
    FAN_WEAR = "fan_wear"  # fan cannot reach purge speed -> F32


CAUSE_OF_FAULT = {
    FaultCode.F22: Cause.WATER_LEAK,
    FaultCode.F28: Cause.GAS_SUPPLY,
    FaultCode.F29: Cause.FLAME_SENSE,
    FaultCode.F75: Cause.PRESSURE_SENSOR,
    FaultCode.F20: Cause.SCALING,
    FaultCode.F32: Cause.FAN_WEAR,
}

CAUSE_OF_MODE = {
    Mode.LEAK: Cause.WATER_LEAK,
    Mode.ELECTRODE: Cause.FLAME_SENSE,
    Mode.SCALING: Cause.SCALING,
    Mode.FAN: Cause.FAN_WEAR,
    Mode.SENSOR_DRIFT: Cause.PRESSURE_SENSOR,
}
"""The cause a degradation becomes when it reaches its fault (and that `repair` removes)."""


class Phase(StrEnum):
    """Internal sequencer phase (finer than the status register)."""

    IDLE = "idle"
    PRE_PURGE = "pre_purge"
    IGNITION = "ignition"
    INTER_PURGE = "inter_purge"
    RUNNING = "running"
    POST_PURGE = "post_purge"
    ANTI_CYCLE = "anti_cycle"
    BLOCKED = "blocked"
    LOCKOUT = "lockout"


class ResetOutcome(StrEnum):
    """What the controller did with a reset request."""

    ACCEPTED = "accepted"
    NOT_IN_LOCKOUT = "not_in_lockout"
    RATE_LIMITED = "rate_limited"


class DemandOverride(StrEnum):
    """Test override of a heat demand: follow the thermostat/draw schedule, or force it."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """Sequencer timings and limits (simulated seconds)."""

    pre_purge_s: float = 5.0
    ignition_time_s: float = 2.0
    ignition_safety_s: float = 5.0
    inter_purge_s: float = 5.0
    max_ignition_attempts: int = 3
    post_purge_s: float = 10.0
    anti_cycle_s: float = 120.0
    flame_loss_after_s: float = 20.0
    ch_switch_off_above_k: float = 5.0
    ch_switch_on_below_k: float = 5.0
    f22_below_bar: float = 0.6
    f22_clears_at_bar: float = 0.8
    leak_rate_bar_s: float = 0.02
    leak_floor_bar: float = 0.3
    max_resets: int = 5
    reset_window_s: float = 900.0


@dataclass(frozen=True, slots=True)
class Identity:
    """What the controller says it is."""

    serial_number: str = "BT24C-000001"
    model: str = "BT-24C"
    firmware: str = "2.3.1"


_SETTING_LIMITS = {
    "ch_setpoint": (30.0, 80.0),
    "dhw_setpoint": (35.0, 65.0),
    "ch_enable": (0, 1),
    "dhw_enable": (0, 1),
}


class SettingError(SimulatorError, ValueError):
    """A setting was written with a value the controller does not accept."""

    def __init__(self, name: str, value: object, reason: str) -> None:
        super().__init__(f"{name}={value!r}: {reason}")
        self.name = name
        self.value = value
        self.reason = reason


@dataclass(slots=True)
class Boiler:
    """The whole simulated appliance: controller state on top of the `Plant` physics."""

    seed: int = 0
    start_wall_s: float = 0.0
    """Wall-clock time (seconds since the Unix epoch, local) at simulated second zero."""
    settings: ControllerSettings = field(default_factory=ControllerSettings)
    identity: Identity = field(default_factory=Identity)
    plant: Plant = field(init=False)
    sim_s: float = 0.0
    phase: Phase = Phase.IDLE
    mode: HeatMode = HeatMode.NONE
    fault: FaultCode = FaultCode.NONE
    causes: set[Cause] = field(default_factory=set)
    powered: bool = True
    ch_setpoint: float = 60.0
    dhw_setpoint: float = 50.0
    ch_enable: int = 1
    dhw_enable: int = 1
    ch_override: DemandOverride = DemandOverride.AUTO
    dhw_override: DemandOverride = DemandOverride.AUTO
    flame_on: bool = False
    modulation: float = 0.0
    attempt: int = 0
    burner_starts: int = 0
    burner_seconds: float = 0.0
    lockout_count: int = 0
    reset_count: int = 0
    resets_refused: int = 0
    failed_ignitions: int = 0
    degradations: dict[Mode, Degradation] = field(default_factory=dict)
    _phase_s: float = 0.0
    _miss: bool | None = None
    _reset_times: deque[float] = field(default_factory=deque)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.plant = Plant(PlantParameters(), seed=self.seed)
        # A boiler that has been in service a while: counters past 16 bits exercise u32 decoding.
        self.burner_starts = 70_000 + self._rng.randrange(10_000)
        self.burner_seconds = 3600.0 * (4_000 + self._rng.randrange(2_000))

    # ----- time ---------------------------------------------------------------------------

    @property
    def wall_s(self) -> float:
        """Simulated wall-clock time (seconds since the Unix epoch)."""
        return self.start_wall_s + self.sim_s

    def advance(self, seconds: float, *, max_step: float = 1.0) -> None:
        """Run the simulation forward by `seconds` of simulated time."""
        remaining = seconds
        while remaining > 1e-9:
            dt = min(max_step, remaining)
            self._step(dt)
            remaining -= dt

    # ----- commands from outside ------------------------------------------------------------

    def inject(self, code: FaultCode) -> Cause:
        """Create the physical cause of `code`; the fault follows as the boiler runs."""
        cause = CAUSE_OF_FAULT[code]
        self.causes.add(cause)
        return cause

    def degrade(self, degradation: Degradation) -> None:
        """Start a slow degradation (replacing one of the same mode); `onset_s` counts from
        now when it is not in the future already."""
        if degradation.onset_s < self.sim_s:
            degradation = Degradation(degradation.mode, self.sim_s, degradation.rate)
        self.degradations[degradation.mode] = degradation
        if degradation.mode is Mode.HEAVY_DHW:
            self.plant.dhw_heavy = True

    def wear(self, mode: Mode) -> float:
        """How far `mode` has progressed (0 = not degrading, 1 = its fault is due)."""
        found = self.degradations.get(mode)
        return found.progress(self.sim_s) if found is not None else 0.0

    def repair(self, cause: Cause | None = None) -> None:
        """Remove one cause (or all): refill the circuit, restore gas, fix sensor and flame."""
        removed = set(self.causes) if cause is None else {cause} & self.causes
        self.causes -= removed
        for mode in [m for m in self.degradations if m in CAUSE_OF_MODE]:
            if cause is None or CAUSE_OF_MODE[mode] in removed or CAUSE_OF_MODE[mode] is cause:
                del self.degradations[mode]
        if cause is None or cause is Cause.WATER_LEAK:
            self.plant.cold_fill_bar = self.plant.params.fill_pressure_bar

    def request_reset(self) -> ResetOutcome:
        """A lockout reset as written to the reset register."""
        if self.phase is not Phase.LOCKOUT:
            return ResetOutcome.NOT_IN_LOCKOUT
        window = self.settings.reset_window_s
        while self._reset_times and self._reset_times[0] <= self.sim_s - window:
            self._reset_times.popleft()
        if len(self._reset_times) >= self.settings.max_resets:
            self.resets_refused += 1
            return ResetOutcome.RATE_LIMITED
        self._reset_times.append(self.sim_s)
        self.reset_count += 1
        self.fault = FaultCode.NONE
        self.attempt = 0
        self._enter(Phase.IDLE)
        return ResetOutcome.ACCEPTED

    def write_setting(self, name: str, value: float) -> None:
        """Change a setpoint or enable flag, validating it like the controller would."""
        if name not in _SETTING_LIMITS:
            raise SettingError(name, value, "not a writable setting")
        low, high = _SETTING_LIMITS[name]
        if not low <= value <= high:
            raise SettingError(name, value, f"outside {low}..{high}")
        if name in ("ch_enable", "dhw_enable") and value != int(value):
            raise SettingError(name, value, "must be 0 or 1")
        if name in ("ch_enable", "dhw_enable"):
            setattr(self, name, int(value))
        else:
            setattr(self, name, float(value))

    def power_off(self) -> None:
        """Cut the power: the flame goes out, the sequence stops (counters and lockout stay)."""
        self.powered = False
        self._burner_off()
        self.attempt = 0
        self._enter(Phase.LOCKOUT if self.phase is Phase.LOCKOUT else Phase.IDLE)

    def power_on(self) -> None:
        """Restore power: the controller boots into standby, or into its stored lockout."""
        self.powered = True

    # ----- what the registers show -----------------------------------------------------------

    @property
    def status(self) -> BoilerStatus:
        """The status register's value."""
        phase = self.phase
        if phase is Phase.LOCKOUT:
            return BoilerStatus.LOCKOUT
        if phase is Phase.BLOCKED:
            return BoilerStatus.BLOCKING_ERROR
        if phase in (Phase.IGNITION, Phase.INTER_PURGE):
            return BoilerStatus.IGNITION
        if phase is Phase.RUNNING:
            return BoilerStatus.RUNNING
        if phase is Phase.POST_PURGE:
            return BoilerStatus.POST_PURGE
        if phase in (Phase.PRE_PURGE, Phase.ANTI_CYCLE):
            return BoilerStatus.DHW_DEMAND if self.mode is HeatMode.DHW else BoilerStatus.CH_DEMAND
        return BoilerStatus.STANDBY

    @property
    def pressure_sensor_ok(self) -> bool:
        """Whether the pressure sensor gives a reading."""
        return Cause.PRESSURE_SENSOR not in self.causes

    @property
    def pump_on(self) -> bool:
        """The circulation pump runs for any heat demand and during post-purge overrun."""
        return self.powered and (
            self.phase in (Phase.RUNNING, Phase.POST_PURGE, Phase.ANTI_CYCLE)
            or (self.phase in (Phase.PRE_PURGE, Phase.IGNITION) and self.mode is HeatMode.CH)
        )

    @property
    def fan_speed(self) -> int:
        """Combustion fan speed in rpm."""
        if not self.powered:
            return 0
        factor = effects.fan_speed_factor(self.wear(Mode.FAN))
        if self.phase in (Phase.PRE_PURGE, Phase.INTER_PURGE, Phase.POST_PURGE):
            return int(3600 * factor)
        if self.phase is Phase.IGNITION:
            return int(2400 * factor)
        if self.phase is Phase.RUNNING:
            return int((1500 + 3500 * self.modulation) * factor)
        return 0

    @property
    def flame_current_ua(self) -> float:
        """Ionisation current: about 4.5 uA with a good flame, weak with a dirty flame rod."""
        if not self.flame_on:
            return 0.0
        return round(self._flame_base_ua() + self._rng.uniform(-0.2, 0.2), 1)

    def _flame_base_ua(self) -> float:
        if Cause.FLAME_SENSE in self.causes:
            return 0.9
        return effects.flame_current_ua(self.wear(Mode.ELECTRODE))

    def _pressure_reading(self) -> float | None:
        """What the pressure sensor reports (None: sensor fault), drift and noise included."""
        if not self.pressure_sensor_ok:
            return None
        reading = self.plant.pressure_bar()
        drift = self.wear(Mode.SENSOR_DRIFT)
        if drift > 0:
            noise = effects.sensor_noise_bar(drift)
            reading += effects.sensor_offset_bar(drift) + self._rng.gauss(0.0, noise)
        return round(max(0.0, reading), 2)

    def _return_reading(self) -> float:
        """Return temperature as measured: a scaled exchanger widens the flow-return gap."""
        extra = 0.0
        if self.pump_on and self.mode is HeatMode.CH:
            extra = effects.SCALING_EXTRA_DELTA_K * effects.scaling_factor(self.wear(Mode.SCALING))
        return round(self.plant.return_temp - extra, 1)

    def register_values(self) -> dict[str, Any]:
        """Every point of the reference register map, in engineering units."""
        plant = self.plant
        pressure = self._pressure_reading()
        return {
            "flame_on": self.flame_on,
            "pump_on": self.pump_on,
            "fan_on": self.fan_speed > 0,
            "gas_valve_open": self.phase in (Phase.IGNITION, Phase.RUNNING),
            "ch_active": self.mode is HeatMode.CH,
            "dhw_active": self.mode is HeatMode.DHW,
            "lockout": self.phase is Phase.LOCKOUT,
            "blocking_error": self.phase is Phase.BLOCKED,
            "status": int(self.status),
            "fault_code": int(self.fault),
            "flow_temp": round(plant.flow_temp, 1),
            "return_temp": self._return_reading(),
            "dhw_temp": round(plant.dhw_temp, 1),
            "outdoor_temp": round(plant.outdoor_temp(self.wall_s), 1),
            "ch_pressure": pressure if pressure is not None else PRESSURE_SENSOR_FAULT * 0.01,
            "modulation": round(self.modulation * 100) if self.flame_on else 0,
            "flame_current": self.flame_current_ua,
            "fan_speed": self.fan_speed,
            "burner_starts": self.burner_starts,
            "operating_hours": int(self.burner_seconds // 3600),
            "heat_output": round(plant.heat_output_kw, 2),
            "lockout_count": self.lockout_count,
            "reset_count": self.reset_count,
            "failed_ignitions": self.failed_ignitions,
            "serial_number": self.identity.serial_number,
            "model": self.identity.model,
            "firmware": self.identity.firmware,
            "map_version": 1,
            "ch_setpoint": self.ch_setpoint,
            "dhw_setpoint": self.dhw_setpoint,
            "ch_enable": self.ch_enable,
            "dhw_enable": self.dhw_enable,
            "reset_request": 0,
        }

    def snapshot(self) -> dict[str, Any]:
        """The true internal state, JSON-friendly (for the control endpoint and tests)."""
        plant = self.plant
        return {
            "sim_s": round(self.sim_s, 3),
            "wall_s": round(self.wall_s, 3),
            "powered": self.powered,
            "status": self.status.label,
            "phase": self.phase.value,
            "mode": self.mode.value,
            "fault_code": f"F{int(self.fault)}" if self.fault else None,
            "causes": sorted(c.value for c in self.causes),
            "ignition_attempt": self.attempt,
            "room_temp": round(plant.room_temp, 2),
            "room_target": plant.room_target(self.wall_s),
            "thermostat_calling": plant.thermostat_calling,
            "draw_active": plant.draw_active(self.wall_s),
            "true_pressure_bar": round(plant.pressure_bar(), 3),
            "ch_override": self.ch_override.value,
            "dhw_override": self.dhw_override.value,
            "resets_refused": self.resets_refused,
            "degradations": {m.value: d.snapshot(self.sim_s) for m, d in self.degradations.items()},
            "registers": self.register_values(),
        }

    # ----- the sequencer -------------------------------------------------------------------

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        self._phase_s = 0.0
        self._miss = None

    def _burner_off(self) -> None:
        self.flame_on = False
        self.modulation = 0.0

    def _lock_out(self, code: FaultCode) -> None:
        self._burner_off()
        self.fault = code
        self.attempt = 0
        self.lockout_count += 1
        self._enter(Phase.LOCKOUT)

    def _wanted_mode(self) -> HeatMode:
        plant, wall = self.plant, self.wall_s
        calling = plant.update_thermostat(wall)
        drawing = plant.draw_active(wall)
        if self.dhw_override is not DemandOverride.AUTO:
            drawing = self.dhw_override is DemandOverride.ON
        if self.ch_override is not DemandOverride.AUTO:
            calling = self.ch_override is DemandOverride.ON
        if drawing and self.dhw_enable:
            return HeatMode.DHW  # hot water has priority
        if calling and self.ch_enable:
            return HeatMode.CH
        return HeatMode.NONE

    def _blocking_fault(self) -> FaultCode:
        if not self.pressure_sensor_ok:
            return FaultCode.F75
        pressure = self.plant.pressure_bar()
        limit = self.settings.f22_below_bar
        if self.phase is Phase.BLOCKED and self.fault is FaultCode.F22:
            limit = self.settings.f22_clears_at_bar  # hysteresis: refill clearly above the trip
        return FaultCode.F22 if pressure < limit else FaultCode.NONE

    def _step(self, dt: float) -> None:
        s = self.settings
        self.sim_s += dt
        self._phase_s += dt
        plant = self.plant
        if Cause.WATER_LEAK in self.causes:
            plant.cold_fill_bar = max(
                s.leak_floor_bar, plant.cold_fill_bar - s.leak_rate_bar_s * dt
            )
        if self.degradations:
            self._degrade()
        if self.powered:
            self._sequence(dt)
        burner_kw = self._burner_kw() if self.flame_on else 0.0
        if self.flame_on:
            self.burner_seconds += dt
        self.plant.step(dt, self.wall_s, burner_kw, self.mode, self.pump_on)

    def _sequence(self, dt: float) -> None:
        s = self.settings
        if self.phase is Phase.LOCKOUT:
            self.mode = HeatMode.NONE
            return
        blocking = self._blocking_fault()
        if blocking is not FaultCode.NONE:
            if self.phase is not Phase.BLOCKED or self.fault is not blocking:
                self._burner_off()
                self.fault = blocking
                self.attempt = 0
                self._enter(Phase.BLOCKED)
            self.mode = HeatMode.NONE
            return
        if self.phase is Phase.BLOCKED:
            self.fault = FaultCode.NONE
            self._enter(Phase.IDLE)
        wanted = self._wanted_mode()
        phase, elapsed = self.phase, self._phase_s
        if phase is Phase.IDLE:
            if wanted is not HeatMode.NONE:
                self.mode = wanted
                self._enter(Phase.PRE_PURGE)
            else:
                self.mode = HeatMode.NONE
        elif phase is Phase.PRE_PURGE:
            if wanted is HeatMode.NONE:
                self.mode = HeatMode.NONE
                self._enter(Phase.IDLE)
            else:
                self.mode = wanted
                if elapsed >= s.pre_purge_s and self.wear(Mode.FAN) >= 1.0:
                    self._lock_out(FaultCode.F32)  # purge speed never reached
                elif elapsed >= s.pre_purge_s:
                    self.attempt = 1
                    self._enter(Phase.IGNITION)
        elif phase is Phase.IGNITION:
            self._ignite(elapsed)
        elif phase is Phase.INTER_PURGE:
            if elapsed >= s.inter_purge_s:
                self.attempt += 1
                self._enter(Phase.IGNITION)
        elif phase is Phase.RUNNING:
            self._run(wanted, elapsed)
        elif phase is Phase.POST_PURGE:
            if elapsed >= s.post_purge_s:
                self._enter(Phase.ANTI_CYCLE if wanted is HeatMode.CH else Phase.IDLE)
                self.mode = wanted if wanted is HeatMode.CH else HeatMode.NONE
        elif phase is Phase.ANTI_CYCLE:
            self.mode = wanted
            cooled = self.plant.flow_temp < self.ch_setpoint - s.ch_switch_on_below_k
            if wanted is HeatMode.NONE:
                self._enter(Phase.IDLE)
            elif wanted is HeatMode.DHW or (elapsed >= s.anti_cycle_s and cooled):
                self._enter(Phase.PRE_PURGE)

    def _ignite(self, elapsed: float) -> None:
        s = self.settings
        if self._miss is None and elapsed >= s.ignition_time_s:
            chance = effects.ignition_failure_chance(self.wear(Mode.ELECTRODE))
            self._miss = chance > 0 and self._rng.random() < chance
        if Cause.GAS_SUPPLY in self.causes or self._miss:
            if elapsed >= s.ignition_safety_s:
                self.failed_ignitions += 1
                if self.attempt >= s.max_ignition_attempts:
                    self._lock_out(FaultCode.F28)
                else:
                    self._enter(Phase.INTER_PURGE)
            return
        if elapsed >= s.ignition_time_s:
            self.flame_on = True
            self.burner_starts += 1
            self.attempt = 0
            self.modulation = 1.0
            self._enter(Phase.RUNNING)

    def _run(self, wanted: HeatMode, elapsed: float) -> None:
        s = self.settings
        if self._flame_base_ua() < 1.0 and elapsed >= s.flame_loss_after_s:
            self._lock_out(FaultCode.F29)
            return
        scaled = effects.scaling_factor(self.wear(Mode.SCALING))
        if scaled >= 1.0 and elapsed >= s.flame_loss_after_s:
            self._lock_out(FaultCode.F20)  # the high-limit thermostat trips
            return
        if wanted is HeatMode.NONE or wanted is not self.mode:
            self._burner_off()
            self._enter(Phase.POST_PURGE)
            return
        flow = self.plant.flow_temp
        if self.mode is HeatMode.CH:
            overshoot = effects.SCALING_OVERSHOOT_K * scaled
            if flow > self.ch_setpoint + s.ch_switch_off_above_k + overshoot:
                self._burner_off()
                self._enter(Phase.POST_PURGE)
                return
            error = self.ch_setpoint + 2 - flow
        else:
            error = self.dhw_setpoint - self.plant.dhw_temp
        minimum = self.plant.params.min_output_kw / self.plant.params.max_output_kw
        self.modulation = min(1.0, max(minimum, 0.5 + error / 10))

    def _burner_kw(self) -> float:
        # scale on the exchanger: less of the burner's heat reaches the water
        transfer = 1.0 - 0.15 * effects.scaling_factor(self.wear(Mode.SCALING))
        return self.modulation * self.plant.params.max_output_kw * transfer

    def _degrade(self) -> None:
        """Apply the slow degradations' effects on the physical state."""
        plant = self.plant
        leak = self.wear(Mode.LEAK)
        if leak > 0:
            fill = plant.params.fill_pressure_bar
            lost = effects.pressure_loss_bar(leak, fill, self.settings.f22_below_bar)
            plant.cold_fill_bar = min(plant.cold_fill_bar, fill - lost)
        if self.wear(Mode.SENSOR_DRIFT) >= 1.0:
            self.causes.add(Cause.PRESSURE_SENSOR)
