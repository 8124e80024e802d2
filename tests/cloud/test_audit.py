"""The audit log (`cloud.api.audit`) on SQLite and PostgreSQL: every state-changing request
to the API or the portal is recorded once with who, role, when, what, from where and how it
ended, reads are not, and only admins may read it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.domain import Role
from tests.cloud.api_helpers import World, world_for
from tests.cloud.portal_helpers import Visitor


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(db_url, tmp_path) as world:
        world.user("ada", Role.ADMIN)
        world.user("sue", Role.SUPPORT)
        world.user("tina", Role.TENANT)
        world.boiler("boiler-a", tenant="tina")
        world.twin("boiler-a", connection="online", last_seen_ms=world.clock())
        yield world


def audit(world: World, user: str = "ada", **params: Any) -> Any:
    return world.client.get("/api/v1/audit", params=params, headers=world.login(user))


def test_state_changes_are_recorded_with_who_what_and_outcome(world: World) -> None:
    tina = world.login("tina")
    refused = world.client.post(
        "/api/v1/boilers/boiler-a/commands", json={"name": "restart"}, headers=tina
    )
    assert refused.status_code == 403
    world.client.get("/api/v1/boilers/boiler-a", headers=tina)  # a read: not recorded
    changed = world.client.put(
        "/api/v1/config/layers/fleet/*",
        json={"settings": {"report": {"poll_interval_s": 30}}},
        headers=world.login("sue"),
    )
    assert changed.status_code == 200, changed.text
    Visitor(world, "tina")  # a portal log-in: a POST before anyone is known

    answer = audit(world)
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    mine = [
        (i["actor"], i["role"], i["method"], i["route"], i["status"], i["outcome"]) for i in items
    ]
    assert (
        "tina",
        "tenant",
        "POST",
        "/api/v1/boilers/{device_id}/commands",
        403,
        "refused",
    ) in mine
    assert ("sue", "support", "PUT", "/api/v1/config/layers/{scope}/{target}", 200, "done") in mine
    assert (None, None, "POST", "/login", 303, "done") in mine
    assert not any(i["method"] == "GET" for i in items)
    restart = next(i for i in items if i["actor"] == "tina")
    assert restart["device_id"] == "boiler-a" and restart["address"] == "testclient"
    assert restart["path"] == "/api/v1/boilers/boiler-a/commands"
    ids = [i["id"] for i in items]
    assert ids == sorted(ids, reverse=True)


def test_the_log_is_filtered_paged_and_for_admins_only(world: World) -> None:
    for _ in range(3):
        world.client.post(
            "/api/v1/boilers/boiler-a/commands",
            json={"name": "restart"},
            headers=world.login("tina"),
        )
    first = audit(world, actor="tina", limit=2).json()
    assert [i["actor"] for i in first["items"]] == ["tina", "tina"]
    rest = audit(world, actor="tina", before=first["next_before"]).json()
    assert len(rest["items"]) == 1 and rest["next_before"] is None
    assert audit(world, outcome="refused", device_id="boiler-a").json()["items"]
    assert audit(world, outcome="maybe").status_code == 422
    refused = audit(world, "sue")
    assert refused.status_code == 403
    assert refused.json()["detail"] == "a support agent may not read the audit log"
