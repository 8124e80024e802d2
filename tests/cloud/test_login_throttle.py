"""Password guessing is slowed per account and per address; a real user is never locked out
for longer than the account's cap. On the API token endpoint and the portal login alike.

The finding: 882 wrong passwords in a row got no 429, and the right password still worked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from cloud.domain import Role
from tests.cloud.api_helpers import PASSWORD, World, problem, world_for

TOKEN = "/api/v1/auth/token"


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(db_url, tmp_path) as w:
        w.user("olga", Role.OWNER)
        yield w


def attempt(client: TestClient, user: str, password: str) -> int:
    return client.post(TOKEN, data={"username": user, "password": password}).status_code


def from_address(world: World, address: str) -> TestClient:
    return TestClient(world.app, raise_server_exceptions=False, client=(address, 40000))


def logins(channel: str, outcome: str) -> float:
    labels = {"channel": channel, "outcome": outcome}
    return REGISTRY.get_sample_value("boilertwin_logins_total", labels) or 0.0


def test_882_wrong_passwords_meet_429s_and_the_right_one_waits_too(world: World) -> None:
    before = logins("api", "throttled")
    statuses = [attempt(world.client, "olga", f"guess-{n}") for n in range(882)]
    assert statuses[:5] == [401] * 5
    assert set(statuses[5:]) == {429}
    assert logins("api", "throttled") - before == 877
    refused = world.client.post(TOKEN, data={"username": "olga", "password": PASSWORD})
    body = problem(refused, 429)
    assert refused.headers["retry-after"] == "1"
    assert body["retry_after_s"] == 1 and "password" not in refused.text.lower()


def test_the_delay_doubles_up_to_the_account_cap(world: World) -> None:
    waits = []
    for _ in range(5):
        attempt(world.client, "olga", "wrong-password")
    for _ in range(9):
        refused = world.client.post(TOKEN, data={"username": "olga", "password": "nope-nope"})
        assert refused.status_code == 429
        wait = int(refused.headers["retry-after"])
        waits.append(wait)
        world.clock.now += wait * 1000
        assert attempt(world.client, "olga", "wrong-again") == 401
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_after_the_wait_the_right_password_works_and_clears_the_account(world: World) -> None:
    for _ in range(7):
        attempt(world.client, "olga", "wrong-password")
    assert attempt(world.client, "olga", PASSWORD) == 429
    world.clock.now += 4_000
    assert attempt(world.client, "olga", PASSWORD) == 200
    # A success starts the account's count afresh: five free failures again.
    assert [attempt(world.client, "olga", "wrong-password") for _ in range(6)] == [401] * 5 + [429]


def test_one_address_spraying_many_accounts_is_stopped(world: World) -> None:
    world.user("pat", Role.TENANT)
    sprayer = from_address(world, "203.0.113.9")
    statuses = [attempt(sprayer, f"user-{n:03d}", "password1") for n in range(25)]
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}
    assert attempt(sprayer, "pat", PASSWORD) == 429  # even a right password, from there
    assert attempt(from_address(world, "198.51.100.4"), "pat", PASSWORD) == 200


def test_a_distributed_attack_cannot_lock_the_real_user_out_for_good(world: World) -> None:
    for n in range(40):
        attempt(from_address(world, f"192.0.2.{n}"), "olga", "guessing")
    user = from_address(world, "198.51.100.77")
    refused = user.post(TOKEN, data={"username": "olga", "password": PASSWORD})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) <= 60
    world.clock.now += 60_000
    assert attempt(user, "olga", PASSWORD) == 200


def test_counts_are_forgotten_after_a_quiet_period(world: World) -> None:
    for _ in range(4):
        attempt(world.client, "olga", "wrong-password")
    world.clock.now += 900_001
    assert [attempt(world.client, "olga", "wrong-password") for _ in range(5)] == [401] * 5


def test_unknown_accounts_are_throttled_like_known_ones(world: World) -> None:
    """Otherwise the answers would tell which login names exist."""
    known = [attempt(world.client, "olga", "wrong-password") for _ in range(6)]
    unknown = [attempt(world.client, "nobody-here", "wrong-password") for _ in range(6)]
    assert known == unknown == [401] * 5 + [429]


def test_the_portal_login_is_throttled_the_same_way(world: World) -> None:
    before = logins("portal", "failure")
    form = {"username": "olga", "password": "wrong-password", "next": "/"}
    statuses = [world.client.post("/login", data=form).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    assert logins("portal", "failure") - before == 5
    right = world.client.post("/login", data=form | {"password": PASSWORD}, follow_redirects=False)
    assert right.status_code == 429 and right.headers["retry-after"] == "1"
    assert "Too many failed attempts" in right.text
    # The API and the portal share the account's count.
    assert attempt(world.client, "olga", PASSWORD) == 429
    world.clock.now += 1_000
    ok = world.client.post("/login", data=form | {"password": PASSWORD}, follow_redirects=False)
    assert ok.status_code == 303
