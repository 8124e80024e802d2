"""Slow degradations in the physical simulator: each shows on its registers, then faults."""

from __future__ import annotations

import statistics

import pytest

from hw_sim.boiler import Boiler, Cause, DemandOverride
from hw_sim.degradation import Degradation, Mode
from protocols.reference import BoilerStatus, FaultCode

MIDNIGHT_UTC = 1_763_683_200.0
HOUR = 3600.0


def boiler_with(mode: Mode, rate: float = 1.0, seed: int = 3) -> Boiler:
    boiler = Boiler(seed=seed, start_wall_s=MIDNIGHT_UTC)
    boiler.degrade(Degradation(mode, 0.0, rate))
    return boiler


def hours_until_fault(boiler: Boiler, limit_h: int = 48) -> tuple[int, FaultCode]:
    for hour in range(limit_h):
        boiler.advance(HOUR)
        if boiler.fault is not FaultCode.NONE:
            return hour + 1, boiler.fault
    raise AssertionError(f"no fault in {limit_h} h: {boiler.snapshot()}")


def hourly(boiler: Boiler, hours: int, point: str, *, when: str | None = None) -> list[float]:
    """One reading of `point` per simulated minute over `hours`, optionally only while
    the register `when` is true."""
    values = []
    for _ in range(int(hours * 60)):
        boiler.advance(60.0)
        registers = boiler.register_values()
        if when is None or registers[when]:
            values.append(float(registers[point]))
    return values


@pytest.mark.parametrize(
    ("mode", "faults"),
    [
        (Mode.LEAK, {FaultCode.F22}),
        (Mode.ELECTRODE, {FaultCode.F28, FaultCode.F29}),
        (Mode.SCALING, {FaultCode.F20}),
        (Mode.FAN, {FaultCode.F32}),
        (Mode.SENSOR_DRIFT, {FaultCode.F75}),
    ],
)
def test_each_degradation_ends_in_its_fault_near_when_it_is_due(
    mode: Mode, faults: set[FaultCode]
) -> None:
    boiler = boiler_with(mode, rate=1.0)  # due after one simulated day
    hours, fault = hours_until_fault(boiler)
    assert fault in faults
    assert 12 <= hours <= 36, f"{mode} faulted after {hours} h, due at 24 h"


def test_a_healthy_boiler_and_a_heavy_hot_water_user_never_fault() -> None:
    for mode in (None, Mode.HEAVY_DHW):
        boiler = Boiler(seed=3, start_wall_s=MIDNIGHT_UTC)
        if mode is not None:
            boiler.degrade(Degradation(mode))
        boiler.advance(48 * HOUR)
        assert boiler.fault is FaultCode.NONE
        assert boiler.status is not BoilerStatus.LOCKOUT


def test_heavy_hot_water_use_draws_far_more_often() -> None:
    normal = Boiler(seed=5, start_wall_s=MIDNIGHT_UTC)
    heavy = Boiler(seed=5, start_wall_s=MIDNIGHT_UTC)
    heavy.degrade(Degradation(Mode.HEAVY_DHW))
    minutes = [sum(hourly(b, 24, "dhw_active", when="dhw_active")) for b in (normal, heavy)]
    assert minutes[1] > 2 * minutes[0]


def test_a_slow_leak_lowers_the_pressure_under_the_daily_swing() -> None:
    boiler = boiler_with(Mode.LEAK, rate=0.25)  # four days to F22
    first_day = hourly(boiler, 24, "ch_pressure")
    second_day = hourly(boiler, 24, "ch_pressure")
    assert max(first_day) - min(first_day) > 0.1  # thermal expansion swing
    assert statistics.median(second_day) < statistics.median(first_day) - 0.15


def test_electrode_wear_lowers_the_flame_current_and_fails_ignitions() -> None:
    boiler = boiler_with(Mode.ELECTRODE, rate=0.5)
    boiler.ch_override = DemandOverride.ON  # heating all the time: flame to measure
    fresh = hourly(boiler, 2, "flame_current", when="flame_on")
    failed_before = boiler.failed_ignitions
    boiler.advance(38 * HOUR)  # 0.83 of the way: the ignition margin is gone
    worn = hourly(boiler, 2, "flame_current", when="flame_on")
    assert statistics.median(fresh) > 4.0
    assert statistics.median(worn) < statistics.median(fresh) - 2.0
    assert boiler.failed_ignitions > failed_before


def ch_deltas(boiler: Boiler, hours: int) -> list[float]:
    """Flow minus return, once a simulated minute while central heating is pumping."""
    deltas = []
    for _ in range(hours * 60):
        boiler.advance(60.0)
        values = boiler.register_values()
        if values["ch_active"] and values["pump_on"]:
            deltas.append(values["flow_temp"] - values["return_temp"])
    return deltas


def test_scaling_widens_the_flow_return_difference() -> None:
    scaled = boiler_with(Mode.SCALING, rate=0.5)
    clean = Boiler(seed=3, start_wall_s=MIDNIGHT_UTC)
    for boiler in (scaled, clean):
        boiler.advance(30 * HOUR)  # scaling 0.625 of the way to the overheat
    widened, normal = ch_deltas(scaled, 12), ch_deltas(clean, 12)
    assert widened and normal
    assert statistics.median(widened) > statistics.median(normal) + 3.0


def test_fan_wear_falls_short_of_the_target_speed() -> None:
    boiler = boiler_with(Mode.FAN, rate=0.8)
    boiler.advance(24 * HOUR)
    shortfalls = []
    for _ in range(24 * 60):
        boiler.advance(60.0)
        values = boiler.register_values()
        if values["flame_on"] and values["status"] == BoilerStatus.RUNNING:
            target = 1500 + 35 * values["modulation"]
            shortfalls.append(values["fan_speed"] / target)
    assert shortfalls and statistics.median(shortfalls) < 0.85


def test_pressure_sensor_drift_reads_low_and_noisy_then_fails() -> None:
    boiler = boiler_with(Mode.SENSOR_DRIFT, rate=1.0)
    boiler.advance(20 * HOUR)
    truth, read = [], []
    for _ in range(120):
        boiler.advance(30.0)
        truth.append(boiler.plant.pressure_bar())
        read.append(boiler.register_values()["ch_pressure"])
    errors = [r - t for r, t in zip(read, truth, strict=True)]
    assert statistics.median(errors) < -0.1
    assert statistics.pstdev(errors) > 0.03
    boiler.advance(6 * HOUR)
    assert boiler.fault is FaultCode.F75


def test_repair_removes_the_degradation_behind_a_cause() -> None:
    boiler = boiler_with(Mode.LEAK, rate=2.0)
    hours_until_fault(boiler)
    boiler.repair(Cause.WATER_LEAK)
    assert Mode.LEAK not in boiler.degradations
    boiler.advance(2 * HOUR)
    assert boiler.fault is FaultCode.NONE
    assert boiler.register_values()["ch_pressure"] >= 1.4


def test_a_degradation_refuses_a_rate_it_cannot_mean() -> None:
    for rate in (0.0, -1.0, float("nan"), 100.0):
        with pytest.raises(ValueError, match="rate"):
            Degradation(Mode.LEAK, 0.0, rate)


def test_onset_in_the_future_waits() -> None:
    boiler = Boiler(seed=3, start_wall_s=MIDNIGHT_UTC)
    boiler.degrade(Degradation(Mode.ELECTRODE, onset_s=10 * 86_400.0, rate=5.0))
    boiler.advance(24 * HOUR)
    assert boiler.wear(Mode.ELECTRODE) == 0.0
    assert boiler.fault is FaultCode.NONE
