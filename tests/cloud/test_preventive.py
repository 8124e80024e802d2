"""A preventive visit from a leak warning, over the real API and database: one step from the
warning to the crowd, who may ask, and a verification that needs the precursor gone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from cloud.domain import Role
from cloud.errors import ConfigError
from cloud.models import Prediction, Sample
from cloud.predict.rules import packaged_rules
from cloud.predict.runner import PredictionState, Predictor, end_prediction
from cloud.registry import Location
from cloud.service.config import PlatformConfig
from cloud.settings import CloudSettings
from protocols.reference import BoilerStatus
from tests.cloud.api_helpers import HOUR, T0, World, world_for
from tests.cloud.portal_helpers import Visitor
from tests.cloud.predict_helpers import DAYS, hourly, readings
from tests.cloud.service_helpers import HOME, Portal, engineer

DEV = "boiler-leak"
VERIFY_S = 600.0
pytestmark = pytest.mark.usefixtures("db_url")


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(
        db_url, tmp_path, verify_normal_s=VERIFY_S, verify_timeout_s=2 * 86_400.0, newcomer_slots=0
    ) as w:
        w.user("olivia", Role.OWNER)
        w.user("otto", Role.OWNER)
        w.user("tom", Role.TENANT)
        w.user("sue", Role.SUPPORT)
        w.boiler(DEV, owner="olivia", tenant="tom", location=Location(*HOME), address="1 Mill St")
        hourly(w, DEV, leak_from_day=20)
        engineer(w, "eve", skills=("gas_safe", "hydraulics"), invitations=3, accepted=2)
        predictor = Predictor(
            w.sessions, packaged_rules(), lambda: T0 + 2 * HOUR, backfill_days=DAYS
        )
        predictor.run_due()
        yield w


@pytest.fixture
def portal(world: World) -> Portal:
    return Portal(world)


def warning_id(portal: Portal) -> int:
    (warning,) = portal.get("olivia", f"/boilers/{DEV}/predictions").json()["predictions"]
    assert warning["mode"] == "leak"
    return int(warning["id"])


def online(world: World) -> None:
    world.twin(
        DEV,
        connection="online",
        last_seen_ms=world.clock(),
        status=int(BoilerStatus.RUNNING),
        fault_code=0,
    )


def later(world: World, portal: Portal, ms: int, times: int = 1) -> None:
    """`times` over: `ms` later, the boiler heard from and running, the sweeper run (after a
    day or more, with fresh logins: the access tokens have expired)."""
    for _ in range(times):
        world.clock.advance(ms)
        if ms >= 86_400_000:
            portal.logins.clear()
        online(world)
        world.platform.sweep()


def contracted(portal: Portal, by: str = "olivia") -> dict[str, Any]:
    """The warning's preventive job raised by `by` (authorised by the owner if need be),
    answered by eve and given to her."""
    raised = portal.post(by, f"/predictions/{warning_id(portal)}/jobs")
    assert raised.status_code == 201, raised.text
    job: dict[str, Any] = raised.json()
    if job["state"] == "pending_authorization":
        approved = portal.post("olivia", f"/jobs/{job['id']}/authorize", {"approve": True})
        assert approved.status_code == 200, approved.text
    assert portal.answer("eve", job["id"]).status_code == 200
    assert portal.select("eve", job["id"]).status_code == 200
    return job


def complete(portal: Portal, job_id: str) -> None:
    report = {"cause": "weeping radiator valve", "actions": "replaced, refilled", "parts": []}
    done = portal.post("eve", f"/jobs/{job_id}/complete", report)
    assert done.status_code == 200, done.text


def after_visit(world: World, portal: Portal, job_id: str, pressure: float, hours: float) -> None:
    """`hours` of readings after the completion report at `pressure`, the twin running, and
    the sweeper after each half of it."""
    start = world.clock()
    for _ in range(2):
        world.clock.advance(int(hours * HOUR / 2))
        readings(world, DEV, start, world.clock(), pressure)
        start = world.clock() + 1
        online(world)
        world.platform.sweep()


def test_the_owner_books_a_visit_in_one_step(world: World, portal: Portal) -> None:
    prediction = warning_id(portal)
    raised = portal.post("olivia", f"/predictions/{prediction}/jobs", {"description": "Mornings"})
    assert raised.status_code == 201, raised.text
    job = raised.json()
    assert raised.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert (job["service_type"], job["problem"]) == ("preventive", "predicted_leak")
    assert job["state"] == "crowdsourcing", job
    assert job["description"].startswith("Preventive visit: a slow water leak, F22 forecast")
    assert job["description"].endswith(". Mornings")
    assert job["validation"]["outcome"] == "matched"
    assert job["validation"]["reason"].startswith("an active warning shows predicted leak: F22")
    assert job["analysis"]["skills"] == ["gas_safe", "hydraulics"]
    assert job["analysis"]["cost"] == 150.0  # preventive 60 + predicted_leak 90
    again = portal.post("olivia", f"/predictions/{prediction}/jobs")
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    warning = portal.get("olivia", f"/predictions/{prediction}").json()
    assert warning["job_id"] == job["id"] and warning["state"] == "active"
    invites = portal.get("eve", "/invitations").json()["items"]
    assert [i["job_id"] for i in invites] == [job["id"]]
    events = portal.get("olivia", f"/jobs/{job['id']}/thread").json()["events"]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "request" and kinds[-1] == "prediction", kinds
    assert events[-1]["data"] == {"event": "job_raised", "prediction": prediction, "job": job["id"]}
    assert events[0]["data"]["prediction"] == prediction
    assert events[0]["data"]["prediction_evidence"]["feature"] == "pressure_20"


def test_support_or_the_tenant_asks_and_the_owner_authorises(world: World, portal: Portal) -> None:
    prediction = warning_id(portal)
    raised = portal.post("sue", f"/predictions/{prediction}/jobs")
    assert raised.status_code == 201, raised.text
    job = raised.json()
    assert job["state"] == "pending_authorization"
    notes = portal.get("olivia", "/notifications").json()["items"]
    ask = next(n for n in notes if n["kind"] == "request_to_authorize")
    assert ask["title"] == "sue asks for a preventive visit at 1 Mill St"
    # The tenant asking now gets the same job: one open job per warning.
    same = portal.post("tom", f"/predictions/{prediction}/jobs")
    assert same.status_code == 200 and same.json()["id"] == job["id"]
    approved = portal.post("olivia", f"/jobs/{job['id']}/authorize", {"approve": True})
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "crowdsourcing"
    assert approved.json()["validation"]["ownership"] == "staff"


def test_a_declined_job_leaves_the_warning_free_for_another(portal: Portal) -> None:
    prediction = warning_id(portal)
    first = portal.post("tom", f"/predictions/{prediction}/jobs").json()
    no = portal.post("olivia", f"/jobs/{first['id']}/authorize", {"approve": False, "note": "no"})
    assert no.status_code == 200 and no.json()["state"] == "declined"
    second = portal.post("olivia", f"/predictions/{prediction}/jobs")
    assert second.status_code == 201 and second.json()["id"] != first["id"]


def test_who_may_not(world: World, portal: Portal) -> None:
    prediction = warning_id(portal)
    assert portal.post("otto", f"/predictions/{prediction}/jobs").status_code == 404
    assert portal.get("otto", f"/predictions/{prediction}").status_code == 404
    assert portal.post("eve", f"/predictions/{prediction}/jobs").status_code == 404
    assert portal.post("olivia", "/predictions/999999/jobs").status_code == 404
    assert portal.post("olivia", "/predictions/0/jobs").status_code == 422
    bad = portal.post("olivia", f"/predictions/{prediction}/jobs", {"service_type": "repair"})
    assert "service_type" in portal.refused(bad, 422)
    naive = {"preferred_time": "2026-12-24T10:00:00"}
    bad = portal.post("olivia", f"/predictions/{prediction}/jobs", naive)
    assert "time zone" in portal.refused(bad, 422)
    world.user("adam", Role.ADMIN)
    assert portal.post("adam", f"/predictions/{prediction}/jobs").status_code == 201


def test_an_ended_warning_books_nothing(world: World, portal: Portal) -> None:
    prediction = warning_id(portal)
    with world.db() as session:
        warning_row = session.get(Prediction, prediction)
        assert warning_row is not None
        end_prediction(session, warning_row, PredictionState.CLEARED, "condition_gone", T0)
    warning = portal.get("olivia", f"/predictions/{prediction}").json()
    assert warning["state"] == "cleared", warning
    refused = portal.post("olivia", f"/predictions/{prediction}/jobs")
    assert "has ended (condition_gone)" in portal.refused(refused, 409)


def test_a_repair_is_verified_once_the_pressure_holds_and_ends_the_warning(
    world: World, portal: Portal
) -> None:
    job = contracted(portal)
    complete(portal, job["id"])
    after_visit(world, portal, job["id"], pressure=1.45, hours=1.0)
    assert portal.state(job["id"]) == "verified"
    warning = portal.get("olivia", f"/predictions/{warning_id_any(portal)}").json()
    assert (warning["state"], warning["ended_reason"]) == ("cleared", "repair_verified")
    events = portal.get("olivia", f"/jobs/{job['id']}/thread").json()["events"]
    verification = next(e for e in events if e["kind"] == "verification")
    precursor = verification["data"]["evidence"]["precursor"]
    assert precursor["gone"] is True and precursor["feature"] == "pressure_20"
    assert precursor["value"] == pytest.approx(1.45, abs=0.01)
    assert precursor["limit"] == pytest.approx(precursor["baseline"] - 0.08, abs=1e-6)
    boiler = portal.get("olivia", f"/boilers/{DEV}/thread", kind="prediction").json()["events"]
    assert boiler[-1]["data"]["event"] == "cleared"
    assert boiler[-1]["data"]["reason"] == "repair_verified"
    assert boiler[-1]["actor"] == f"job:{job['id']}"


def warning_id_any(portal: Portal) -> int:
    everything = portal.get("olivia", f"/boilers/{DEV}/predictions", include_ended="true")
    (warning,) = everything.json()["predictions"]
    return int(warning["id"])


def test_a_repair_that_leaves_the_pressure_falling_fails_verification(
    world: World, portal: Portal
) -> None:
    job = contracted(portal, by="sue")
    complete(portal, job["id"])
    after_visit(world, portal, job["id"], pressure=0.85, hours=1.0)
    assert portal.state(job["id"]) == "completed"  # ran normally, but the leak is still there
    world.clock.advance(2 * 86_400_000)
    portal.logins.clear()  # the access tokens have expired
    readings(world, DEV, world.clock() - HOUR, world.clock(), 0.8)
    online(world)
    world.platform.sweep()
    body = portal.job("olivia", job["id"])
    assert body["state"] == "failed_verification"
    assert body["closed_reason"] == "still shows the warning's precursor after the repair"
    warning = portal.get("olivia", f"/predictions/{warning_id(portal)}").json()
    assert warning["state"] == "active" and warning["job_id"] == job["id"]


def test_no_readings_since_the_visit_leave_the_level_before_it(
    world: World, portal: Portal
) -> None:
    """Report by exception: nothing new since the report means the last level still holds,
    here the leak's low pressure, so the repair is not verified."""
    job = contracted(portal)
    complete(portal, job["id"])
    later(world, portal, int(VERIFY_S * 1000), times=3)
    assert portal.state(job["id"]) == "completed"
    later(world, portal, 2 * 86_400_000)
    body = portal.job("olivia", job["id"])
    assert body["closed_reason"] == "still shows the warning's precursor after the repair"
    events = portal.get("olivia", f"/jobs/{job['id']}/thread").json()["events"]
    precursor = next(e for e in events if e["kind"] == "verification")["data"]["evidence"]
    assert precursor["precursor"]["readings"] == 0
    assert precursor["precursor"]["value"] < precursor["precursor"]["limit"]


def test_a_refill_reported_before_the_completion_report_counts(
    world: World, portal: Portal
) -> None:
    job = contracted(portal)
    readings(world, DEV, world.clock() - 600_000, world.clock() - 300_000, pressure=1.5)
    complete(portal, job["id"])
    later(world, portal, int(VERIFY_S * 1000), times=2)
    assert portal.state(job["id"]) == "verified"


def test_with_no_data_at_all_nothing_is_proven(world: World, portal: Portal) -> None:
    job = contracted(portal)
    with world.db() as session:
        session.execute(delete(Sample).where(Sample.device_id == DEV))
    complete(portal, job["id"])
    later(world, portal, int(VERIFY_S * 1000), times=2)
    assert portal.state(job["id"]) == "completed"
    later(world, portal, 2 * 86_400_000)
    body = portal.job("olivia", job["id"])
    assert body["closed_reason"] == "sent too little data to show the warning's precursor gone"


def test_every_mode_the_detectors_know_can_be_booked(tmp_path: Path) -> None:
    config = PlatformConfig.from_settings(CloudSettings())
    modes = {m.name for m in config.detectors.modes}
    assert {f"predicted_{m}" for m in modes} <= set(config.rules.problems("preventive"))
    text = (Path(__file__).parents[2] / "cloud/service/rules.toml").read_text()
    without_fan = text.replace('"predicted_fan",', "")
    (tmp_path / "rules.toml").write_text(without_fan)
    with pytest.raises(ConfigError, match=r'warn of "fan".*predicted_fan'):
        PlatformConfig.from_settings(CloudSettings(service_rules_file=tmp_path / "rules.toml"))
    relaxed = CloudSettings(service_rules_file=tmp_path / "rules.toml", predict=False)
    assert PlatformConfig.from_settings(relaxed).rules.problems("preventive")


def test_the_portal_button_books_the_visit(world: World, portal: Portal) -> None:
    prediction = warning_id(portal)
    olivia = Visitor(world, "olivia")
    assert "Book a preventive visit" in olivia.text(f"/boilers/{DEV}")
    assert "Book a preventive visit" in Visitor(world, "sue").text(f"/boilers/{DEV}")
    where, said = olivia.submit(f"/predictions/{prediction}/job", description="Key under mat")
    job_id = portal.get("olivia", f"/predictions/{prediction}").json()["job_id"]
    assert where == f"/jobs/{job_id}"
    assert said.startswith("info:Request validated against its warning")
    job = portal.job("olivia", job_id)
    assert job["service_type"] == "preventive" and job["description"].endswith("Key under mat")
    page = olivia.text(f"/boilers/{DEV}")
    assert "A preventive visit is booked: see the job" in page
    assert "Book a preventive visit" not in page
    where, said = olivia.submit(f"/predictions/{prediction}/job")
    assert where == f"/jobs/{job_id}" and said.startswith("info:A visit was already booked")
    assert Visitor(world, "otto").post(f"/predictions/{prediction}/job").status_code == 404
    assert olivia.post("/predictions/nope/job").status_code == 404


def test_after_a_verified_repair_the_old_trend_raises_nothing(world: World, portal: Portal) -> None:
    job = contracted(portal)
    complete(portal, job["id"])
    after_visit(world, portal, job["id"], pressure=1.45, hours=1.0)
    assert portal.state(job["id"]) == "verified"
    end = T0 + 4 * 86_400_000
    readings(world, DEV, world.clock(), end, pressure=1.45)
    world.twin(DEV, last_seen_ms=end)
    later = Predictor(world.sessions, packaged_rules(), lambda: end + 2 * HOUR)
    assert later.run_due() >= 3
    assert later.stats.raised == 0
    assert portal.get("olivia", f"/boilers/{DEV}/predictions").json()["predictions"] == []
