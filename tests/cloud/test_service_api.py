"""Service platform API in-process: who may do what, and who may see what.

Each role's allowed and forbidden actions, over the real API and database: raising and
authorising requests, seeing jobs and notifications, the shortlist and the choice, the
engineer's restart rule, completion, the job's thread and the evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.domain import Role
from cloud.models import Device
from cloud.registry import Location
from tests.cloud.api_helpers import World, problem, world_for
from tests.cloud.service_helpers import (
    DEV,
    HOME,
    REPAIR,
    Portal,
    engineer,
    lockout_boiler,
)

pytestmark = pytest.mark.usefixtures("db_url")

OTHER = "boiler-m2"
"""A second boiler: owner oscar, tenant tina."""


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


def other_boiler(world: World) -> None:
    """Owner oscar and tenant tina, with a boiler of their own next door."""
    world.user("oscar", Role.OWNER)
    world.user("tina", Role.TENANT)
    world.boiler(OTHER, owner="oscar", tenant="tina", location=Location(*HOME))
    world.twin(OTHER, connection="online", last_seen_ms=world.clock(), status=0, fault_code=0)


# --- Raising and authorising -------------------------------------------------------------


def test_tenant_request_waits_for_the_owner_who_is_told(portal: Portal) -> None:
    engineer(portal.world, "eve")
    job = portal.raise_job("tom", description="radiators cold")
    assert job["state"] == "pending_authorization"
    assert job["requested_by"] == "tom"
    asked = portal.told("olivia", "request_to_authorize", job["id"])
    assert len(asked) == 1
    assert asked[0]["device_id"] == DEV
    assert portal.told("tom", "request_to_authorize") == []
    assert portal.get("eve", "/invitations").json()["items"] == []
    [request] = portal.thread(job["id"])
    assert request["kind"] == "request"
    assert request["actor"] == "user:tom"
    assert request["data"]["role"] == "tenant"
    assert [a["fault"] for a in request["data"]["open_alarms"]] == ["F28", "F28"]
    assert request["data"]["twin"]["status_label"] == "lockout"


def test_only_the_owner_authorises(portal: Portal) -> None:
    world = portal.world
    engineer(world, "eve")
    other_boiler(world)
    world.user("sue", Role.SUPPORT)
    world.user("ada", Role.ADMIN)
    job_id = portal.raise_job("tom")["id"]
    path, yes = f"/jobs/{job_id}/authorize", {"approve": True}
    assert "owner" in portal.refused(portal.post("tom", path, yes), 403)
    assert "owner" in portal.refused(portal.post("sue", path, yes), 403)
    assert "owner" in portal.refused(portal.post("ada", path, yes), 403)
    portal.refused(portal.post("oscar", path, yes), 404)
    portal.refused(portal.post("tina", path, yes), 404)
    portal.refused(portal.post("eve", path, yes), 404)
    assert portal.state(job_id) == "pending_authorization"
    approved = portal.post("olivia", path, yes | {"note": "go ahead"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["authorized_by"] == "olivia"
    assert approved.json()["state"] == "crowdsourcing"
    assert "authoris" in portal.refused(portal.post("olivia", path, yes), 409)


def test_owner_declines_and_the_tenant_is_told(portal: Portal) -> None:
    engineer(portal.world, "eve")
    job_id = portal.raise_job("tom")["id"]
    no = {"approve": False, "note": "I will call my own plumber"}
    declined = portal.post("olivia", f"/jobs/{job_id}/authorize", no)
    assert declined.status_code == 200, declined.text
    assert declined.json()["state"] == "declined"
    assert declined.json()["closed_reason"] == "I will call my own plumber"
    [told] = portal.told("tom", "request_declined", job_id)
    assert told["body"] == "I will call my own plumber"
    assert portal.get("eve", "/invitations").json()["items"] == []
    assert [e["kind"] for e in portal.thread(job_id)] == ["request", "authorization"]


def test_owner_request_is_validated_and_crowdsourced_at_once(portal: Portal) -> None:
    engineer(portal.world, "eve")
    job = portal.raise_job("olivia")
    assert job["state"] == "crowdsourcing"
    assert job["authorized_by"] == "olivia"
    assert job["validation"]["outcome"] == "matched"
    assert portal.told("olivia", "request_to_authorize") == []
    kinds = [e["kind"] for e in portal.thread(job["id"])]
    assert kinds == ["request", "authorization", "validation", "analysis", "crowdsourcing"]
    [invite] = portal.get("eve", "/invitations").json()["items"]
    assert invite["job_id"] == job["id"]
    assert invite["state"] == "open"
    assert portal.told("eve", "invitation", job["id"])


def test_staff_and_engineers_may_not_raise_requests(portal: Portal) -> None:
    for role in (Role.SUPPORT, Role.ADMIN, Role.ENGINEER):
        portal.world.user(role.value, role)
        response = portal.post(role.value, "/jobs", REPAIR)
        assert "may not raise a service request" in portal.refused(response, 403)
    assert portal.get("olivia", "/jobs").json()["items"] == []


def test_someone_elses_boiler_is_not_found_and_the_attempt_is_recorded(portal: Portal) -> None:
    other_boiler(portal.world)
    portal.refused(portal.post("oscar", "/jobs", REPAIR), 404)
    portal.refused(portal.post("tina", "/jobs", REPAIR), 404)
    portal.refused(portal.post("tina", "/jobs", REPAIR | {"device_id": "boiler-none"}), 404)
    events = portal.get("olivia", f"/boilers/{DEV}/thread", kind="validation").json()["events"]
    assert [(e["actor"], e["data"]) for e in events] == [
        ("user:oscar", {"step": "ownership", "outcome": "not_owner_or_tenant", "role": "owner"}),
        ("user:tina", {"step": "ownership", "outcome": "not_owner_or_tenant", "role": "tenant"}),
    ]
    assert portal.get("olivia", "/jobs").json()["items"] == []


def test_a_revoked_boiler_is_not_found_without_blaming_its_owner(portal: Portal) -> None:
    with portal.world.db() as session:
        device = session.get(Device, DEV)
        assert device is not None
        device.revoked = True
    portal.refused(portal.post("olivia", "/jobs", REPAIR), 404)
    events = portal.get("olivia", f"/boilers/{DEV}/thread", kind="validation").json()["events"]
    assert [e for e in events if e["data"].get("outcome") == "not_owner_or_tenant"] == []


def test_request_input_is_checked(portal: Portal) -> None:
    catalogue = portal.get("tom", "/service/catalogue").json()
    assert "no_heating" in catalogue["service_types"]["repair"]
    assert catalogue["principles"] == ["low_carbon", "low_cost", "cheapest"]
    bad: dict[str, dict[str, Any]] = {
        "service_type": {"service_type": "rewire"},
        "problem": {"service_type": "annual_check", "problem": "no_heating"},
        "preferred_time": {"preferred_time": "2026-09-30T09:00:00"},
        "min_performance": {"min_performance": 1.5},
        "principle": {"principle": "fastest"},
    }
    for field, change in bad.items():
        body = problem(portal.post("tom", "/jobs", REPAIR | change), 422)
        assert body.get("field") == field or f"body.{field}" in body["detail"], body
    assert portal.get("tom", "/jobs").json()["items"] == []


# --- Seeing jobs and notifications --------------------------------------------------------


def test_people_see_only_their_own_jobs_and_notifications(portal: Portal) -> None:
    other_boiler(portal.world)
    toms = portal.raise_job("tom")["id"]
    tinas = portal.raise_job("tina", device_id=OTHER, problem="noise")["id"]
    mine = {"tom": toms, "olivia": toms, "tina": tinas, "oscar": tinas}
    for user, job_id in mine.items():
        assert [j["id"] for j in portal.get(user, "/jobs").json()["items"]] == [job_id]
        assert portal.get(user, f"/jobs/{job_id}").status_code == 200
        stranger = toms if job_id == tinas else tinas
        portal.refused(portal.get(user, f"/jobs/{stranger}"), 404)
        portal.refused(portal.get(user, f"/jobs/{stranger}/thread"), 404)
    assert [n["job_id"] for n in portal.notifications("olivia")] == [toms]
    assert [n["job_id"] for n in portal.notifications("oscar")] == [tinas]
    assert portal.notifications("tom") == []
    olivias = portal.notifications("olivia")[0]["id"]
    portal.refused(portal.post("tom", f"/notifications/{olivias}/read"), 404)
    assert portal.post("tom", "/notifications/read-all").json() == {"marked": 0}
    assert portal.get("olivia", "/notifications", unread=True).json()["items"]
    read = portal.post("olivia", f"/notifications/{olivias}/read")
    assert read.status_code == 200, read.text
    assert read.json()["read"] is True
    assert portal.get("olivia", "/notifications", unread=True).json()["items"] == []
    assert portal.get("oscar", "/notifications", unread=True).json()["items"]
    portal.world.user("tara", Role.TENANT)
    with portal.world.db() as session:
        device = session.get(Device, DEV)
        assert device is not None
        device.tenant_id = "tara"  # tom moves out, tara moves in
    assert portal.get("tara", "/jobs").json()["items"] == []
    portal.refused(portal.get("tara", f"/jobs/{toms}"), 404)


def test_idempotency_key_replays_the_same_job(portal: Portal) -> None:
    first = portal.post("tom", "/jobs", REPAIR, **{"Idempotency-Key": "k-1"})
    assert first.status_code == 201, first.text
    again = portal.post("tom", "/jobs", REPAIR, **{"Idempotency-Key": "k-1"})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == f"/api/v1/jobs/{first.json()['id']}"
    other = portal.post("olivia", "/jobs", REPAIR, **{"Idempotency-Key": "k-1"})
    assert other.status_code == 201, "keys are per user"
    assert len(portal.get("olivia", "/jobs").json()["items"]) == 2


def test_idempotency_key_with_another_body_conflicts(portal: Portal) -> None:
    body = REPAIR | {"problem": "other"}
    changes: dict[str, dict[str, Any]] = {
        "problem": {"problem": "no_hot_water"},
        "service_type": {"service_type": "service"},
        "description": {"description": "and a rattle"},
        "principle": {"principle": "cheapest"},
        "min_performance": {"min_performance": 0.5},
        "preferred_time": {"preferred_time": "2026-09-30T09:00:00Z"},
    }
    first = portal.post("tom", "/jobs", body, **{"Idempotency-Key": "k-2"})
    assert first.status_code == 201, first.text
    answers = {
        name: portal.post("tom", "/jobs", body | change, **{"Idempotency-Key": "k-2"})
        for name, change in changes.items()
    }
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(changes, 409)
    assert len(portal.get("tom", "/jobs").json()["items"]) == 1


# --- Shortlist, choice and contract --------------------------------------------------------


def test_shortlist_is_not_for_engineers_and_only_the_owner_chooses(portal: Portal) -> None:
    world = portal.world
    engineer(world, "eve")
    engineer(world, "eddie")
    world.user("sue", Role.SUPPORT)
    job_id = portal.crowdsourced()
    assert portal.answer("eve", job_id).status_code == 200
    assert portal.decline("eddie", job_id).status_code == 200
    assert portal.state(job_id) == "shortlisted"
    assert "engineers" in portal.refused(portal.get("eve", f"/jobs/{job_id}/shortlist"), 403)
    for user in ("olivia", "tom", "sue"):
        short = portal.get(user, f"/jobs/{job_id}/shortlist")
        assert [c["engineer_id"] for c in short.json()["candidates"]] == ["eve"]
    assert "not on the low_carbon shortlist" in portal.refused(portal.select("eddie", job_id), 422)
    assert "owner" in portal.refused(portal.select("eve", job_id, by="tom"), 403)
    assert "owner" in portal.refused(portal.select("eve", job_id, by="sue"), 403)
    portal.refused(portal.select("eve", job_id, by="eve"), 403)
    assert portal.state(job_id) == "shortlisted"
    chosen = portal.select("eve", job_id)
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["state"] == "contracted"
    assert chosen.json()["engineer_id"] == "eve"
    assert "not shortlisted" in portal.refused(portal.select("eve", job_id), 409)


def test_contract_tells_everyone_and_moves_boiler_visibility(portal: Portal) -> None:
    world = portal.world
    for name in ("eve", "eddie", "ella"):
        engineer(world, name)
    for name in ("eve", "eddie"):
        portal.refused(portal.get(name, f"/boilers/{DEV}"), 404)
    job_id = portal.crowdsourced()
    twin = portal.get("eddie", f"/boilers/{DEV}")
    assert twin.status_code == 200, twin.text
    assert twin.json()["id"] == DEV
    seen = portal.job("eddie", job_id)
    assert "owner_id" not in seen
    assert "contract" not in seen
    assert seen["invitation"]["state"] == "open"
    assert portal.answer("eve", job_id).status_code == 200
    assert portal.answer("eddie", job_id, quote=170.0).status_code == 200
    assert portal.decline("ella", job_id).status_code == 200
    portal.refused(portal.get("ella", f"/boilers/{DEV}"), 404)
    assert portal.select("eve", job_id).status_code == 200
    for user in ("tom", "olivia", "eve"):
        [told] = portal.told(user, "contract", job_id)
        assert "eve" in told["title"]
    assert len(portal.told("eddie", "not_selected", job_id)) == 1
    assert portal.told("ella", "not_selected") == []
    assert portal.told("eddie", "contract") == []
    portal.refused(portal.get("eddie", f"/boilers/{DEV}"), 404)
    portal.refused(portal.get("eddie", f"/jobs/{job_id}"), 404)
    assert portal.get("eve", f"/boilers/{DEV}").status_code == 200
    contract = portal.job("eve", job_id)["contract"]
    assert contract["address"] == "1 Piccadilly, Manchester"
    assert contract["quote"] == 190.0
    for user in ("olivia", "tom"):
        assert portal.get(user, "/engineers/eddie").status_code == 200
    portal.refused(portal.get("eddie", "/engineers/eve"), 404)
    assert portal.refused(portal.get("olivia", "/engineers"), 403)


def test_invited_engineer_learns_neither_the_people_nor_rival_quotes(portal: Portal) -> None:
    """Until the contract an invited engineer sees what they need to answer, not who lives
    there or what the other engineers quoted (`cloud.service.views`)."""
    engineer(portal.world, "eve")
    engineer(portal.world, "eddie")
    job_id = portal.crowdsourced()
    assert portal.answer("eve", job_id, quote=150.0).status_code == 200
    attributes = portal.get("eddie", f"/boilers/{DEV}").json()["attributes"]
    people = {k: attributes[k] for k in ("owner", "tenant", "address") if attributes.get(k)}
    thread = portal.get("eddie", f"/boilers/{DEV}/thread", limit=500)
    events = thread.json()["events"] if thread.status_code == 200 else []
    rivals = [
        e["data"] for e in events if e["kind"] == "response" and e["data"]["engineer"] != "eddie"
    ]
    assert (people, rivals) == ({}, [])


# --- The engineer's restart rule, completion ----------------------------------------------


def test_restart_rule(portal: Portal) -> None:
    world = portal.world
    engineer(world, "eve")
    engineer(world, "eddie")
    engineer(world, "ellen", at=(51.5, -0.12))  # London: never invited to Manchester
    job_id = portal.crowdsourced()
    assert "tenant may not restart" in portal.refused(portal.restart("tom"), 403)
    assert "only the engineer contracted" in portal.refused(portal.restart("eddie"), 403)
    portal.refused(portal.restart("ellen"), 404)
    assert portal.answer("eve", job_id).status_code == 200
    assert portal.answer("eddie", job_id).status_code == 200
    assert portal.select("eve", job_id).status_code == 200
    assert "report the completed repair first" in portal.refused(portal.restart("eve"), 403)
    portal.refused(portal.restart("eddie"), 404)
    assert portal.complete("eve", job_id).status_code == 200
    restarted = portal.restart("eve")
    assert restarted.status_code == 202, restarted.text
    assert restarted.json()["requested_by"] == "eve"
    assert "may not restart" in portal.refused(portal.restart("olivia"), 403)
    world.clock.now += int(world.settings.engineer_restart_window_s * 1000) + 1
    assert "restart window" in portal.refused(portal.restart("eve"), 403)


def test_only_the_contracted_engineer_completes(portal: Portal) -> None:
    world = portal.world
    engineer(world, "eve")
    engineer(world, "eddie")
    world.user("sue", Role.SUPPORT)
    job_id = portal.crowdsourced()
    assert "contracted" in portal.refused(portal.complete("eve", job_id), 403)
    assert portal.answer("eve", job_id).status_code == 200
    assert portal.answer("eddie", job_id).status_code == 200
    assert portal.select("eve", job_id).status_code == 200
    for user in ("olivia", "tom", "sue"):
        assert "contracted" in portal.refused(portal.complete(user, job_id), 403)
    portal.refused(portal.complete("eddie", job_id), 404)
    done = portal.complete("eve", job_id)
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "completed"
    assert done.json()["report"]["parts"] == ["electrode"]
    assert "not contracted" in portal.refused(portal.complete("eve", job_id), 409)
    early = {"token": "t" * 32, "cs": 5, "sq": 5}
    assert "verified" in portal.refused(
        portal.post("tom", f"/jobs/{job_id}/evaluation", early), 409
    )
    for user in ("olivia", "tom"):
        assert len(portal.told(user, "completed", job_id)) == 1


# --- The job's thread, and the evaluation -------------------------------------------------


def test_job_thread_is_the_whole_story_in_order(portal: Portal) -> None:
    engineer(portal.world, "eve")
    engineer(portal.world, "eddie")
    job_id = portal.crowdsourced()
    assert "contracted engineer" in portal.refused(
        portal.get("eddie", f"/jobs/{job_id}/thread"), 403
    )
    assert portal.answer("eve", job_id).status_code == 200
    assert "contracted engineer" in portal.refused(portal.get("eve", f"/jobs/{job_id}/thread"), 403)
    assert portal.decline("eddie", job_id).status_code == 200
    assert portal.select("eve", job_id).status_code == 200
    assert portal.complete("eve", job_id).status_code == 200
    assert portal.restart("eve").status_code == 202
    portal.verify(job_id)
    token = portal.told("tom", "evaluate", job_id)[0]["data"]["evaluation_token"]
    rated = portal.post("tom", f"/jobs/{job_id}/evaluation", {"token": token, "cs": 4, "sq": 4})
    assert rated.status_code == 200, rated.text
    events = portal.thread(job_id)
    assert [e["kind"] for e in events] == [
        "request",
        "authorization",
        "validation",
        "analysis",
        "crowdsourcing",
        "response",
        "response",
        "shortlist",
        "contract",
        "completion",
        "command",
        "command_state",
        "verification",
        "evaluation",
    ]
    assert [e["data"]["engineer"] for e in events if e["kind"] == "response"] == ["eve", "eddie"]
    assert events[-1]["data"]["cs"] == 4


def test_evaluation_is_the_tenants_once_with_the_token(portal: Portal) -> None:
    engineer(portal.world, "eve")
    job_id = portal.contracted("eve")
    assert portal.complete("eve", job_id).status_code == 200
    portal.verify(job_id)
    assert portal.told("olivia", "evaluate") == []
    [told] = portal.told("tom", "evaluate", job_id)
    token = told["data"]["evaluation_token"]
    path = f"/jobs/{job_id}/evaluation"
    rating = {"token": token, "cs": 5, "sq": 4}
    assert "end user" in portal.refused(portal.post("olivia", path, rating), 403)
    assert "end user" in portal.refused(portal.post("eve", path, rating), 403)
    wrong = rating | {"token": "x" * len(token)}
    assert "token" in portal.refused(portal.post("tom", path, wrong), 403)
    for bad in ({"cs": 0}, {"cs": 6}, {"sq": 0}, {"sq": 6}, {"cs": 4.5}):
        assert portal.post("tom", path, rating | bad).status_code == 422
    assert portal.job("tom", job_id)["state"] == "verified"
    rated = portal.post("tom", path, rating | {"comment": "quick and tidy"})
    assert rated.status_code == 200, rated.text
    assert portal.job("tom", job_id)["state"] == "evaluated"
    assert portal.job("tom", job_id)["evaluation"]["comment"] == "quick and tidy"
    assert "already been evaluated" in portal.refused(portal.post("tom", path, rating), 409)


def test_without_a_tenant_the_owner_is_the_end_user(portal: Portal) -> None:
    world = portal.world
    with world.db() as session:
        device = session.get(Device, DEV)
        assert device is not None
        device.tenant_id = None
    engineer(world, "eve")
    job = portal.raise_job("olivia")
    assert portal.answer("eve", job["id"]).status_code == 200
    assert portal.select("eve", job["id"]).status_code == 200
    assert portal.complete("eve", job["id"]).status_code == 200
    portal.verify(job["id"])
    [told] = portal.told("olivia", "evaluate", job["id"])
    rating = {"token": told["data"]["evaluation_token"], "cs": 3, "sq": 5}
    rated = portal.post("olivia", f"/jobs/{job['id']}/evaluation", rating)
    assert rated.status_code == 200, rated.text
    portal.refused(portal.get("tom", f"/jobs/{job['id']}"), 404)
