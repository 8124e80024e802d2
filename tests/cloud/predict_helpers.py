"""Readings for predictive-maintenance tests: a boiler's hourly history, leaking or not."""

from __future__ import annotations

from tests.cloud.api_helpers import DAY, HOUR, T0, World

DAYS = 30
"""Days of history before T0."""


def hourly(world: World, device_id: str, leak_from_day: int | None) -> None:
    """`DAYS` days of hourly readings; from `leak_from_day` the pressure falls 0.06 bar/day."""
    start = T0 - DAYS * DAY
    rows: dict[str, list[tuple[int, float | str]]] = {
        p: [] for p in ("status", "fault_code", "flow_temp", "return_temp", "ch_pressure")
    }
    for hour in range(DAYS * 24):
        ts = start + hour * HOUR
        day = hour / 24
        lost = 0.06 * max(0.0, day - leak_from_day) if leak_from_day is not None else 0.0
        flow = 40.0 + 20.0 * ((hour % 24) / 24)
        rows["status"].append((ts, 4.0))
        rows["fault_code"].append((ts, 0.0))
        rows["flow_temp"].append((ts, flow))
        rows["return_temp"].append((ts, flow - 12.0))
        rows["ch_pressure"].append((ts, round(1.4 - lost + 0.008 * (flow - 20.0), 2)))
    for point, values in rows.items():
        world.samples(device_id, point, values)
    world.twin(device_id, last_seen_ms=T0 - HOUR)


def readings(world: World, device_id: str, start: int, end: int, pressure: float) -> None:
    """Readings every 5 minutes from `start` to `end`, running at a 50 degC flow, with the
    pressure (brought to a 20 degC flow) at `pressure` bar."""
    stamps = range(start, end + 1, 300_000)
    flow = 50.0
    values: dict[str, float] = {
        "status": 4.0,
        "fault_code": 0.0,
        "flow_temp": flow,
        "return_temp": flow - 12.0,
        "ch_pressure": round(pressure + 0.008 * (flow - 20.0), 3),
    }
    for point, value in values.items():
        world.samples(device_id, point, [(ts, value) for ts in stamps])
