"""Secure by default: the session cookie is Secure unless turned off, ``/metrics`` can demand a
token, and a form posted with ``Origin: null`` is refused."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.domain import Role
from cloud.errors import ConfigError
from cloud.portal.session import SESSION_COOKIE
from cloud.settings import CloudSettings, load_settings
from tests.cloud.api_helpers import PASSWORD, World, problem, world_for
from tests.cloud.portal_helpers import Visitor

SCRAPE_TOKEN = "scrape-token-0123456789abcdef"


def test_the_shipped_and_built_in_defaults_mark_the_cookie_secure() -> None:
    assert CloudSettings().portal_secure_cookie is True
    shipped = load_settings(Path(__file__).parents[2] / "deploy" / "cloud.toml")
    assert shipped.portal_secure_cookie is True


def test_the_login_cookie_is_secure_httponly_and_strict(db_url: str, tmp_path: Path) -> None:
    with world_for(db_url, tmp_path, portal_secure_cookie=True) as world:
        world.user("tom", Role.TENANT)
        response = world.client.post(
            "/login", data={"username": "tom", "password": PASSWORD}, follow_redirects=False
        )
    assert response.status_code == 303
    cookie = next(
        value
        for name, value in response.headers.multi_items()
        if name == "set-cookie" and value.startswith(f"{SESSION_COOKIE}=")
    )
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= attributes


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    token_file = tmp_path / "metrics.token"
    token_file.write_text(SCRAPE_TOKEN + "\n")
    with world_for(db_url, tmp_path, metrics_token_file=token_file) as w:
        w.user("tom", Role.TENANT)
        yield w


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_metrics_need_the_scrape_token_when_one_is_set(world: World) -> None:
    body = problem(world.client.get("/metrics"), 401)
    assert body["detail"] == "metrics need the scrape token"
    refused = world.client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401 and "Basic" in refused.headers["www-authenticate"]
    tenant = world.login("tom")  # an API token is not the scrape token
    assert world.client.get("/metrics", headers=tenant).status_code == 401
    assert world.client.get("/metrics", headers={"Authorization": "Basic !!"}).status_code == 401
    bearer = world.client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert bearer.status_code == 200 and "boilertwin_" in bearer.text
    as_basic = world.client.get(
        "/metrics", headers={"Authorization": basic("prometheus", SCRAPE_TOKEN)}
    )
    assert as_basic.status_code == 200


def test_a_short_scrape_token_is_a_configuration_error(tmp_path: Path) -> None:
    short = tmp_path / "short.token"
    short.write_text("abc")
    with pytest.raises(ConfigError, match="metrics_token_file"):
        CloudSettings(metrics_token_file=short).metrics_token()


def test_a_form_posted_with_origin_null_is_refused(world: World) -> None:
    tom = Visitor(world, "tom")
    refused = tom.client.post(
        "/logout", data={"csrf": tom.csrf}, headers={"Origin": "null"}, follow_redirects=False
    )
    assert refused.status_code == 403
    login = world.client.post(
        "/login",
        data={"username": "tom", "password": PASSWORD},
        headers={"Origin": "null"},
        follow_redirects=False,
    )
    assert login.status_code == 403
    same_site = tom.client.post(
        "/logout",
        data={"csrf": tom.csrf},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert same_site.status_code == 303
