"""Command endpoints over the real `CommandService`: create (202), idempotent replay (200),
reused key (409), refusals, visibility and listing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.domain import Role
from protocols.reference import BoilerStatus
from tests.cloud.api_helpers import T0, World, problem, world_for

DEV = "boiler-a"
URL = f"/api/v1/boilers/{DEV}/commands"
RESTART = {"name": "restart", "reason": "F28 repaired on site"}


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(db_url, tmp_path, restart_limit=2) as w:
        w.user("olga", Role.OWNER)
        w.user("tina", Role.TENANT)
        w.user("tom", Role.TENANT)
        w.user("sue", Role.SUPPORT)
        w.boiler(DEV, owner="olga", tenant="tina")
        w.twin(DEV, connection="online", last_seen_ms=T0, status=int(BoilerStatus.LOCKOUT))
        yield w


@pytest.fixture
def sue(world: World) -> dict[str, str]:
    return world.login("sue")


def test_restart_is_accepted_with_a_location(world: World, sue: dict[str, str]) -> None:
    response = world.client.post(URL, json=RESTART, headers=sue | {"Idempotency-Key": "k1"})
    assert response.status_code == 202, response.text
    command = response.json()
    assert command["name"] == "restart"
    assert command["state"] == "created"
    assert command["requested_by"] == "sue"
    assert command["reason"] == "F28 repaired on site"
    assert response.headers["location"] == f"/api/v1/commands/{command['id']}"
    fetched = world.client.get(response.headers["location"], headers=sue)
    assert fetched.status_code == 200
    assert fetched.json()["id"] == command["id"]
    listed = world.client.get(URL, headers=world.login("tina")).json()["items"]
    assert [c["id"] for c in listed] == [command["id"]]


def test_idempotent_replay_and_reused_key(world: World, sue: dict[str, str]) -> None:
    first = world.client.post(URL, json=RESTART, headers=sue | {"Idempotency-Key": "k1"})
    assert first.status_code == 202
    again = world.client.post(URL, json=RESTART, headers=sue | {"Idempotency-Key": "k1"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    changed = world.client.post(
        URL, json=RESTART | {"reason": "something else"}, headers=sue | {"Idempotency-Key": "k1"}
    )
    body = problem(changed, 409)
    assert body["type"] == "urn:boilertwin:problem:conflict"
    assert body["command_id"] == first.json()["id"]


def test_refusals_are_problems(world: World, sue: dict[str, str]) -> None:
    owner = problem(world.client.post(URL, json=RESTART, headers=world.login("olga")), 403)
    assert owner["type"] == "urn:boilertwin:problem:forbidden"
    problem(world.client.post(URL, json=RESTART, headers=world.login("tom")), 404)
    problem(world.client.post(URL, json={"name": "explode"}, headers=sue), 422)
    problem(world.client.post(URL, json=RESTART | {"colour": "red"}, headers=sue), 422)
    unexplained = world.client.post(URL, json={"name": "restart", "reason": ""}, headers=sue)
    assert problem(unexplained, 403)["detail"] == "support must record a reason for a restart"
    long_key = {"Idempotency-Key": "k" * 201}
    problem(world.client.post(URL, json=RESTART, headers=sue | long_key), 422)
    assert world.client.post(URL, json=RESTART, headers=sue).status_code == 202
    assert world.client.post(URL, json=RESTART, headers=sue).status_code == 202
    limited = problem(world.client.post(URL, json=RESTART, headers=sue), 429)
    assert limited["reason"] == "rate_limited"
    world.twin(DEV, status=int(BoilerStatus.RUNNING))
    refused = problem(world.client.post(URL, json=RESTART, headers=sue), 409)
    assert refused["type"] == "urn:boilertwin:problem:command-refused"
    assert refused["reason"] == "not_in_lockout"


def test_a_command_is_visible_only_with_its_boiler(world: World, sue: dict[str, str]) -> None:
    created = world.client.post(URL, json=RESTART, headers=sue).json()
    path = f"/api/v1/commands/{created['id']}"
    assert world.client.get(path, headers=world.login("tina")).status_code == 200
    hidden = problem(world.client.get(path, headers=world.login("tom")), 404)
    missing = problem(world.client.get("/api/v1/commands/no-such-id", headers=sue), 404)
    assert hidden["type"] == missing["type"]
    problem(world.client.get(URL, headers=world.login("tom")), 404)


def test_only_restart_is_offered_and_other_names_are_422(world: World) -> None:
    document = world.client.get("/openapi.json").json()
    schema = document["components"]["schemas"]["CommandBody"]["properties"]["name"]
    assert schema.get("const", schema.get("enum")) in ("restart", ["restart"]), schema
    for name in ("set_setpoint", "configure", "update", "pin_keys"):
        refused = world.client.post(
            URL,
            json={"name": name, "reason": "trying"},
            headers=world.login("sue"),
        )
        assert refused.status_code == 422, (name, refused.text)
        assert "restart" in refused.json()["detail"]
