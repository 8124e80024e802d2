"""The service flow in-process: request to evaluation, over the real API and database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud.api_helpers import World, world_for
from tests.cloud.service_helpers import DEV, REPAIR, engineer, lockout_boiler, running

pytestmark = pytest.mark.usefixtures("db_url")


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(db_url, tmp_path, verify_normal_s=60.0, newcomer_slots=0) as w:
        lockout_boiler(w)
        yield w


def test_whole_flow(world: World) -> None:
    engineer(world, "eve", invitations=4, accepted=3, evaluated=2, cs_sum=9.0, sq_sum=8.0)
    engineer(world, "eddie", invitations=2, accepted=1, evaluated=1, cs_sum=3.0, sq_sum=3.0)
    tom, olivia = world.login("tom"), world.login("olivia")
    created = world.client.post("/api/v1/jobs", json=REPAIR, headers=tom)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["state"] == "pending_authorization"
    approved = world.client.post(
        f"/api/v1/jobs/{job['id']}/authorize", json={"approve": True}, headers=olivia
    )
    assert approved.status_code == 200, approved.text
    job = approved.json()
    assert job["state"] == "crowdsourcing", job
    assert job["validation"]["outcome"] == "matched"
    eve = world.login("eve")
    invites = world.client.get("/api/v1/invitations", headers=eve).json()["items"]
    assert [i["job_id"] for i in invites] == [job["id"]]
    answer = {"available": True, "quote": 190.0, "location": {"lat": 53.47, "lon": -2.24}}
    r = world.client.post(f"/api/v1/jobs/{job['id']}/response", json=answer, headers=eve)
    assert r.status_code == 200, r.text
    job = world.client.get(f"/api/v1/jobs/{job['id']}", headers=olivia).json()
    assert job["state"] == "shortlisted", job
    short = world.client.get(f"/api/v1/jobs/{job['id']}/shortlist", headers=olivia).json()
    assert [c["engineer_id"] for c in short["candidates"]] == ["eve"]
    r = world.client.post(
        f"/api/v1/jobs/{job['id']}/select", json={"engineer_id": "eve"}, headers=olivia
    )
    assert r.status_code == 200, r.text
    r = world.client.post(f"/api/v1/boilers/{DEV}/commands", json={"name": "restart"}, headers=eve)
    assert r.status_code == 403, r.text
    print(r.json())
    r = world.client.post(
        f"/api/v1/jobs/{job['id']}/complete",
        json={"cause": "worn electrode", "actions": "replaced", "parts": ["electrode"]},
        headers=eve,
    )
    assert r.status_code == 200, r.text
    r = world.client.post(f"/api/v1/boilers/{DEV}/commands", json={"name": "restart"}, headers=eve)
    assert r.status_code == 202, r.text
    running(world)
    world.platform.sweep()
    world.clock.now += 61_000
    running(world)
    world.platform.sweep()
    job = world.client.get(f"/api/v1/jobs/{job['id']}", headers=tom).json()
    assert job["state"] == "verified", job
    notes = world.client.get("/api/v1/notifications", headers=tom).json()["items"]
    token = next(n["data"]["evaluation_token"] for n in notes if n["kind"] == "evaluate")
    r = world.client.post(
        f"/api/v1/jobs/{job['id']}/evaluation", json={"token": token, "cs": 5, "sq": 4}, headers=tom
    )
    assert r.status_code == 200, r.text
    print(r.json())
    thread = world.client.get(f"/api/v1/jobs/{job['id']}/thread", headers=olivia).json()
    print([e["kind"] for e in thread["events"]])
