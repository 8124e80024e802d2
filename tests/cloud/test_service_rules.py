"""Service platform rules in-process: validation, analysis, crowdsourcing, answers and the
deadline, shortlist ranking, verification, the engineer's figures (eqs. 15-17), annual-check
reminders and the boiler's alarm notifications. Expected figures are worked out by hand."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloud.alarms import apply_event
from cloud.domain import Role
from cloud.models import Notification, Reminder
from cloud.registry import Location
from cloud.service import reminders
from protocols.messages import Event, EventKind
from protocols.reference import BoilerStatus
from tests.cloud.api_helpers import T0, World, world_for
from tests.cloud.service_helpers import (
    DEV,
    HOME,
    Portal,
    blocked,
    engineer,
    lockout_boiler,
    online_lockout,
    running,
)

pytestmark = pytest.mark.usefixtures("db_url")

COST = 200.0
"""The F28 repair's estimate: repair 120 + live fault F28 80 (rules.toml)."""
SECOND = 1000


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(
        db_url, tmp_path, verify_normal_s=60.0, newcomer_slots=0, invite_fraction=1.0
    ) as w:
        lockout_boiler(w)
        yield w


@pytest.fixture
def portal(world: World) -> Portal:
    return Portal(world)


# --- Validation (b) and analysis ----------------------------------------------------------


def test_running_boiler_flags_no_heating_until_the_owner_confirms(portal: Portal) -> None:
    engineer(portal.world, "eve")
    running(portal.world)
    job_id = portal.raise_job("tom")["id"]
    flagged = portal.post("olivia", f"/jobs/{job_id}/authorize", {"approve": True})
    assert flagged.json()["state"] == "flagged"
    validation = flagged.json()["validation"]
    assert validation["outcome"] == "status_mismatch"
    assert validation["evidence"]["status_label"] == "running"
    assert "running" in validation["reason"]
    assert portal.event(job_id, "validation")["data"]["outcome"] == "status_mismatch"
    assert portal.told("olivia", "request_flagged", job_id)
    assert portal.told("tom", "request_flagged", job_id)
    assert portal.get("eve", "/invitations").json()["items"] == []
    path = f"/jobs/{job_id}/confirm"
    assert portal.refused(portal.post("olivia", path, {"note": " "}), 422)
    assert "owner or support" in portal.refused(portal.post("tom", path, {"note": "cold!"}), 403)
    confirmed = portal.post("olivia", path, {"note": "tenant says radiators are cold"})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["state"] == "crowdsourcing"
    kinds = [e["kind"] for e in portal.thread(job_id)]
    assert kinds[-2:] == ["validation", "crowdsourcing"]
    assert portal.event(job_id, "validation")["data"]["step"] == "confirmation"
    assert portal.invited(job_id) == ["eve"]


@pytest.mark.parametrize("connection", ["offline", "stale", "unknown"])
def test_unreachable_boiler_is_unverified_and_support_may_confirm(
    portal: Portal, connection: str
) -> None:
    world = portal.world
    world.user("sue", Role.SUPPORT)
    stale_ms = int(world.settings.stale_after_s * 1000)
    twins: dict[str, dict[str, Any]] = {
        "offline": {"connection": "offline"},
        "stale": {"connection": "online", "last_seen_ms": T0 - stale_ms - 1},
        "unknown": {"connection": "unknown", "last_seen_ms": None},
    }
    world.twin(DEV, **twins[connection])
    job = portal.raise_job("olivia")
    assert job["state"] == "flagged"
    assert job["validation"]["outcome"] == "unverified_offline"
    assert job["validation"]["evidence"]["connectivity"] == connection
    confirmed = portal.post("sue", f"/jobs/{job['id']}/confirm", {"note": "phoned the owner"})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["state"] == "no_engineers"  # nobody registered yet


@pytest.mark.parametrize(("service_type", "problem"), [("repair", "noise"), ("annual_check",) * 2])
def test_problem_boiler_data_cannot_show_goes_ahead(
    portal: Portal, service_type: str, problem: str
) -> None:
    world = portal.world
    world.twin(DEV, connection="offline", status=int(BoilerStatus.STANDBY), fault_code=0)
    engineer(world, "eve", skills=("gas_safe", "boiler_repair", "annual_check"))
    job = portal.raise_job("olivia", service_type=service_type, problem=problem)
    assert job["validation"]["outcome"] == "not_observable"
    assert job["state"] == "crowdsourcing"
    assert portal.invited(job["id"]) == ["eve"]


def test_analysis_is_recorded_on_the_job(portal: Portal) -> None:
    job = portal.raise_job("olivia")
    analysis = job["analysis"]
    assert set(analysis["skills"]) == {"gas_safe", "boiler_repair", "gas", "ignition"}
    assert analysis["urgency"] == "urgent"  # F28 with outdoor 2 °C < 5 °C: cold rule
    assert analysis["complexity"] == "high"
    assert analysis["cost"] == COST
    assert any(r.startswith("cold:") for r in analysis["reasons"])
    assert portal.event(job["id"], "analysis")["data"] == analysis
    portal.world.value(DEV, "outdoor_temp", 12.0, T0)
    warm = portal.raise_job("olivia")["analysis"]
    assert warm["urgency"] == "high"  # F28 and no_heating, but not cold
    assert warm["cost"] == COST


# --- Crowdsourcing -------------------------------------------------------------------------


def test_constraints_and_the_top_ten_percent(db_url: str, tmp_path: Path) -> None:
    with world_for(db_url, tmp_path, newcomer_slots=0) as world:  # invite_fraction 0.1
        lockout_boiler(world)
        portal = Portal(world)
        scored: dict[str, Any] = {"evaluated": 2, "cs_sum": 8.0, "sq_sum": 8.0}  # CS = SQ = 4
        for n in range(1, 12):
            accepted = 9 if n <= 3 else 5
            prices: dict[str, Any] = {"prices": {"repair": 250.0}} if n == 4 else {}
            engineer(world, f"e{n:02}", invitations=10, accepted=accepted, **scored, **prices)
        best: dict[str, Any] = {"invitations": 10, "accepted": 10, **scored}
        engineer(world, "nosk", skills=("gas_safe", "boiler_repair", "gas"), **best)
        engineer(world, "far", at=(51.5074, -0.1278), **best)  # London
        engineer(world, "dear", prices={"repair": 300.0}, **best)
        engineer(world, "away", **best)
        engineer(world, "slow", invitations=10, accepted=2, **scored)
        path, pause = "/engineers/away/availability", {"available": False}
        assert portal.refused(portal.put("e01", path, pause), 403)
        assert portal.put("away", path, pause).json() == {"id": "away", "available": False}
        job = portal.raise_job("olivia", min_performance=0.7)
        assert job["state"] == "crowdsourcing"
        # Pool of constraints 1-3: e01..e11 and slow; CS* = SQ* = 1 (no spread), so
        # W = 0.5 AR + 0.2 + 0.3: 0.95 for AR 0.9, 0.75 for AR 0.5, 0.6 for slow (< 0.7).
        # 11 eligible: ceil(0.1 * 11) = 2 invited, e01 and e02 (e03 ties, loses on id).
        assert portal.invited(job["id"]) == ["e01", "e02"]
        data = portal.event(job["id"], "crowdsourcing")["data"]
        failed = ("skills", "radius", "price", "unavailable", "performance")
        assert data["failed_by_constraint"] == dict.fromkeys(failed, 1)
        assert (data["considered"], data["pool_size"], data["top_k"]) == (16, 11, 2)
        assert data["task"] == {
            "skills": ["boiler_repair", "gas", "gas_safe", "ignition"],
            "cost": COST,
            "min_performance": 0.7,
        }
        assert [(f["engineer_id"], f["performance"], f["ar"]) for f in data["invited"]] == [
            ("e01", 0.95, 0.9),
            ("e02", 0.95, 0.9),
        ]
        for figures in data["invited"]:
            assert figures["cs_norm"] == figures["sq_norm"] == 1.0
            assert figures["reason"] == "top"
            assert figures["distance_km"] < 30
        rows = portal.get("olivia", f"/jobs/{job['id']}/invitations").json()["items"]
        assert [(r["engineer_id"], r["performance"]) for r in rows] == [
            ("e01", 0.95),
            ("e02", 0.95),
        ]
        assert rows[0]["figures"]["performance"] == 0.95
        for name in ("e03", "nosk", "far", "dear", "away", "slow"):
            assert portal.get(name, "/invitations").json()["items"] == []


def test_nobody_eligible_then_the_owner_retries(portal: Portal) -> None:
    engineer(portal.world, "nosk", skills=("gas_safe", "boiler_repair"))
    job_id = portal.raise_job("tom")["id"]
    approved = portal.post("olivia", f"/jobs/{job_id}/authorize", {"approve": True})
    assert approved.json()["state"] == "no_engineers"
    data = portal.event(job_id, "crowdsourcing")["data"]
    assert data["invited"] == []
    assert data["failed_by_constraint"] == {"skills": 1}
    assert portal.told("olivia", "no_engineers", job_id)
    assert portal.told("tom", "no_engineers", job_id)
    path = f"/jobs/{job_id}/confirm"
    assert portal.refused(portal.post("tom", path), 403)
    engineer(portal.world, "eve")
    retried = portal.post("olivia", path)
    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] == "crowdsourcing"
    assert portal.invited(job_id) == ["eve"]


# --- Answers and the deadline --------------------------------------------------------------


def test_answer_rules(portal: Portal) -> None:
    world = portal.world
    engineer(world, "eve")
    engineer(world, "eddie")
    engineer(world, "ellen", at=(51.5074, -0.1278))
    job_id = portal.crowdsourced()
    assert portal.invited(job_id) == ["eddie", "eve"]
    path = f"/jobs/{job_id}/response"
    portal.refused(portal.answer("ellen", job_id), 404)
    assert "quote" in portal.refused(portal.post("eve", path, {"available": True}), 422)
    no_place = {"available": True, "quote": 180.0}
    assert "location" in portal.refused(portal.post("eve", path, no_place), 422)
    assert "invited engineers" in portal.refused(portal.answer("olivia", job_id), 403)
    assert portal.answer("eve", job_id).status_code == 200
    assert portal.refused(portal.answer("eve", job_id), 409)
    due = portal.job("olivia", job_id)["responses_due"]
    assert due == T0 + int(world.settings.response_window_s * 1000)
    world.clock.now = due + 1
    assert "deadline" in portal.refused(portal.decline("eddie", job_id), 409)
    assert portal.state(job_id) == "crowdsourcing"


def test_deadline_sweep_expires_the_silent_and_shortlists_the_rest(portal: Portal) -> None:
    world = portal.world
    engineer(world, "eve", invitations=4, accepted=3)
    engineer(world, "eddie", invitations=2, accepted=1)
    job_id = portal.crowdsourced()
    assert portal.answer("eve", job_id).status_code == 200
    assert world.platform.sweep()["rounds_closed"] == []
    world.clock.now = portal.job("olivia", job_id)["responses_due"]
    assert world.platform.sweep()["rounds_closed"] == [job_id]
    assert portal.state(job_id) == "shortlisted"
    short = portal.get("olivia", f"/jobs/{job_id}/shortlist").json()
    assert [c["engineer_id"] for c in short["candidates"]] == ["eve"]
    rows = portal.get("olivia", f"/jobs/{job_id}/invitations").json()["items"]
    assert {r["engineer_id"]: r["state"] for r in rows} == {"eve": "accepted", "eddie": "expired"}
    # Eq. 17: AR+ = (accepted + [answered available]) / (invitations + 1).
    eddie = portal.profile("eddie")
    assert eddie["history"]["invitations"] == 3
    assert eddie["history"]["accepted"] == 1
    assert eddie["figures"]["ar"] == round(1 / 3, 4)
    eve = portal.profile("eve")
    assert (eve["history"]["invitations"], eve["history"]["accepted"]) == (5, 4)
    assert eve["figures"]["ar"] == 0.8
    expired = [e["data"] for e in portal.thread(job_id) if e["kind"] == "response"][-1]
    assert expired == {"engineer": "eddie", "available": False, "expired": True}
    assert portal.told("olivia", "shortlist_ready", job_id)
    assert world.platform.sweep()["rounds_closed"] == []


def test_everyone_declining_means_no_engineers(portal: Portal) -> None:
    engineer(portal.world, "eve", invitations=1, accepted=1)
    engineer(portal.world, "eddie")
    job_id = portal.crowdsourced()
    assert portal.decline("eve", job_id).status_code == 200
    assert portal.decline("eddie", job_id).status_code == 200
    assert portal.state(job_id) == "no_engineers"
    assert portal.event(job_id, "shortlist")["data"]["candidates"] == []
    assert portal.told("olivia", "no_engineers", job_id)
    eve = portal.profile("eve")["history"]
    assert (eve["invitations"], eve["accepted"]) == (2, 1)


# --- Shortlist ranking ---------------------------------------------------------------------


def test_shortlist_ranks_by_principle(portal: Portal) -> None:
    answers = {"ann": (150.0, 12.0), "bob": (210.0, 1.0), "cat": (260.0, 5.0)}  # quote, km
    for name in answers:
        engineer(portal.world, name)
    job_id = portal.crowdsourced(principle="low_cost")
    for name, (quote, km) in answers.items():
        assert portal.answer(name, job_id, quote=quote, km=km).status_code == 200

    def ranking(principle: str | None) -> list[tuple[str, float]]:
        params = {"principle": principle} if principle else {}
        body = portal.get("olivia", f"/jobs/{job_id}/shortlist", **params).json()
        assert body["principle"] == (principle or "low_cost")
        return [(c["engineer_id"], c["rank_pct"]) for c in body["candidates"]]

    # low carbon, nearest first: 1, 5, 12 km -> 0, (5-1)/(12-1), 100 %.
    assert ranking("low_carbon") == [("bob", 0.0), ("cat", 36.3636), ("ann", 100.0)]
    # low cost, quote nearest 200: gaps 10, 50, 60 -> 0, 40/50, 100 %.
    assert ranking("low_cost") == [("bob", 0.0), ("ann", 80.0), ("cat", 100.0)]
    assert ranking(None) == ranking("low_cost")
    # cheapest: 150, 210, 260 -> 0, 60/110, 100 %.
    assert ranking("cheapest") == [("ann", 0.0), ("bob", 54.5455), ("cat", 100.0)]
    bob = portal.get("olivia", f"/jobs/{job_id}/shortlist").json()["candidates"][0]
    assert bob["distance_km"] == 1.0
    assert bob["travel_min"] == 1.95  # 1 km x 1.3 road at 40 km/h
    assert bob["co2_kg"] == 0.442  # there and back: 2 x 1.3 km x 0.17 kg/km
    assert bob["quote_gap"] == 10.0
    recorded = portal.event(job_id, "shortlist")["data"]
    assert recorded["principle"] == "low_cost"
    assert [c["engineer_id"] for c in recorded["candidates"]] == ["bob", "ann", "cat"]
    chosen = portal.post(
        "olivia", f"/jobs/{job_id}/select", {"engineer_id": "ann", "principle": "cheapest"}
    )
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["contract"]["principle"] == "cheapest"
    assert chosen.json()["contract"]["rank"]["position"] == 1


# --- Verification --------------------------------------------------------------------------


def completed(portal: Portal, engineer_id: str = "eve") -> str:
    """A job `engineer_id` (created here) is contracted on and has reported done."""
    engineer(portal.world, engineer_id)
    job_id = portal.contracted(engineer_id)
    assert portal.complete(engineer_id, job_id).status_code == 200
    return job_id


def test_normal_running_for_long_enough_verifies(portal: Portal) -> None:
    world = portal.world
    job_id = completed(portal)
    running(world)
    world.platform.sweep()
    world.clock.now += 59 * SECOND
    running(world)
    assert world.platform.sweep()["verification"] == []
    assert portal.state(job_id) == "completed"
    world.clock.now += SECOND
    running(world)
    assert world.platform.sweep()["verification"] == [(job_id, "verified")]
    data = portal.event(job_id, "verification")["data"]
    assert data["outcome"] == "verified"
    assert data["normal_for_s"] == 60.0
    assert data["evidence"]["status"] == "running"
    assert data["evidence"]["connectivity"] == "online"
    for user in ("olivia", "eve"):
        assert len(portal.told(user, "verified", job_id)) == 1
    [evaluate] = portal.told("tom", "evaluate", job_id)
    assert len(evaluate["data"]["evaluation_token"]) >= 20


def test_new_lockout_after_completion_fails_verification(portal: Portal) -> None:
    world = portal.world
    job_id = completed(portal)
    running(world)
    world.platform.sweep()
    world.alarm(DEV, "lockout", 28, T0 + 10 * SECOND, None)
    world.clock.now += 20 * SECOND
    online_lockout(world)
    world.platform.sweep()
    assert portal.state(job_id) == "failed_verification"
    data = portal.event(job_id, "verification")["data"]
    assert data["outcome"] == "failed"
    assert "locked out again" in data["because"]
    assert data["evidence"]["lockout"] == {"fault": "F28", "since": T0 + 10 * SECOND}
    for user in ("olivia", "tom", "eve"):
        assert len(portal.told(user, "failed_verification", job_id)) == 1


def test_never_running_normally_fails_verification_at_the_timeout(portal: Portal) -> None:
    world = portal.world
    job_id = completed(portal)
    timeout = int(world.settings.verify_timeout_s * 1000)
    world.clock.now = T0 + timeout
    online_lockout(world)
    assert world.platform.sweep()["verification"] == []
    world.clock.now += 1
    online_lockout(world)
    world.platform.sweep()
    portal.logins.clear()  # a week on: log in again
    assert portal.state(job_id) == "failed_verification"
    assert "never ran normally" in portal.event(job_id, "verification")["data"]["because"]


def test_going_abnormal_restarts_the_normal_timer(portal: Portal) -> None:
    world = portal.world
    job_id = completed(portal)
    for seconds, state in ((0, running), (40, blocked), (80, running), (130, running)):
        world.clock.now = T0 + seconds * SECOND
        state(world)
        world.platform.sweep()
        assert portal.state(job_id) == "completed", seconds
    assert portal.job("olivia", job_id)["normal_since"] == T0 + 80 * SECOND
    world.clock.now = T0 + 140 * SECOND
    running(world)
    world.platform.sweep()
    assert portal.state(job_id) == "verified"


# --- The engineer's figures after the job --------------------------------------------------


def test_answer_and_evaluation_update_ar_cs_and_sq(portal: Portal) -> None:
    engineer(portal.world, "eve", invitations=4, accepted=3, evaluated=2, cs_sum=9.0, sq_sum=8.0)
    job_id = portal.contracted("eve")
    assert portal.profile("eve")["figures"]["ar"] == (3 + 1) / (4 + 1)  # eq. 17
    assert portal.complete("eve", job_id).status_code == 200
    portal.verify(job_id)
    token = portal.told("tom", "evaluate", job_id)[0]["data"]["evaluation_token"]
    rated = portal.post("tom", f"/jobs/{job_id}/evaluation", {"token": token, "cs": 5, "sq": 2})
    assert rated.status_code == 200, rated.text
    cs, sq, n = 9.0 / 2, 8.0 / 2, 2  # before: the means over 2 evaluated jobs
    after_cs, after_sq = (cs * n + 5) / (n + 1), (sq * n + 2) / (n + 1)  # eqs. 15-16
    assert rated.json() == {
        "before": {"cs": 4.5, "sq": 4.0, "evaluated": 2},
        "after": {"cs": pytest.approx(after_cs), "sq": pytest.approx(after_sq), "evaluated": 3},
    }
    assert (round(after_cs, 4), round(after_sq, 4)) == (4.6667, 3.3333)
    profile = portal.profile("eve")
    history = profile["history"]
    assert (history["evaluated"], history["cs_sum"], history["sq_sum"]) == (3, 14.0, 10.0)
    assert profile["figures"]["cs"] == round(after_cs, 3)
    assert profile["figures"]["sq"] == round(after_sq, 3)
    assert profile["prices"] == {"repair": {"average": 190.0, "jobs": 1}}


# --- Annual-check reminders ----------------------------------------------------------------


def test_annual_check_reminder_is_sent_once_fourteen_days_ahead(portal: Portal) -> None:
    world = portal.world
    today = dt.datetime.fromtimestamp(T0 / 1000, dt.UTC).date()
    assert world.settings.reminder_lead_days == 14
    world.user("oscar", Role.OWNER)
    world.user("tina", Role.TENANT)
    due = today + dt.timedelta(days=14)
    for device_id, days in (("boiler-due", 14), ("boiler-later", 15)):
        install = (today + dt.timedelta(days=days)).replace(year=2019).isoformat()
        world.boiler(device_id, owner="oscar", tenant="tina", install_date=install)
    assert world.platform.sweep()["reminders"] == [("boiler-due", due.isoformat())]
    for user in ("tina", "oscar"):
        [told] = portal.told(user, "annual_check_due")
        assert told["device_id"] == "boiler-due"
        assert told["data"] == {"due": due.isoformat(), "service_type": "annual_check"}
    assert portal.told("olivia", "annual_check_due") == []
    assert world.platform.sweep()["reminders"] == []
    assert len(portal.told("tina", "annual_check_due")) == 1
    world.clock.now += 86_400_000
    assert world.platform.sweep()["reminders"] == [
        ("boiler-later", (due + dt.timedelta(1)).isoformat())
    ]


def test_annual_check_for_a_29_february_installation(world: World) -> None:
    leap = dt.date(2024, 2, 29)
    assert reminders.anniversary(leap, 2027) == dt.date(2027, 2, 28)
    assert reminders.anniversary(leap, 2028) == dt.date(2028, 2, 29)
    assert reminders.next_due(leap, dt.date(2024, 3, 1)) == dt.date(2025, 2, 28)
    assert reminders.next_due(leap, dt.date(2027, 3, 1)) == dt.date(2028, 2, 29)
    world.user("lee", Role.OWNER)
    world.boiler("boiler-leap", owner="lee", install_date=leap.isoformat())
    at = dt.datetime(2027, 2, 13, 9, tzinfo=dt.UTC)  # 15 days before 28 February
    with world.db() as session:
        assert reminders.send_reminders(session, int(at.timestamp() * 1000), 14) == []
    at += dt.timedelta(days=1)
    with world.db() as session:
        sent = reminders.send_reminders(session, int(at.timestamp() * 1000), 14)
        assert sent == [("boiler-leap", "2027-02-28")]
    with world.db() as session:
        assert session.get(Reminder, ("boiler-leap", "2027-02-28")) is not None
        rows = session.scalars(select(Notification).where(Notification.user_id == "lee")).all()
        assert [(n.kind, n.data["due"]) for n in rows] == [("annual_check_due", "2027-02-28")]


# --- Alarm notifications from ingest -------------------------------------------------------


def ingest(world: World, seq: int, kind: EventKind, dev: str = DEV, **detail: Any) -> None:
    """Apply a device event as ingest does."""
    message = Event(dev=dev, epoch=1, seq=seq, ts=T0 + seq, sync=True, kind=kind, detail=detail)
    with world.db() as session:
        apply_event(session, message, world.clock())


def test_a_new_alarm_episode_tells_the_end_user_once(portal: Portal) -> None:
    world = portal.world
    f28: dict[str, Any] = {"fault_code": 28, "fault": "F28"}
    ingest(world, 2, EventKind.LOCKOUT, **f28)  # the open episode (seq 1), re-reported
    ingest(world, 3, EventKind.FAULT, **f28)
    assert portal.told("tom", "boiler_alarm") == []
    ingest(world, 4, EventKind.STATE_CHANGE, change="lockout_cleared")
    ingest(world, 5, EventKind.LOCKOUT, **f28)
    for user in ("tom", "olivia"):
        [told] = portal.told(user, "boiler_alarm")
        assert told["device_id"] == DEV
        assert "F28" in told["title"]
        assert told["data"] == {"kind": "lockout", "fault": "F28", "since": T0 + 5}
    ingest(world, 6, EventKind.LOCKOUT, **f28)
    ingest(world, 8, EventKind.STATE_CHANGE, change="lockout_cleared")
    ingest(world, 11, EventKind.STATE_CHANGE, change="lockout_cleared")
    ingest(world, 10, EventKind.LOCKOUT, **f28)  # its close (seq 11) came first: over already
    assert len(portal.told("tom", "boiler_alarm")) == 1
    world.user("lee", Role.OWNER)
    world.boiler("boiler-own", owner="lee", location=Location(*HOME))
    ingest(world, 1, EventKind.FAULT, dev="boiler-own", fault_code=22, fault="F22")
    assert [n["data"]["kind"] for n in portal.told("lee", "boiler_alarm")] == ["fault"]
