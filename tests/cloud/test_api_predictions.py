"""A leaking boiler's warning through the API and the portal: who sees it, where, and why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.domain import Role
from cloud.predict.rules import packaged_rules
from cloud.predict.runner import Predictor
from tests.cloud.api_helpers import HOUR, T0, World, world_for
from tests.cloud.portal_helpers import Visitor
from tests.cloud.predict_helpers import DAYS, hourly

DEV = "boiler-leak"
CALM = "boiler-calm"


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(db_url, tmp_path) as w:
        w.user("olga", Role.OWNER)
        w.user("otto", Role.OWNER)
        w.user("sue", Role.SUPPORT)
        w.boiler(DEV, owner="olga")
        w.boiler(CALM, owner="otto")
        hourly(w, DEV, leak_from_day=20)
        hourly(w, CALM, leak_from_day=None)
        predictor = Predictor(
            w.sessions, packaged_rules(), lambda: T0 + 2 * HOUR, backfill_days=DAYS
        )
        assert predictor.run_due() == DAYS
        yield w


def test_the_owner_and_support_see_the_warning_with_its_reasons(world: World) -> None:
    response = world.client.get(f"/api/v1/boilers/{DEV}/predictions", headers=world.login("olga"))
    assert response.status_code == 200, response.text
    (warning,) = response.json()["predictions"]
    assert warning["mode"] == "leak" and warning["fault"] == "F22"
    assert warning["fault_text"] == "low water pressure"
    assert warning["state"] == "active" and warning["model_version"] == "pm-1"
    assert 0 < warning["days_to_fault"] < 15
    assert warning["days_low"] <= warning["days_to_fault"] <= warning["days_high"]
    assert warning["evidence"]["slope_per_day"] == pytest.approx(-0.06, abs=0.01)
    twin = world.client.get(f"/api/v1/boilers/{DEV}", headers=world.login("olga")).json()
    assert [p["mode"] for p in twin["predictions"]] == ["leak"]
    assert any(a["kind"] == "predicted" and a["open"] for a in twin["alarms"])
    calm = world.client.get(f"/api/v1/boilers/{CALM}/predictions", headers=world.login("otto"))
    assert calm.json()["predictions"] == []


def test_nobody_else_sees_it(world: World) -> None:
    other = world.client.get(f"/api/v1/boilers/{DEV}/predictions", headers=world.login("otto"))
    assert other.status_code == 404
    fleet = world.client.get("/api/v1/fleet/at-risk", headers=world.login("olga"))
    assert fleet.status_code == 403


def test_the_fleet_at_risk_list_and_the_portal_pages(world: World) -> None:
    fleet = world.client.get("/api/v1/fleet/at-risk", headers=world.login("sue")).json()
    assert fleet["boilers"] == 1
    assert [w["device_id"] for w in fleet["warnings"]] == [DEV]
    sue = Visitor(world, "sue")
    page = sue.text("/fleet")
    assert "1 at risk" in page and "A slow water leak (F22: low water pressure)" in page
    boiler = Visitor(world, "olga").text(f"/boilers/{DEV}")
    assert "Warnings: faults on the way" in boiler
    assert "low water pressure expected in about" in boiler
    assert "Fault warning" in boiler  # the thread says it was raised
    assert "Warnings: faults on the way" not in Visitor(world, "otto").text(f"/boilers/{CALM}")
