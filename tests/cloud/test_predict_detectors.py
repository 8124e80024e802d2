"""Detectors on synthetic series: the statistics, the daily features (gaps, bad points,
out-of-order and duplicate readings, clock jumps) and each mode's forecast."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from cloud.predict.detectors import detect, detect_mode
from cloud.predict.features import DayFeatures, day_features, peer_medians
from cloud.predict.rules import RulesError, load_rules, packaged_rules, parse_rules
from cloud.predict.stats import cusum, robust_scale, theil_sen
from protocols.reference import BoilerStatus

RULES = packaged_rules()
RUNNING = float(BoilerStatus.RUNNING)


# ----- statistics ---------------------------------------------------------------------------


def test_theil_sen_ignores_an_outlier_that_bends_least_squares() -> None:
    xs = [float(x) for x in range(10)]
    ys = [2.0 - 0.1 * x for x in xs]
    ys[4] = 50.0  # one wild day
    fit = theil_sen(xs, ys)
    assert fit.slope == pytest.approx(-0.1)
    assert fit.slope_low <= fit.slope <= fit.slope_high
    assert fit.at(10.0) == pytest.approx(1.0)


def test_theil_sen_interval_straddles_zero_on_noise() -> None:
    rng = random.Random(4)
    xs = [float(x) for x in range(20)]
    fit = theil_sen(xs, [rng.gauss(0, 1) for _ in xs])
    assert fit.slope_low < 0 < fit.slope_high


def test_theil_sen_needs_two_distinct_x() -> None:
    with pytest.raises(ValueError, match="two points"):
        theil_sen([1.0, 1.0], [0.0, 1.0])


def test_cusum_finds_a_sustained_shift_and_where_it_began() -> None:
    rng = random.Random(1)
    values = [rng.gauss(0, 1) for _ in range(20)] + [rng.gauss(3, 1) for _ in range(10)]
    result = cusum(values, 0.0, 1.0)
    assert result.alarm
    assert result.start is not None and 17 <= result.start <= 22
    assert not cusum([rng.gauss(0, 1) for _ in range(30)], 0.0, 1.0, h=8.0).alarm


def test_robust_scale_has_a_floor() -> None:
    assert robust_scale([1.0, 1.0, 1.0], 0.05) == 0.05
    assert robust_scale([0.0, 1.0, 2.0, 3.0, 100.0], 0.0) == pytest.approx(1.4826)


# ----- features -----------------------------------------------------------------------------

DAY0 = 20_000 * 86_400_000


def hour_rows(
    hour: int, *, pressure: float, flow: float = 60.0, ret: float = 48.0, flame: float = 4.5
) -> list[tuple[int, str, float | None]]:
    ts = DAY0 + hour * 3_600_000
    return [
        (ts, "status", RUNNING),
        (ts, "fault_code", 0.0),
        (ts, "flow_temp", flow),
        (ts, "return_temp", ret),
        (ts, "ch_pressure", pressure),
        (ts, "flame_current", flame),
        (ts, "modulation", 50.0),
        (ts, "fan_speed", 3250.0),
        (ts, "burner_starts", 1000.0 + 3 * hour),
        (ts, "failed_ignitions", 10.0),
        (ts, "dhw_active", 0.0),
    ]


def test_features_of_a_regular_day() -> None:
    rows = [r for h in range(24) for r in hour_rows(h, pressure=1.72)]
    f = day_features(rows)
    assert f.readings == 24 and not f.faulted
    assert f.pressure_20 == pytest.approx(1.72 - 0.008 * 40)
    assert f.flame_ua == 4.5 and f.delta_t == 12.0
    assert f.fan_ratio == pytest.approx(1.0)
    assert f.starts == 69 and f.ignition_fail == 0.0
    assert f.pressure_noise == pytest.approx(0.0)


def test_features_do_not_care_about_order_duplicates_or_gaps() -> None:
    rows = [r for h in range(0, 24, 3) for r in hour_rows(h, pressure=1.72)]  # 3-hour gaps
    shuffled = rows * 2  # every reading twice (a resend stored under another seq)
    random.Random(2).shuffle(shuffled)
    assert day_features(shuffled).pressure_20 == day_features(rows).pressure_20
    assert day_features(shuffled).flame_ua == 4.5


def test_features_carry_values_forward_on_report_by_exception_data() -> None:
    rows = hour_rows(0, pressure=1.5)
    # later only the flame current changes: flow and return are carried forward
    rows += [(DAY0 + h * 3_600_000, "flame_current", 4.0) for h in range(1, 10)]
    f = day_features(rows)
    assert f.flame_ua == 4.0 and f.delta_t == 12.0


def test_a_bad_sensor_value_and_a_fault_are_not_features() -> None:
    rows = [r for h in range(12) for r in hour_rows(h, pressure=1.72)]
    rows += [r for h in range(12, 24) for r in hour_rows(h, pressure=655.35)]  # 0xFFFF
    f = day_features(rows)
    assert f.pressure_20 == pytest.approx(1.72 - 0.32)
    faulted = [*rows, (DAY0 + 23 * 3_600_000 + 1, "fault_code", 22.0)]
    assert day_features(faulted).faulted
    assert day_features([]) == DayFeatures()
    assert day_features([(DAY0, "ch_pressure", None)]).readings == 0


def test_features_round_trip_through_json_and_compare_with_peers() -> None:
    f = day_features([r for h in range(24) for r in hour_rows(h, pressure=1.72)])
    assert DayFeatures.from_json(f.to_json() | {"from_a_newer_version": 1}) == f
    peers = [replace(f, delta_t=10.0 + i) for i in range(6)]
    medians = peer_medians(peers)
    assert medians["delta_t"] == 12.5
    assert f.with_peers(medians).value("delta_t_vs_peers") == pytest.approx(-0.5)
    assert "delta_t" not in peer_medians(peers[:3])  # too few peers


# ----- detectors ----------------------------------------------------------------------------


def series(values: list[float], name: str, start_day: int = 100) -> list[tuple[int, DayFeatures]]:
    return [(start_day + i, DayFeatures(readings=24, **{name: v})) for i, v in enumerate(values)]


def noisy(rng: random.Random, level: float, spread: float, days: int) -> list[float]:
    return [level + rng.gauss(0, spread) for _ in range(days)]


def test_a_leak_is_forecast_with_its_time_to_fault() -> None:
    rng = random.Random(3)
    values = noisy(rng, 1.3, 0.01, 20) + [1.3 - 0.05 * d + rng.gauss(0, 0.01) for d in range(8)]
    forecast = detect_mode(RULES.mode("leak"), series(values, "pressure_20"))  # type: ignore[arg-type]
    assert forecast is not None and forecast.fault == "F22"
    # level about 0.95 bar, falling 0.05 bar a day, threshold 0.65: about 6 days
    assert 4 <= forecast.days_to_fault <= 8
    assert forecast.days_low <= forecast.days_to_fault <= forecast.days_high
    evidence = forecast.evidence
    assert evidence["threshold"] == 0.65 and evidence["slope_per_day"] < 0
    assert evidence["baseline"] == pytest.approx(1.3, abs=0.02)


@pytest.mark.parametrize("seed", range(20))
def test_a_steady_boiler_raises_nothing(seed: int) -> None:
    rng = random.Random(seed)
    days = 45
    history = [
        (
            200 + d,
            DayFeatures(
                readings=24,
                pressure_20=1.4 + rng.gauss(0, 0.01),
                pressure_noise=0.008 + abs(rng.gauss(0, 0.001)),
                flame_ua=4.4 + rng.gauss(0, 0.05),
                fan_ratio=1.0 + rng.gauss(0, 0.005),
                vs_peers={"delta_t": rng.gauss(0, 0.4)},
            ),
        )
        for d in range(days)
    ]
    assert detect(RULES.modes, history) == []


def test_a_one_day_dip_is_not_a_trend() -> None:
    rng = random.Random(5)
    values = noisy(rng, 4.5, 0.05, 25)
    values[-1] = 2.0  # one odd day
    assert detect_mode(RULES.mode("electrode"), series(values, "flame_ua")) is None  # type: ignore[arg-type]


def test_electrode_wear_and_fan_wear_and_scaling_are_forecast() -> None:
    rng = random.Random(6)
    flame = noisy(rng, 4.5, 0.05, 15) + [4.5 - 0.15 * d for d in range(12)]
    fan = noisy(rng, 1.0, 0.005, 15) + [1.0 - 0.012 * d for d in range(12)]
    delta = noisy(rng, 0.0, 0.3, 15) + [0.45 * d for d in range(12)]
    history = [
        (
            300 + i,
            DayFeatures(readings=24, flame_ua=f, fan_ratio=r, vs_peers={"delta_t": d}),
        )
        for i, (f, r, d) in enumerate(zip(flame, fan, delta, strict=True))
    ]
    modes = {f.mode for f in detect(RULES.modes, history)}
    assert modes == {"electrode", "fan", "scaling"}


def test_a_drifting_sensor_explains_falling_pressure_away() -> None:
    rng = random.Random(7)
    history = []
    for d in range(30):
        drift = max(0, d - 15)
        history.append(
            (
                400 + d,
                DayFeatures(
                    readings=24,
                    pressure_20=1.3 - 0.04 * drift + rng.gauss(0, 0.005),
                    pressure_noise=0.008 + 0.006 * drift,
                ),
            )
        )
    modes = [f.mode for f in detect(RULES.modes, history)]
    assert modes == ["sensor_drift"]


def test_faulted_days_and_gaps_do_not_break_a_forecast() -> None:
    rng = random.Random(8)
    values = noisy(rng, 1.3, 0.01, 20) + [1.3 - 0.05 * d for d in range(8)]
    history = series(values, "pressure_20")
    del history[5:9]  # the gateway was offline for four days
    history[22] = (history[22][0], replace(history[22][1], faulted=True))
    assert detect_mode(RULES.mode("leak"), history) is not None  # type: ignore[arg-type]


def test_after_a_fault_the_history_starts_again() -> None:
    """A leak that ran to F22, then a refill: the fall before the fault warns no more."""
    rng = random.Random(8)
    values = noisy(rng, 1.3, 0.01, 20) + [1.3 - 0.05 * d for d in range(10)]
    history = series(values, "pressure_20")
    assert [f.mode for f in detect(RULES.modes, history)] == ["leak"]
    last = history[-1][0]
    broken = (last + 1, DayFeatures(readings=24, faulted=True))
    refilled = series(noisy(rng, 1.3, 0.01, 1), "pressure_20", start_day=last + 2)
    assert [f.mode for f in detect(RULES.modes, [*history, *refilled])] == ["leak"]
    assert detect(RULES.modes, [*history, broken, *refilled]) == []


def test_after_a_verified_repair_that_mode_starts_again() -> None:
    rng = random.Random(9)
    values = noisy(rng, 1.3, 0.01, 20) + [1.3 - 0.05 * d for d in range(10)]
    history = series(values, "pressure_20")
    fixed_on = history[-1][0]
    refilled = series(noisy(rng, 1.3, 0.01, 2), "pressure_20", start_day=fixed_on + 1)
    together = [*history, *refilled]
    assert [f.mode for f in detect(RULES.modes, together)] == ["leak"], "the old trend"
    assert detect(RULES.modes, together, {"leak": fixed_on}) == []
    assert [f.mode for f in detect(RULES.modes, together, {"fan": fixed_on})] == ["leak"]


def test_a_day_starts_where_the_last_one_ended() -> None:
    yesterday = day_features([r for h in range(24) for r in hour_rows(h, pressure=1.72)])
    assert yesterday.last["ch_pressure"] == 1.72 and yesterday.last["burner_starts"] == 1069
    # today only the burner counter moves: the pressure and flow still hold
    today = [(DAY0 + 86_400_000 + h * 3_600_000, "burner_starts", 1070.0 + h) for h in range(5)]
    alone = day_features(today)
    assert alone.pressure_20 is None and alone.starts == 4
    carried = day_features(today, start=yesterday.last)
    assert carried.pressure_20 == yesterday.pressure_20
    assert carried.starts == 5, "counted from where the counter stood"


def test_too_little_history_raises_nothing() -> None:
    values = [1.3, 1.2, 1.1, 1.0, 0.9]
    assert detect_mode(RULES.mode("leak"), series(values, "pressure_20")) is None  # type: ignore[arg-type]


# ----- rules --------------------------------------------------------------------------------


def test_packaged_rules_cover_every_degradation() -> None:
    assert {m.name for m in RULES.modes} == {"leak", "electrode", "scaling", "fan", "sensor_drift"}
    assert RULES.version


def test_per_model_overrides_apply_to_that_model_only(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "cloud" / "predict" / "rules.toml").read_text()
    text += '\n[model."BT-30C".leak]\nthreshold = 0.8\n'
    text += '[model."BT-30C".features]\npressure_per_k = 0.01\n'
    path = tmp_path / "rules.toml"
    path.write_text(text)
    rules = load_rules(path)
    modes, features = rules.for_model("BT-30C")
    assert next(m for m in modes if m.name == "leak").threshold == 0.8
    assert features.pressure_per_k == 0.01
    default_modes, _ = rules.for_model("BT-24C")
    assert next(m for m in default_modes if m.name == "leak").threshold == 0.65


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"mode": {"leak": {"feature": "pressure_20", "direction": "sideways"}}}, "direction"),
        ({"mode": {"leak": {"colour": "red"}}}, "colour"),
        ({"mode": {"leak": {"feature": "altitude"}}}, "altitude"),
        ({"mode": {"leak": {"fault": "F99"}}}, "fault"),
        ({"mode": {"leak": {"unless": ["gremlins"]}}}, "gremlins"),
        ({"mode": {"leak": {"threshold_change": 1.0}}}, "exactly one"),
        ({"version": ""}, "version"),
        ({"defaults": {"horizon": 3}}, "horizon"),
    ],
)
def test_bad_rules_are_refused_with_the_key_named(change: dict, named: str) -> None:
    import tomllib

    data = tomllib.loads((Path(__file__).parents[2] / "cloud/predict/rules.toml").read_text())
    for key, value in change.items():
        if isinstance(value, dict) and key == "mode":
            for mode, fields in value.items():
                data["mode"][mode].update(fields)
        else:
            data[key] = value
    with pytest.raises(RulesError, match=named):
        parse_rules(data)
