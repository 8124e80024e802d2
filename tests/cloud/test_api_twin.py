"""Twin derived figures, telemetry (raw and downsampled), the thread and ingest statistics,
through the API on a real database with a fixed clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloud import thread
from cloud.domain import Role
from cloud.models import Gap, IngestCounter
from cloud.twin.figures import auto_step
from tests.cloud.api_helpers import DAY, HOUR, T0, World, problem, world_for

MINUTE = 60_000
DEV = "boiler-a"


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(db_url, tmp_path) as w:
        w.user("olga", Role.OWNER)
        w.boiler(DEV, owner="olga")
        yield w


@pytest.fixture
def olga(world: World) -> dict[str, str]:
    return world.login("olga")


def twin(world: World, headers: dict[str, str]) -> dict[str, Any]:
    response = world.client.get(f"/api/v1/boilers/{DEV}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- derived figures ------------------------------------------------------------------------


def history(world: World) -> None:
    """40 days of life: counters, a cleared F28 lockout, an F22, an open F29 lockout."""
    world.uplink(DEV, 1, T0 - 40 * DAY)
    world.samples(
        "boiler-a",
        "burner_starts",
        [(T0 - 40 * DAY, 0), (T0 - 20 * DAY, 1000), (T0 - 10 * DAY, 1300), (T0, 1600)],
    )
    world.samples("boiler-a", "operating_hours", [(T0 - 20 * DAY, 100), (T0 - HOUR, 300)])
    world.alarm(DEV, "fault", 28, T0 - 39 * DAY, T0 - 38 * DAY)  # before the window
    world.alarm(DEV, "fault", 28, T0 - 5 * DAY, T0 - 5 * DAY + 2 * HOUR)
    world.alarm(DEV, "lockout", 28, T0 - 5 * DAY + MINUTE, T0 - 5 * DAY + 2 * HOUR)
    world.alarm(DEV, "fault", 22, T0 - 2 * DAY, T0 - 2 * DAY + 4 * HOUR)
    world.alarm(DEV, "fault", 29, T0 - HOUR, None)
    world.alarm(DEV, "lockout", 29, T0 - HOUR, None)


def test_derived_figures_over_30_days(world: World, olga: dict[str, str]) -> None:
    history(world)
    derived = twin(world, olga)["derived"]
    assert derived["window_days"] == 30
    # (1600 - 1000) starts over the 20 days between the first and last reading in the window
    assert derived["burner_starts_per_day"] == pytest.approx(30.0)
    # F28 (fault + its lockout = one episode), F22, F29 (open) over 200 operating hours
    assert derived["faults_per_1000_h"] == pytest.approx(3 / 200 * 1000)
    availability = derived["availability"]
    down = 2 * HOUR + 4 * HOUR + 1 * HOUR
    assert availability["unavailable_ms"] == down
    assert availability["window_ms"] == 30 * DAY
    assert availability["since"] == T0 - 30 * DAY
    assert availability["window_from"] == "window"
    assert availability["value"] == pytest.approx(1 - down / (30 * DAY))
    assert availability["guarantee"] == 0.98
    assert availability["meets_guarantee"] is True


def test_availability_counts_from_install_when_that_is_later(
    world: World, olga: dict[str, str]
) -> None:
    history(world)
    install = datetime.fromtimestamp((T0 - 3 * DAY) / 1000, tz=UTC).date()
    midnight = int(datetime(install.year, install.month, install.day, tzinfo=UTC).timestamp())
    midnight_ms = midnight * 1000
    tag = world.client.get(f"/api/v1/boilers/{DEV}", headers=olga).headers["etag"]
    world.user("sue", Role.SUPPORT)
    response = world.client.patch(
        f"/api/v1/boilers/{DEV}",
        json={"install_date": install.isoformat()},
        headers=world.login("sue") | {"If-Match": tag},
    )
    assert response.status_code == 200, response.text
    availability = response.json()["derived"]["availability"]
    assert availability["window_from"] == "install"
    assert availability["since"] == midnight_ms
    down = 4 * HOUR + 1 * HOUR  # F22 and the open F29; the F28 was before the install
    assert availability["value"] == pytest.approx(1 - down / (T0 - midnight_ms))


def test_a_long_lockout_breaks_the_guarantee(world: World, olga: dict[str, str]) -> None:
    world.uplink(DEV, 1, T0 - 60 * DAY)
    world.alarm(DEV, "lockout", 28, T0 - 3 * DAY, T0 - 2 * DAY)
    world.alarm(DEV, "fault", 28, T0 - 3 * DAY - HOUR, T0 - 2 * DAY + HOUR)
    availability = twin(world, olga)["derived"]["availability"]
    assert availability["unavailable_ms"] == DAY + 2 * HOUR
    assert availability["meets_guarantee"] is False


def connectivity(world: World, at: int, before: str, after: str) -> None:
    with world.db() as session:
        thread.record(
            session,
            device_id=DEV,
            kind=thread.ThreadKind.CONNECTIVITY,
            ts_ms=at,
            recorded_ms=at,
            data={"from": before, "to": after, "retained": False},
        )


def test_offline_time_is_unknown_not_available(world: World, olga: dict[str, str]) -> None:
    world.uplink(DEV, 1, T0 - 60 * DAY)
    connectivity(world, T0 - 40 * DAY, "unknown", "online")  # before the window
    connectivity(world, T0 - 10 * DAY, "online", "offline")  # away for two days...
    connectivity(world, T0 - 8 * DAY, "offline", "online")
    world.alarm(DEV, "lockout", 28, T0 - 9 * DAY, T0 - 8 * DAY - 12 * HOUR)  # ...locked out 12 h
    connectivity(world, T0 - HOUR, "online", "offline")  # and off for the last hour
    availability = twin(world, olga)["derived"]["availability"]
    down = 12 * HOUR  # the lockout: known even while the gateway was away
    unknown = 2 * DAY - down + HOUR
    assert availability["unavailable_ms"] == down
    assert availability["unknown_ms"] == unknown
    assert availability["observed_ms"] == 30 * DAY - unknown
    assert availability["value"] == pytest.approx(1 - down / (30 * DAY - unknown))
    assert availability["meets_guarantee"] is True  # 30 days, 95% observed: judged
    assert "at least 7 days" in availability["verdict_rule"]


def test_too_little_data_is_not_judged(world: World, olga: dict[str, str]) -> None:
    world.uplink(DEV, 1, T0 - 3 * DAY)  # three days only
    world.alarm(DEV, "lockout", 28, T0 - 2 * DAY, T0 - DAY)  # a bad day: 67% available
    availability = twin(world, olga)["derived"]["availability"]
    assert availability["value"] == pytest.approx(2 / 3)
    assert availability["meets_guarantee"] is None
    world.uplink(DEV, 2, T0 - 20 * DAY)  # now 20 days, but mostly unseen
    connectivity(world, T0 - 19 * DAY, "online", "offline")
    connectivity(world, T0 - 4 * DAY, "offline", "online")
    unseen = twin(world, olga)["derived"]["availability"]
    assert unseen["observed_ms"] < 0.9 * unseen["window_ms"]
    assert unseen["meets_guarantee"] is None


def test_derived_figures_are_null_without_data(world: World, olga: dict[str, str]) -> None:
    world.samples(DEV, "burner_starts", [(T0 - DAY, 10)])
    body = twin(world, olga)
    derived = body["derived"]
    assert derived["burner_starts_per_day"] is None
    assert derived["faults_per_1000_h"] is None
    assert derived["availability"]["value"] is None
    assert derived["availability"]["meets_guarantee"] is None
    assert body["connectivity"]["state"] == "unknown"
    assert body["alarms"] == []


def test_alarm_history_flags_open_episodes(world: World, olga: dict[str, str]) -> None:
    history(world)
    alarms = twin(world, olga)["alarms"]
    assert [(a["kind"], a["code"], a["open"]) for a in alarms[:3]] == [
        ("lockout", 29, True),
        ("fault", 29, True),
        ("fault", 22, False),
    ]
    assert alarms[0]["name"] == "F29"
    assert alarms[0]["text"] == "flame loss (lockout)"
    assert alarms[0]["duration_ms"] == HOUR
    assert len(alarms) == 6


# --- telemetry ------------------------------------------------------------------------------

START = T0 - 2 * HOUR


@pytest.fixture
def flow(world: World) -> None:
    """flow_temp = minute index, every minute for two hours; return_temp = 30 flat."""
    world.samples(DEV, "flow_temp", [(START + i * MINUTE, float(i)) for i in range(120)])
    world.samples(DEV, "return_temp", [(START + i * MINUTE, 30.0) for i in range(0, 120, 10)])
    world.value(DEV, "flow_temp", 119, START + 119 * MINUTE)
    world.value(DEV, "return_temp", 30, START + 110 * MINUTE)


def series(world: World, headers: dict[str, str], query: str) -> dict[str, Any]:
    response = world.client.get(f"/api/v1/boilers/{DEV}/telemetry?{query}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.usefixtures("flow")
def test_raw_readings(world: World, olga: dict[str, str]) -> None:
    body = series(world, olga, f"points=flow_temp&since={START}&until={START + 10 * MINUTE}")
    assert body["mode"] == "raw"
    assert body["step"] is None
    readings = body["points"]["flow_temp"]
    assert [r["value"] for r in readings] == [float(i) for i in range(10)]
    assert readings[0] == {"ts": START, "value": 0.0, "quality": "good"}


@pytest.mark.usefixtures("flow")
def test_buckets_average_in_sql(world: World, olga: dict[str, str]) -> None:
    body = series(world, olga, f"points=flow_temp,return_temp&since={START}&step=15m")
    assert body["mode"] == "buckets"
    assert body["step"] == 15 * MINUTE
    assert body["until"] == T0
    buckets = body["points"]["flow_temp"]
    assert len(buckets) == 8
    for k, bucket in enumerate(buckets):
        assert bucket == {
            "ts": START + k * 15 * MINUTE,
            "avg": 15 * k + 7,
            "min": 15 * k,
            "max": 15 * k + 14,
            "count": 15,
        }
    returns = body["points"]["return_temp"]
    assert [b["count"] for b in returns] == [2, 1, 2, 1, 2, 1, 2, 1]
    assert {b["avg"] for b in returns} == {30.0}


@pytest.mark.usefixtures("flow")
def test_buckets_align_on_since_and_skip_text(world: World, olga: dict[str, str]) -> None:
    since = START + 5 * MINUTE
    world.samples(DEV, "flow_temp", [(since + 30_000, "sensor fault")])
    body = series(world, olga, f"points=flow_temp&since={since}&until={T0}&step=3600000")
    first, second = body["points"]["flow_temp"]
    assert (first["ts"], first["min"], first["max"], first["count"]) == (since, 5, 64, 60)
    assert (second["ts"], second["min"], second["max"], second["count"]) == (
        since + HOUR,
        65,
        119,
        55,
    )
    raw = series(world, olga, f"points=flow_temp&since={since}&until={since + MINUTE}")
    assert [r["value"] for r in raw["points"]["flow_temp"]] == [5.0, "sensor fault"]


@pytest.mark.usefixtures("flow")
def test_too_many_readings_choose_a_round_step(world: World, olga: dict[str, str]) -> None:
    body = series(world, olga, "max_points=50")  # all points, the last 24 h
    assert body["since"] == T0 - DAY
    assert body["mode"] == "buckets"
    assert body["step"] == auto_step(T0 - DAY, T0, 50) == 30 * MINUTE
    assert set(body["points"]) == {"flow_temp", "return_temp"}
    assert sum(b["count"] for b in body["points"]["flow_temp"]) == 120
    assert len(body["points"]["flow_temp"]) == 4
    raw = series(world, olga, "max_points=120")
    assert raw["mode"] == "raw"
    assert len(raw["points"]["flow_temp"]) == 120


@pytest.mark.usefixtures("flow")
def test_iso_times(world: World, olga: dict[str, str]) -> None:
    since = datetime.fromtimestamp(START / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    until = datetime.fromtimestamp((START + 3 * MINUTE) / 1000, tz=UTC).isoformat()
    body = series(world, olga, f"points=flow_temp&since={since}&until={until.replace('+', '%2B')}")
    assert [r["ts"] for r in body["points"]["flow_temp"]] == [START + i * MINUTE for i in range(3)]


@pytest.mark.parametrize(
    "query",
    [
        "points=Flow-Temp",
        "since=2026-01-01T00:00:00",
        "since=yesterday",
        "since=2026-02-30T00:00:00Z",
        "step=0",
        "step=fortnight",
        "step=1000d",
        "max_points=0",
    ],
)
def test_bad_telemetry_queries_are_422(world: World, olga: dict[str, str], query: str) -> None:
    response = world.client.get(f"/api/v1/boilers/{DEV}/telemetry?{query}", headers=olga)
    problem(response, 422)


def test_an_unknown_point_is_422_naming_the_known_ones(world: World, olga: dict[str, str]) -> None:
    response = world.client.get(
        f"/api/v1/boilers/{DEV}/telemetry?points=flow_temp,flow_temperature", headers=olga
    )
    detail = problem(response, 422)["detail"]
    assert detail.startswith("unknown point flow_temperature; this boiler's points are ")
    assert "flow_temp" in detail and "ch_pressure" in detail


def test_well_formed_telemetry_queries_are_answered(world: World, olga: dict[str, str]) -> None:
    """A well-formed query is never refused: an empty range holds nothing, a step too fine
    for max_points is widened (the answer says which), points past 32 are named."""
    empty = series(world, olga, f"since={T0}&until={T0 - 1}")
    assert empty["points"] == {} and (empty["since"], empty["until"]) == (T0, T0 - 1)
    widened = series(world, olga, f"since={T0}&until={T0 + HOUR}&step=1s&max_points=100")
    assert widened["mode"] == "buckets" and widened["step"] == 60_000
    for n in range(40):  # points this boiler reported (its own register map's)
        world.value(DEV, f"p{n}", 1.0, T0)
    names = ",".join(f"p{n}" for n in range(40))
    many = series(world, olga, f"points={names}")
    assert many["omitted_points"] == [f"p{n}" for n in range(32, 40)]
    ancient = series(world, olga, "since=0000-01-01T00:00:00Z&until=1970-01-01T00:00:00.5Z")
    assert (ancient["since"], ancient["until"]) == (-62_167_219_200_000, 500)


def test_auto_step_is_round_and_bounded() -> None:
    assert auto_step(0, 30 * DAY, 1000) == 1 * HOUR
    assert auto_step(0, DAY, 1440) == MINUTE
    assert auto_step(0, 400 * DAY, 10) == 40 * DAY
    for span, limit in ((DAY, 7), (30 * DAY, 500), (HOUR, 3600)):
        assert -(-span // auto_step(0, span, limit)) <= limit


# --- thread ---------------------------------------------------------------------------------


def test_thread_pages_with_a_link_header(world: World, olga: dict[str, str]) -> None:
    with world.db() as session:
        for i in range(5):
            thread.record(
                session,
                device_id=DEV,
                kind="alarm" if i % 2 else "connectivity",
                ts_ms=T0 + i,
                recorded_ms=T0 + i,
                data={"i": i},
            )
    url: str | None = f"/api/v1/boilers/{DEV}/thread?limit=2"
    seen: list[dict[str, Any]] = []
    pages = 0
    while url is not None:
        response = world.client.get(url, headers=olga)
        assert response.status_code == 200, response.text
        body = response.json()
        seen.extend(body["events"])
        pages += 1
        link = response.headers.get("link")
        if body["next"] is None:
            assert link is None
            url = None
        else:
            assert link is not None and link.endswith('; rel="next"')
            url = link[1 : link.index(">")]
            assert f"after={body['next']}" in url
            assert "limit=2" in url
    assert pages == 3
    assert [e["kind"] for e in seen] == ["device"] + ["connectivity", "alarm"] * 2 + [
        "connectivity"
    ]
    assert [e["id"] for e in seen] == sorted(e["id"] for e in seen)
    alarms = world.client.get(f"/api/v1/boilers/{DEV}/thread?kind=alarm", headers=olga).json()
    assert [e["data"]["i"] for e in alarms["events"]] == [1, 3]
    both = world.client.get(f"/api/v1/boilers/{DEV}/thread?kind=alarm,device&limit=1", headers=olga)
    assert both.json()["events"][0]["kind"] == "device"
    assert "kind=alarm%2Cdevice" in both.headers["link"]


# --- ingest statistics ----------------------------------------------------------------------


def test_ingest_stats_for_staff_only(world: World, olga: dict[str, str]) -> None:
    world.twin(DEV, received=100, duplicates=3, lost_accounted=5)
    with world.db() as session:
        session.add(IngestCounter(outcome="accepted", reason="ok", count=100))
        session.add(IngestCounter(outcome="rejected", reason="bad_signature", count=2))
        for first, last, kind, resolved in (
            (10, 14, "accounted", None),
            (20, 20, "unexplained", None),
            (30, 32, "unexplained", T0),
        ):
            session.add(
                Gap(
                    device_id=DEV,
                    first_seq=first,
                    last_seq=last,
                    kind=kind,
                    reason="outbox_full" if kind == "accounted" else "missing",
                    detected_ms=T0,
                    resolved_ms=resolved,
                )
            )
    problem(world.client.get("/api/v1/ingest/stats", headers=olga), 403)
    world.user("sue", Role.SUPPORT)
    body = world.client.get("/api/v1/ingest/stats", headers=world.login("sue")).json()
    assert body["counters"] == [
        {"outcome": "accepted", "reason": "ok", "count": 100},
        {"outcome": "rejected", "reason": "bad_signature", "count": 2},
    ]
    assert body["fleet"] == {"boilers": 1, "received": 100, "duplicates": 3, "lost_accounted": 5}
    assert body["gaps"] == {
        "accounted": {"ranges": 1, "messages": 5},
        "unexplained_open": {"ranges": 1, "messages": 1},
        "unexplained_resolved": {"ranges": 1, "messages": 3},
    }
    delivery = twin(world, olga)["delivery"]
    assert delivery["unexplained_gaps"] == 1
