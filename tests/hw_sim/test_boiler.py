"""The simulated controller on virtual time: physics, faults with causes, lockout and reset."""

from __future__ import annotations

import pytest

from hw_sim.boiler import Boiler, Cause, DemandOverride, Phase, ResetOutcome, SettingError
from protocols.reference import BoilerStatus, FaultCode

MIDNIGHT_UTC = 1_763_683_200.0  # 2025-11-21 00:00 (a weekday in winter)


def heating_boiler(**kwargs: object) -> Boiler:
    """A boiler whose heating is forced on, so ignition happens at once."""
    boiler = Boiler(seed=1, start_wall_s=MIDNIGHT_UTC + 3 * 3600, **kwargs)  # type: ignore[arg-type]
    boiler.ch_override = DemandOverride.ON
    boiler.dhw_override = DemandOverride.OFF
    return boiler


def run_until(boiler: Boiler, predicate: object, limit_s: float, step: float = 1.0) -> float:
    """Advance until `predicate(boiler)` holds; return the simulated seconds it took."""
    waited = 0.0
    while not predicate(boiler):  # type: ignore[operator]
        if waited >= limit_s:
            raise AssertionError(f"condition not reached in {limit_s} s: {boiler.snapshot()}")
        boiler.advance(step)
        waited += step
    return waited


def test_heat_demand_runs_the_burner_and_heats_the_water() -> None:
    boiler = heating_boiler()
    starts = boiler.burner_starts
    run_until(boiler, lambda b: b.status is BoilerStatus.RUNNING, 30)
    assert boiler.burner_starts == starts + 1
    assert boiler.register_values()["flame_on"] is True
    assert boiler.register_values()["gas_valve_open"] is True
    boiler.advance(300)
    values = boiler.register_values()
    assert values["flow_temp"] > 45
    assert values["return_temp"] < values["flow_temp"]
    assert 20 <= values["modulation"] <= 100
    assert values["fan_speed"] > 1500
    assert 3.0 <= values["flame_current"] <= 6.0


def test_burner_cycles_around_the_setpoint_and_counts_hours() -> None:
    boiler = heating_boiler()
    boiler.write_setting("ch_setpoint", 50.0)
    hours_before = boiler.burner_seconds
    temps = []
    for _ in range(240):  # two hours in 30 s slices
        boiler.advance(30)
        temps.append(boiler.plant.flow_temp)
    later = temps[60:]
    assert max(later) < 50 + 5 + 1.0, "switches off above setpoint + 5 K"
    assert min(later) > 30, "keeps the circuit warm while there is demand"
    assert boiler.burner_seconds - hours_before > 1800
    assert boiler.plant.room_temp > 19.0


def test_idle_boiler_cools_and_outdoor_temperature_follows_the_day() -> None:
    boiler = Boiler(seed=3, start_wall_s=MIDNIGHT_UTC)
    boiler.ch_override = DemandOverride.OFF
    boiler.dhw_override = DemandOverride.OFF
    boiler.plant.flow_temp = 60.0
    early = boiler.plant.outdoor_temp(MIDNIGHT_UTC + 5 * 3600)
    afternoon = boiler.plant.outdoor_temp(MIDNIGHT_UTC + 17 * 3600)
    assert afternoon > early
    boiler.advance(4 * 3600)
    assert boiler.status is BoilerStatus.STANDBY
    assert boiler.plant.flow_temp < 45
    assert boiler.plant.room_temp < 19.0


def test_hot_water_draw_has_priority_and_reaches_the_setpoint() -> None:
    boiler = heating_boiler()
    boiler.dhw_override = DemandOverride.ON
    run_until(boiler, lambda b: b.status is BoilerStatus.RUNNING, 30)
    assert boiler.register_values()["dhw_active"] is True
    boiler.advance(120)
    assert boiler.plant.dhw_temp > 40
    boiler.dhw_override = DemandOverride.OFF
    run_until(boiler, lambda b: b.status is BoilerStatus.POST_PURGE, 5)


def test_a_day_on_the_schedule_has_draws_and_heating() -> None:
    boiler = Boiler(seed=7, start_wall_s=MIDNIGHT_UTC)
    starts = boiler.burner_starts
    seen: set[BoilerStatus] = set()
    for _ in range(24 * 60):
        boiler.advance(60)
        seen.add(boiler.status)
    assert BoilerStatus.RUNNING in seen and BoilerStatus.STANDBY in seen
    assert boiler.burner_starts - starts >= 5
    assert 14 < boiler.plant.room_temp < 24


def test_same_seed_same_day() -> None:
    a, b = Boiler(seed=5, start_wall_s=MIDNIGHT_UTC), Boiler(seed=5, start_wall_s=MIDNIGHT_UTC)
    a.advance(7200)
    b.advance(7200)
    assert a.snapshot() == b.snapshot()


def test_f28_locks_out_after_three_failed_ignitions() -> None:
    boiler = heating_boiler()
    starts, lockouts = boiler.burner_starts, boiler.lockout_count
    boiler.inject(FaultCode.F28)
    took = run_until(boiler, lambda b: b.status is BoilerStatus.LOCKOUT, 120)
    assert boiler.fault is FaultCode.F28
    assert boiler.failed_ignitions == 3
    assert boiler.burner_starts == starts, "no flame, no start"
    assert boiler.lockout_count == lockouts + 1
    # pre-purge 5 + 3 x safety time 5 + 2 x inter-purge 5 = 30 s
    assert 29 <= took <= 31
    values = boiler.register_values()
    assert values["lockout"] is True and values["gas_valve_open"] is False
    assert values["status"] == BoilerStatus.LOCKOUT
    boiler.advance(3600)
    assert boiler.status is BoilerStatus.LOCKOUT, "a lockout never clears by itself"


def test_reset_before_repair_locks_out_again() -> None:
    boiler = heating_boiler()
    boiler.inject(FaultCode.F28)
    run_until(boiler, lambda b: b.status is BoilerStatus.LOCKOUT, 120)
    assert boiler.request_reset() is ResetOutcome.ACCEPTED
    assert boiler.status is not BoilerStatus.LOCKOUT
    assert boiler.fault is FaultCode.NONE
    run_until(boiler, lambda b: b.status is BoilerStatus.IGNITION, 10)
    run_until(boiler, lambda b: b.status is BoilerStatus.LOCKOUT, 120)
    assert boiler.fault is FaultCode.F28
    assert boiler.failed_ignitions == 6
    assert boiler.lockout_count >= 2


def test_repair_then_reset_returns_to_running() -> None:
    boiler = heating_boiler()
    starts = boiler.burner_starts
    boiler.inject(FaultCode.F28)
    run_until(boiler, lambda b: b.status is BoilerStatus.LOCKOUT, 120)
    boiler.repair()
    boiler.advance(600)
    assert boiler.status is BoilerStatus.LOCKOUT, "repair alone does not clear a lockout"
    assert boiler.request_reset() is ResetOutcome.ACCEPTED
    run_until(boiler, lambda b: b.status is BoilerStatus.RUNNING, 30)
    assert boiler.burner_starts == starts + 1
    assert boiler.reset_count == 1


def test_f29_flame_loss_locks_out_and_recurs_until_repaired() -> None:
    boiler = heating_boiler()
    run_until(boiler, lambda b: b.status is BoilerStatus.RUNNING, 30)
    boiler.inject(FaultCode.F29)
    assert boiler.register_values()["flame_current"] < 1.5, "weak flame signal before the loss"
    run_until(boiler, lambda b: b.status is BoilerStatus.LOCKOUT, 60)
    assert boiler.fault is FaultCode.F29
    boiler.request_reset()
    run_until(boiler, lambda b: b.status is BoilerStatus.RUNNING, 30)
    run_until(boiler, lambda b: b.status is BoilerStatus.LOCKOUT, 60)
    boiler.repair(Cause.FLAME_SENSE)
    boiler.request_reset()
    run_until(boiler, lambda b: b.status is BoilerStatus.RUNNING, 30)
    boiler.advance(120)
    assert boiler.status in (BoilerStatus.RUNNING, BoilerStatus.POST_PURGE, BoilerStatus.CH_DEMAND)


def test_f22_low_pressure_blocks_and_clears_itself_after_refill() -> None:
    boiler = heating_boiler()
    run_until(boiler, lambda b: b.status is BoilerStatus.RUNNING, 30)
    boiler.inject(FaultCode.F22)
    run_until(boiler, lambda b: b.status is BoilerStatus.BLOCKING_ERROR, 120)
    values = boiler.register_values()
    assert values["fault_code"] == 22 and values["flame_on"] is False
    assert values["ch_pressure"] < 0.6
    assert boiler.request_reset() is ResetOutcome.NOT_IN_LOCKOUT, (
        "a blocking error is not a lockout"
    )
    boiler.advance(600)
    assert boiler.status is BoilerStatus.BLOCKING_ERROR
    boiler.repair()
    run_until(boiler, lambda b: b.status is BoilerStatus.RUNNING, 30)
    assert boiler.fault is FaultCode.NONE
    assert boiler.register_values()["ch_pressure"] >= 1.4


def test_f75_sensor_fault_shows_no_pressure_and_clears_on_repair() -> None:
    boiler = heating_boiler()
    boiler.inject(FaultCode.F75)
    boiler.advance(1)
    assert boiler.status is BoilerStatus.BLOCKING_ERROR
    assert boiler.register_values()["ch_pressure"] == pytest.approx(655.35)
    boiler.repair(Cause.PRESSURE_SENSOR)
    boiler.advance(1)
    assert boiler.fault is FaultCode.NONE
    assert boiler.register_values()["ch_pressure"] < 3


def test_power_cycle_keeps_lockout_and_counters() -> None:
    boiler = heating_boiler()
    boiler.inject(FaultCode.F28)
    run_until(boiler, lambda b: b.status is BoilerStatus.LOCKOUT, 120)
    counters = (boiler.burner_starts, boiler.lockout_count, boiler.failed_ignitions)
    boiler.power_off()
    boiler.advance(60)
    boiler.power_on()
    boiler.advance(5)
    assert boiler.status is BoilerStatus.LOCKOUT and boiler.fault is FaultCode.F28
    assert (boiler.burner_starts, boiler.lockout_count, boiler.failed_ignitions) == counters


def test_power_cut_while_running_puts_out_the_flame() -> None:
    boiler = heating_boiler()
    run_until(boiler, lambda b: b.status is BoilerStatus.RUNNING, 30)
    boiler.power_off()
    assert boiler.flame_on is False and boiler.fan_speed == 0
    boiler.power_on()
    run_until(boiler, lambda b: b.status is BoilerStatus.RUNNING, 30)


def test_at_most_five_resets_in_fifteen_minutes() -> None:
    boiler = heating_boiler()
    boiler.inject(FaultCode.F28)
    outcomes = []
    for _ in range(6):
        run_until(boiler, lambda b: b.phase is Phase.LOCKOUT, 120)
        outcomes.append(boiler.request_reset())
    assert outcomes[:5] == [ResetOutcome.ACCEPTED] * 5
    assert outcomes[5] is ResetOutcome.RATE_LIMITED
    assert boiler.status is BoilerStatus.LOCKOUT
    assert boiler.resets_refused == 1
    boiler.advance(900)
    assert boiler.request_reset() is ResetOutcome.ACCEPTED, "the window slides"


def test_reset_when_not_locked_out_changes_nothing() -> None:
    boiler = heating_boiler()
    run_until(boiler, lambda b: b.status is BoilerStatus.RUNNING, 30)
    assert boiler.request_reset() is ResetOutcome.NOT_IN_LOCKOUT
    assert boiler.status is BoilerStatus.RUNNING and boiler.reset_count == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ch_setpoint", 29.9),
        ("ch_setpoint", 80.1),
        ("dhw_setpoint", 70.0),
        ("ch_enable", 2),
        ("status", 1),
    ],
)
def test_settings_are_validated(name: str, value: float) -> None:
    boiler = Boiler()
    with pytest.raises(SettingError) as caught:
        boiler.write_setting(name, value)
    assert caught.value.name == name


def test_disabled_heating_ignores_the_thermostat() -> None:
    boiler = heating_boiler()
    boiler.write_setting("ch_enable", 0)
    boiler.advance(120)
    assert boiler.status is BoilerStatus.STANDBY
    assert boiler.burner_starts == Boiler(seed=1).burner_starts
