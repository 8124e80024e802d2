"""The evaluation fleet and its scoring, behind the `TwinUnderTest` seam (a fake twin)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from hw_sim.degradation import DAYS_TO_FAULT, SECONDS_PER_DAY, Mode
from hw_sim.evaluation import (
    FIRST_ONSET_DAY,
    EvaluationFleet,
    EvaluationSettings,
    Uplinks,
    plan_fleet,
)
from hw_sim.scoring import RaisedWarning, evaluate, score, targets
from protocols.cose import open_uplink
from protocols.messages import Event, TelemetryBatch

DAY_MS = 86_400_000


def test_the_plan_follows_the_mix_and_the_documented_ranges() -> None:
    settings = EvaluationSettings(boilers=200, days=90, seed=3)
    plans = plan_fleet(settings)
    modes = Counter(p.mode for p in plans)
    assert modes[Mode.LEAK] == 24 and modes[Mode.FAN] == 12 and modes[None] == 80
    for plan in plans:
        if plan.pattern is None or plan.pattern.mode.healthy:
            continue
        assert plan.pattern.onset_s >= FIRST_ONSET_DAY * SECONDS_PER_DAY
        assert plan.pattern.onset_s <= (90 - 5) * SECONDS_PER_DAY
        low, high = DAYS_TO_FAULT[plan.pattern.mode]
        assert low <= 1 / plan.pattern.rate <= high
    assert plan_fleet(settings) == plans, "the same seed, the same fleet"
    assert plan_fleet(EvaluationSettings(boilers=200, days=90, seed=4)) != plans


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="days"):
        EvaluationSettings(days=5)
    with pytest.raises(ValueError, match="boilers"):
        EvaluationSettings(boilers=0)


@dataclass
class FakeTwin:
    """Records what it is given and warns as told."""

    keys: dict[str, bytes] = field(default_factory=dict)
    delivered: list[Uplinks] = field(default_factory=list)
    told: list[RaisedWarning] = field(default_factory=list)

    def register(self, devices: Sequence[tuple[str, bytes, str]]) -> None:
        self.keys = {d: raw for d, raw, _ in devices}

    def deliver(self, uplinks: Uplinks) -> None:
        self.delivered.append(uplinks)

    def warnings(self, now_ms: int) -> list[RaisedWarning]:
        return self.told


def test_the_fleet_sends_signed_readings_and_its_faults() -> None:
    from protocols.cose import public_key_from_raw

    twin = FakeTwin()
    report = evaluate(EvaluationSettings(boilers=30, days=40, seed=1), twin)
    assert report.messages == sum(len(u.messages) for u in twin.delivered)
    keys = {d: public_key_from_raw(raw) for d, raw in twin.keys.items()}
    kinds = Counter()
    for uplinks in twin.delivered[:8] + twin.delivered[-8:]:
        for name, envelope in uplinks.messages:
            message = open_uplink(envelope, name, keys.get)
            kinds[type(message).__name__] += 1
            if isinstance(message, TelemetryBatch):
                assert max(r.ts for r in message.readings) <= uplinks.now_ms
    assert kinds["TelemetryBatch"] > 0
    faults = [
        m
        for u in twin.delivered
        for n, e in u.messages
        if "/event" in n and isinstance(m := open_uplink(e, n, keys.get), Event)
    ]
    assert faults, "some boiler in 40 days reaches its fault"
    assert sum(row.faults for row in report.modes) == len(faults)
    assert report.healthy_false_warnings == 0


def test_scoring_counts_true_false_and_lead_time() -> None:
    fleet = EvaluationFleet(EvaluationSettings(boilers=40, days=60, seed=2))
    for _ in fleet.run():
        pass
    start_ms = int(fleet.settings.start_s * 1000)
    faulted = next(p for p in fleet.plans if fleet.boilers[p.device_id].fault_s is not None)
    assert faulted.pattern is not None
    fault_ms = start_ms + int(fleet.boilers[faulted.device_id].fault_s * 1000)  # type: ignore[operator]
    onset_ms = start_ms + int(faulted.pattern.onset_s * 1000)
    healthy = next(p for p in fleet.plans if p.mode is None)
    mode = faulted.pattern.mode.value
    warnings = [
        RaisedWarning(faulted.device_id, mode, fault_ms - 4 * DAY_MS),  # true, 4 days ahead
        RaisedWarning(faulted.device_id, mode, fault_ms - 2 * DAY_MS),  # true, later
        RaisedWarning(faulted.device_id, mode, fault_ms + DAY_MS),  # after the fault: ignored
        RaisedWarning(faulted.device_id, mode, onset_ms - DAY_MS),  # before onset: false
        RaisedWarning(healthy.device_id, "leak", start_ms + 30 * DAY_MS),  # healthy: false
    ]
    report = score(fleet, warnings)
    row = next(r for r in report.modes if r.mode == mode)
    assert row.true_warnings == 2 and row.warned_before_fault == 1
    assert row.lead_days == (4.0,)
    assert row.false_warnings >= 1
    assert report.healthy_false_warnings == 1
    assert report.false_per_1000_boiler_months == pytest.approx(
        1000 / (report.healthy_boilers * 60 / 30)
    )
    assert not all(targets(report).values())
