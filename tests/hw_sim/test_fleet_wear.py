"""Wearing boilers in `sim fleet`: what their reports carry as the wear grows, and the fault
each ends in, straight from the gateway's own outbox (sealed, signed messages)."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from typing import Any

import pytest

from hw_sim.degradation import DAYS_TO_FAULT, SECONDS_PER_DAY, Degradation, Mode
from hw_sim.fleet import REPORT_S, FleetSettings, Gateway, Identity, Summary
from hw_sim.fleet_wear import FAULT_OF_MODE, FLEET_MODES, draw
from protocols.cose import generate_private_key, open_uplink
from protocols.messages import Event, TelemetryBatch
from protocols.reference import BoilerStatus

DAY = SECONDS_PER_DAY


def gateway(mode: Mode | None, share: float = 1.0, seed: int = 3) -> Gateway:
    key = generate_private_key()
    settings = FleetSettings(
        duration_s=30 * DAY, degrade_share=share, degrade_mode=mode, lockouts_per_day=0.0
    )
    identity = Identity("sim-0001", key, "pw")
    return Gateway(identity, {}, settings, Summary(), random.Random(seed))


def messages(g: Gateway) -> list[Any]:
    key = g.identity.key.public_key()
    return [open_uplink(envelope, topic, lambda _: key) for topic, envelope in g.outbox.values()]


def day_values(g: Gateway, day: float, point: str) -> list[float]:
    """`point`'s readings in the reports of one simulated day, starting at `day`."""
    g.outbox.clear()
    for step in range(int(DAY / REPORT_S)):
        g.report(day * DAY + step * REPORT_S)
        if g.fault:
            break
    return [
        float(r.value)
        for m in messages(g)
        if isinstance(m, TelemetryBatch)
        for r in m.readings
        if r.point == point
    ]


def ends(g: Gateway) -> tuple[float, list[Event]]:
    """Report until the boiler breaks down: the simulated day it did, and its events."""
    t = 0.0
    while not g.fault and t < 60 * DAY:
        g.outbox.clear()
        g.report(t)
        t += REPORT_S
    return t / DAY, [m for m in messages(g) if isinstance(m, Event)]


@pytest.mark.parametrize(
    ("mode", "point", "falls"),
    [
        (Mode.LEAK, "ch_pressure", True),
        (Mode.ELECTRODE, "flame_current", True),
        (Mode.FAN, "fan_speed", True),
        (Mode.SCALING, "return_temp", True),
    ],
)
def test_the_signal_moves_the_way_of_wear(mode: Mode, point: str, falls: bool) -> None:
    g = gateway(mode)
    assert g.wear is not None
    g.wear.degradation = Degradation(mode, onset_s=2 * DAY, rate=0.1)
    before = statistics.median(day_values(g, 0, point))
    later = statistics.median(day_values(g, 8, point))
    assert (later < before) is falls, (before, later)


def test_every_mode_ends_in_its_fault_at_its_time() -> None:
    for mode in FLEET_MODES:
        g = gateway(mode)
        assert g.wear is not None
        g.wear.degradation = Degradation(mode, onset_s=DAY, rate=1.0)
        day, events = ends(g)
        assert 1.95 <= day <= 2.05, (mode, day)
        fault = FAULT_OF_MODE[mode]
        assert g.fault is fault and g.summary.worn_out == Counter({fault.name: 1})
        assert events[0].detail["fault_code"] == int(fault)
        locks = fault.is_lockout
        assert g.status is (BoilerStatus.LOCKOUT if locks else BoilerStatus.BLOCKING_ERROR)
        assert [e.kind.value for e in events] == ["fault", "lockout"] if locks else ["fault"]


def test_the_share_and_the_draws_follow_the_settings() -> None:
    fleet = [gateway(None, share=0.3, seed=i) for i in range(400)]
    worn = [g.wear for g in fleet if g.wear is not None]
    assert 80 <= len(worn) <= 160
    assert {w.degradation.mode for w in worn} == set(FLEET_MODES)
    for w in worn:
        low, high = DAYS_TO_FAULT[w.degradation.mode]
        assert low <= 1 / w.degradation.rate <= high
        assert 0 <= w.degradation.onset_s <= 10 * DAY
    assert all(gateway(None, share=0.0, seed=i).wear is None for i in range(50))
    assert draw(random.Random(1), DAY, Mode.FAN).mode is Mode.FAN
