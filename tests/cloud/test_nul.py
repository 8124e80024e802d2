"""A NUL character anywhere in a request never reaches the database (PostgreSQL cannot store
one, and every such request used to be a 500): it becomes U+FFFD at the door."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.api.nul import clean
from cloud.domain import Role
from cloud.models import User
from tests.cloud.api_helpers import World, world_for


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(db_url, tmp_path) as w:
        w.user("ada", Role.ADMIN)
        yield w


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/boilers/a%00b", 404),
        ("/api/v1/boilers/a%00b/telemetry", 404),
        ("/api/v1/jobs/a%00b", 404),
        ("/api/v1/commands/a%00b", 404),
        ("/api/v1/engineers/a%00b", 404),
        ("/api/v1/boilers?q=a%00b", 200),
        ("/api/v1/jobs?device_id=%00", 200),
    ],
)
def test_a_nul_in_a_path_or_query_is_a_plain_answer(world: World, path: str, status: int) -> None:
    assert world.client.get(path, headers=world.login("ada")).status_code == status


def test_a_nul_in_a_json_body_is_stored_as_a_replacement_character(world: World) -> None:
    body = {"id": "nul-user", "password": "long-password", "role": "tenant", "display_name": "a\0b"}
    created = world.client.post("/api/v1/users", json=body, headers=world.login("ada"))
    assert created.status_code == 201, created.text
    assert created.json()["display_name"] == "a\ufffdb"
    with world.sessions() as session:
        user = session.get(User, "nul-user")
    assert user is not None and user.display_name == "a\ufffdb"


def test_a_nul_in_a_login_form_is_a_failed_login(world: World) -> None:
    for url in ("/api/v1/auth/token", "/login"):
        answer = world.client.post(url, data={"username": "ad\0a", "password": "pass\0word"})
        assert answer.status_code == 401, (url, answer.text)


def test_clean_reaches_keys_and_nested_values() -> None:
    assert clean({"a\0": ["x\0", {"y": "\0"}], "n": 1}) == {
        "a\ufffd": ["x\ufffd", {"y": "\ufffd"}],
        "n": 1,
    }
