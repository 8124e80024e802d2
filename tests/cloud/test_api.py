"""The REST API in-process on a real database: auth, visibility, twin, conditional requests,
problem answers, health, metrics and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from cloud.api.app import create_app
from cloud.db import session_factory
from cloud.domain import Role
from cloud.models import ThreadEvent, Token, Twin, User
from protocols.reference import BoilerStatus
from tests.cloud.api_helpers import HOUR, PASSWORD, T0, World, problem, world_for


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(db_url, tmp_path, token_ttl_s=3600, stale_after_s=900) as w:
        yield w


# --- auth -----------------------------------------------------------------------------------


def test_login_issues_a_bearer_token_that_identifies_the_caller(world: World) -> None:
    world.user("olga", Role.OWNER, name="Olga Owner")
    response = world.client.post(
        "/api/v1/auth/token", data={"username": "olga", "password": PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["role"] == "owner"
    assert response.headers["cache-control"] == "no-store"
    me = world.client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json() == {
        "id": "olga",
        "role": "owner",
        "display_name": "Olga Owner",
        "disabled": False,
    }
    with world.db() as session:
        stored = session.scalars(select(Token.token_hash)).all()
    assert body["access_token"] not in stored  # only the hash is kept


@pytest.mark.parametrize(("user", "password"), [("olga", "wrong password"), ("nobody", PASSWORD)])
def test_failed_login_is_a_401_problem(world: World, user: str, password: str) -> None:
    world.user("olga", Role.OWNER)
    response = world.client.post(
        "/api/v1/auth/token", data={"username": user, "password": password}
    )
    body = problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert body["type"] == "urn:boilertwin:problem:unauthorized"
    assert "access_token" not in body


def test_missing_or_unknown_token_is_a_401_problem(world: World) -> None:
    response = world.client.get("/api/v1/me")
    problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    response = world.client.get("/api/v1/me", headers={"Authorization": "Bearer not-a-token"})
    problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


def test_token_expires_on_the_injected_clock(world: World) -> None:
    headers = world.as_new("olga", Role.OWNER)
    world.clock.now += 3600 * 1000 - 1
    assert world.client.get("/api/v1/me", headers=headers).status_code == 200
    world.clock.now += 1
    problem(world.client.get("/api/v1/me", headers=headers), 401)


def test_logout_revokes_the_token(world: World) -> None:
    headers = world.as_new("olga", Role.OWNER)
    other = world.login("olga")
    assert world.client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    problem(world.client.get("/api/v1/me", headers=headers), 401)
    assert world.client.get("/api/v1/me", headers=other).status_code == 200


def test_disabled_user_cannot_use_their_token(world: World) -> None:
    headers = world.as_new("olga", Role.OWNER)
    with world.db() as session:
        user = session.get(User, "olga")
        assert user is not None
        user.disabled = True
    problem(world.client.get("/api/v1/me", headers=headers), 401)


def test_admin_creates_users_others_may_not(world: World) -> None:
    admin = world.as_new("ada", Role.ADMIN)
    support = world.as_new("sue", Role.SUPPORT)
    body = {"id": "tom", "password": "a long password", "role": "tenant", "display_name": "Tom"}
    response = world.client.post("/api/v1/users", json=body, headers=admin)
    assert response.status_code == 201
    assert response.json() == {
        "id": "tom",
        "role": "tenant",
        "display_name": "Tom",
        "disabled": False,
    }
    assert world.login("tom", "a long password")
    problem(world.client.post("/api/v1/users", json=body, headers=admin), 409)
    forbidden = problem(
        world.client.post("/api/v1/users", json=body | {"id": "tim"}, headers=support), 403
    )
    assert forbidden["role"] == "support"


def test_validation_problems_list_the_fields_and_never_echo_input(world: World) -> None:
    admin = world.as_new("ada", Role.ADMIN)
    secret = "xyzzy42"
    response = world.client.post(
        "/api/v1/users",
        json={"id": "Bad Id", "password": secret, "role": "wizard", "extra": 1},
        headers=admin,
    )
    body = problem(response, 422)
    assert body["type"] == "about:blank"
    locations = {tuple(error["loc"]) for error in body["errors"]}
    assert locations == {
        ("body", "id"),
        ("body", "password"),
        ("body", "role"),
        ("body", "extra"),
    }
    assert secret not in response.text
    assert all(set(error) == {"loc", "msg", "type"} for error in body["errors"])
    query = problem(world.client.get("/api/v1/boilers?limit=0", headers=admin), 422)
    assert query["errors"][0]["loc"] == ["query", "limit"]


# --- visibility -----------------------------------------------------------------------------


@pytest.fixture
def fleet(world: World) -> dict[str, dict[str, str]]:
    """Two owners, two tenants, an engineer and staff; three boilers."""
    for user, role in (
        ("olga", Role.OWNER),
        ("otto", Role.OWNER),
        ("tina", Role.TENANT),
        ("tom", Role.TENANT),
        ("erin", Role.ENGINEER),
        ("sue", Role.SUPPORT),
        ("ada", Role.ADMIN),
    ):
        world.user(user, role)
    world.boiler(
        "boiler-a",
        owner="olga",
        tenant="tina",
        model="EcoHeat 24",
        serial="SN-A",
        address="1 Mill Lane",
    )
    world.boiler(
        "boiler-b",
        owner="olga",
        tenant="tom",
        model="EcoHeat 30",
        serial="SN-B",
        address="2 Mill Lane",
    )
    world.boiler(
        "boiler-c", owner="otto", model="CondensPro", serial="SN-C", address="9 High Street"
    )
    return {
        user: world.login(user) for user in ("olga", "otto", "tina", "tom", "erin", "sue", "ada")
    }


def ids(world: World, headers: dict[str, str], query: str = "") -> list[str]:
    response = world.client.get(f"/api/v1/boilers{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_each_role_sees_its_own_boilers(world: World, fleet: dict[str, dict[str, str]]) -> None:
    assert ids(world, fleet["ada"]) == ["boiler-a", "boiler-b", "boiler-c"]
    assert ids(world, fleet["sue"]) == ["boiler-a", "boiler-b", "boiler-c"]
    assert ids(world, fleet["olga"]) == ["boiler-a", "boiler-b"]
    assert ids(world, fleet["otto"]) == ["boiler-c"]
    assert ids(world, fleet["tina"]) == ["boiler-a"]
    assert ids(world, fleet["tom"]) == ["boiler-b"]
    assert ids(world, fleet["erin"]) == []


def test_a_boiler_one_may_not_see_is_indistinguishable_from_none(
    world: World, fleet: dict[str, dict[str, str]]
) -> None:
    assert world.client.get("/api/v1/boilers/boiler-a", headers=fleet["tina"]).status_code == 200
    hidden = problem(world.client.get("/api/v1/boilers/boiler-a", headers=fleet["tom"]), 404)
    missing = problem(world.client.get("/api/v1/boilers/boiler-zz", headers=fleet["tom"]), 404)
    assert hidden.keys() == missing.keys()
    assert hidden["type"] == missing["type"] == "urn:boilertwin:problem:not-found"
    for path in ("", "/telemetry", "/thread", "/commands"):
        problem(world.client.get(f"/api/v1/boilers/boiler-c{path}", headers=fleet["olga"]), 404)
        problem(world.client.get(f"/api/v1/boilers/boiler-a{path}", headers=fleet["erin"]), 404)


def test_list_filters_search_and_paging(world: World, fleet: dict[str, dict[str, str]]) -> None:
    admin = fleet["ada"]
    world.twin("boiler-a", connection="online", last_seen_ms=T0, status=int(BoilerStatus.LOCKOUT))
    world.twin(
        "boiler-b", connection="online", last_seen_ms=T0 - HOUR, status=int(BoilerStatus.RUNNING)
    )
    world.twin("boiler-c", connection="offline", last_seen_ms=T0 - HOUR)
    assert ids(world, admin, "?connectivity=online") == ["boiler-a"]
    assert ids(world, admin, "?connectivity=stale") == ["boiler-b"]
    assert ids(world, admin, "?connectivity=offline") == ["boiler-c"]
    assert ids(world, admin, "?connectivity=unknown") == []
    assert ids(world, admin, "?status=lockout") == ["boiler-a"]
    assert ids(world, admin, "?q=mill") == ["boiler-a", "boiler-b"]
    assert ids(world, admin, "?q=SN-C") == ["boiler-c"]
    assert ids(world, admin, "?q=condens") == ["boiler-c"]
    assert ids(world, admin, "?q=%25") == []  # a literal %, not a wildcard
    assert ids(world, fleet["olga"], "?status=lockout") == ["boiler-a"]
    page = world.client.get("/api/v1/boilers?limit=2&offset=1", headers=admin).json()
    assert [item["id"] for item in page["items"]] == ["boiler-b", "boiler-c"]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 1)
    first = page["items"][0]
    assert first["connectivity"] == "stale"
    assert first["status_label"] == "running"
    problem(world.client.get("/api/v1/boilers?status=melting", headers=admin), 422)
    problem(world.client.get("/api/v1/boilers?connectivity=maybe", headers=admin), 422)


# --- twin, ETag, PATCH ----------------------------------------------------------------------


def test_twin_carries_attributes_values_and_a_strong_etag(
    world: World, fleet: dict[str, dict[str, str]]
) -> None:
    world.twin(
        "boiler-a",
        connection="online",
        last_seen_ms=T0 - 1000,
        epoch=3,
        birth_ms=T0 - HOUR,
        agent_version="0.1.0",
        map_id="reference",
        map_hash="abc",
        status=7,
        fault_code=28,
        max_seq=10,
        contiguous_seq=10,
        received=11,
        duplicates=2,
        lost_accounted=1,
    )
    world.value("boiler-a", "status", 7, T0 - 1000)
    world.value("boiler-a", "fault_code", 28, T0 - 1000)
    world.value("boiler-a", "flow_temp", 61.5, T0 - 2000)
    response = world.client.get("/api/v1/boilers/boiler-a", headers=fleet["tina"])
    assert response.status_code == 200
    body = response.json()
    assert response.headers["etag"] == f'"{body["version"]}-{body["connectivity"]["state"]}"'
    assert body["attributes"]["owner"] == "olga"
    assert body["attributes"]["tenant"] == "tina"
    assert body["attributes"]["model"] == "EcoHeat 24"
    assert body["reported"]["status"] == {
        "value": 7,
        "ts": T0 - 1000,
        "quality": "good",
        "label": "lockout",
    }
    assert body["reported"]["fault_code"]["name"] == "F28"
    assert body["reported"]["flow_temp"] == {"value": 61.5, "ts": T0 - 2000, "quality": "good"}
    connectivity = body["connectivity"]
    assert connectivity["state"] == "online"
    assert (connectivity["epoch"], connectivity["agent_version"], connectivity["map_id"]) == (
        3,
        "0.1.0",
        "reference",
    )
    assert body["delivery"] == {
        "max_seq": 10,
        "contiguous_seq": 10,
        "received": 11,
        "duplicates": 2,
        "lost_accounted": 1,
        "unexplained_gaps": 0,
    }


def test_if_none_match_gives_304_until_the_twin_changes(
    world: World, fleet: dict[str, dict[str, str]]
) -> None:
    headers = fleet["olga"]
    first = world.client.get("/api/v1/boilers/boiler-a", headers=headers)
    tag = first.headers["etag"]
    again = world.client.get("/api/v1/boilers/boiler-a", headers=headers | {"If-None-Match": tag})
    assert again.status_code == 304
    assert again.headers["etag"] == tag
    assert again.content == b""
    weak = world.client.get(
        "/api/v1/boilers/boiler-a", headers=headers | {"If-None-Match": f'"x", W/{tag}'}
    )
    assert weak.status_code == 304
    world.twin("boiler-a", connection="online", last_seen_ms=T0)
    changed = world.client.get("/api/v1/boilers/boiler-a", headers=headers | {"If-None-Match": tag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != tag
    # Silence alone turns an online twin stale: no write, yet the 304 must stop.
    online_tag = changed.headers["etag"]
    with world.db() as session:  # time passes: last heard of long ago, version untouched
        twin = session.get(Twin, "boiler-a")
        assert twin is not None
        twin.last_seen_ms = T0 - 2 * int(world.settings.stale_after_s * 1000)
    later = world.client.get(
        "/api/v1/boilers/boiler-a", headers=headers | {"If-None-Match": online_tag}
    )
    assert later.status_code == 200 and later.json()["connectivity"]["state"] == "stale"


def test_patch_needs_if_match_and_records_who_changed_what(
    world: World, fleet: dict[str, dict[str, str]]
) -> None:
    sue = fleet["sue"]
    url = "/api/v1/boilers/boiler-a"
    tag = world.client.get(url, headers=sue).headers["etag"]
    change = {
        "address": "1a Mill Lane",
        "tenant": "tom",
        "location": {"lat": 52.2, "lon": 0.12},
        "install_date": "2024-03-01",
    }
    problem(world.client.patch(url, json=change, headers=sue), 428)
    problem(world.client.patch(url, json=change, headers=sue | {"If-Match": '"999"'}), 412)
    problem(world.client.patch(url, json=change, headers=sue | {"If-Match": f"W/{tag}"}), 412)
    response = world.client.patch(url, json=change, headers=sue | {"If-Match": tag})
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["etag"] == f'"{body["version"]}-{body["connectivity"]["state"]}"' != tag
    assert body["attributes"]["address"] == "1a Mill Lane"
    assert body["attributes"]["tenant"] == "tom"
    assert body["attributes"]["location"] == {"lat": 52.2, "lon": 0.12}
    assert body["attributes"]["install_date"] == "2024-03-01"
    # The old ETag is now stale; the tenant moved out and cannot see the boiler any more.
    problem(world.client.patch(url, json={"model": "X"}, headers=sue | {"If-Match": tag}), 412)
    problem(world.client.get(url, headers=fleet["tina"]), 404)
    assert world.client.get(url, headers=fleet["tom"]).status_code == 200
    with world.db() as session:
        event = session.scalars(
            select(ThreadEvent)
            .where(ThreadEvent.device_id == "boiler-a", ThreadEvent.kind == "device")
            .order_by(ThreadEvent.id.desc())
        ).first()
    assert event is not None
    assert event.actor == "user:sue"
    assert event.ts_ms == T0
    assert event.data["changes"]["tenant"] == {"from": "tina", "to": "tom"}
    assert event.data["changes"]["address"] == {"from": "1 Mill Lane", "to": "1a Mill Lane"}
    assert event.data["changes"]["lat"] == {"from": None, "to": 52.2}


def test_patch_null_clears_and_star_matches(world: World, fleet: dict[str, dict[str, str]]) -> None:
    url = "/api/v1/boilers/boiler-a"
    response = world.client.patch(
        url, json={"tenant": None, "serial": None}, headers=fleet["ada"] | {"If-Match": "*"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["attributes"]["tenant"] is None
    assert response.json()["attributes"]["serial"] is None
    tag = response.headers["etag"]
    same = world.client.patch(url, json={"tenant": None}, headers=fleet["ada"] | {"If-Match": tag})
    assert same.status_code == 200
    assert same.headers["etag"] == tag  # nothing changed: no new version


def test_patch_rules(world: World, fleet: dict[str, dict[str, str]]) -> None:
    url = "/api/v1/boilers/boiler-a"
    tag = world.client.get(url, headers=fleet["olga"]).headers["etag"]
    denied = problem(
        world.client.patch(url, json={"model": "X"}, headers=fleet["olga"] | {"If-Match": tag}),
        403,
    )
    assert denied["type"] == "urn:boilertwin:problem:forbidden"
    problem(
        world.client.patch(url, json={"model": "X"}, headers=fleet["tom"] | {"If-Match": tag}), 404
    )
    sue = fleet["sue"] | {"If-Match": tag}
    wrong_role = problem(world.client.patch(url, json={"owner": "tina"}, headers=sue), 409)
    assert wrong_role["field"] == "owner"
    problem(world.client.patch(url, json={"owner": "ghost"}, headers=sue), 409)
    problem(world.client.patch(url, json={"colour": "red"}, headers=sue), 422)
    problem(world.client.patch(url, json={"location": {"lat": 91, "lon": 0}}, headers=sue), 422)
    problem(world.client.patch(url, json={"install_date": "yesterday"}, headers=sue), 422)
    assert world.client.get(url, headers=fleet["olga"]).headers["etag"] == tag


# --- ops ------------------------------------------------------------------------------------


def test_healthz(world: World, tmp_path: Path) -> None:
    response = world.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "loops": {}}
    broken = create_engine(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    app = create_app(
        world.settings, session_factory(broken), world.commands, world.platform, clock=world.clock
    )
    with TestClient(app) as client:
        body = problem(client.get("/healthz"), 503)
    assert "no/such" not in str(body)


def test_metrics_count_requests_by_route_template(
    world: World, fleet: dict[str, dict[str, str]]
) -> None:
    world.client.get("/api/v1/boilers/boiler-a", headers=fleet["olga"])
    world.client.get("/api/v1/boilers/boiler-zz", headers=fleet["olga"])
    world.client.get("/no/such/path")
    response = world.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'route="/api/v1/boilers/{device_id}",status="200"' in text
    assert 'route="/api/v1/boilers/{device_id}",status="404"' in text
    assert 'route="unmatched",status="404"' in text
    assert "boiler-zz" not in text
    assert "bt_api_request_duration_seconds_bucket" in text


def test_unexpected_errors_are_a_bare_500_problem(world: World) -> None:
    @world.app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret internals at /etc/boilertwin")

    body = problem(world.client.get("/api/v1/boom"), 500)
    assert "secret" not in str(body)
    assert body["type"] == "about:blank"


def test_unknown_route_and_method_are_problems(world: World) -> None:
    problem(world.client.get("/api/v1/nothing"), 404)
    response = world.client.delete("/api/v1/me")
    problem(response, 405)
    assert "GET" in response.headers["allow"]


def test_openapi_lists_the_routes(world: World) -> None:
    document = world.client.get("/openapi.json").json()
    paths = document["paths"]
    expected = {
        "/api/v1/auth/token": {"post"},
        "/api/v1/auth/logout": {"post"},
        "/api/v1/me": {"get"},
        "/api/v1/users": {"post"},
        "/api/v1/boilers": {"get"},
        "/api/v1/boilers/{device_id}": {"get", "patch"},
        "/api/v1/boilers/{device_id}/telemetry": {"get"},
        "/api/v1/boilers/{device_id}/thread": {"get"},
        "/api/v1/boilers/{device_id}/commands": {"get", "post"},
        "/api/v1/commands/{command_id}": {"get"},
        "/api/v1/ingest/stats": {"get"},
        "/healthz": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path
    schemes = document["components"]["securitySchemes"]
    assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/api/v1/auth/token"


def test_json_to_the_token_endpoint_gets_a_hint(world: World) -> None:
    world.user("hint-user", Role.OWNER)
    response = world.client.post(
        "/api/v1/auth/token", json={"username": "hint-user", "password": PASSWORD}
    )
    body = problem(response, 422)
    assert (
        "form-encoded" in body["hint"]
        and "Hint: send the credentials form-encoded" in body["detail"]
    )
    assert PASSWORD not in response.text


def test_a_body_without_json_content_type_gets_a_hint(world: World) -> None:
    world.user("hint-admin", Role.ADMIN)
    headers = world.login("hint-admin")
    sent = world.client.post(
        "/api/v1/users",
        content=b'{"id": "x", "password": "correct horse battery", "role": "owner"}',
        headers=headers | {"Content-Type": "text/plain"},
    )
    body = problem(sent, 422)
    assert body["hint"] == (
        "send the body as JSON with Content-Type: application/json "
        "(this one had Content-Type text/plain)"
    )
    good = world.client.post("/api/v1/users", json={"id": "x"}, headers=headers)
    assert "hint" not in good.json()
