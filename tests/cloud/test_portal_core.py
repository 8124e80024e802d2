"""The portal's core, in-process on SQLite and PostgreSQL: log-in and log-out with the API's
users, form tokens, role checks on the boiler page exactly as the API makes them, the
restart button's reason, and error pages."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import cloud.api.docs_pages
import cloud.portal
from cloud.domain import Role
from cloud.notify import notify
from cloud.portal.session import SESSION_COOKIE
from protocols.reference import BoilerStatus
from tests.cloud.api_helpers import T0, World, world_for
from tests.cloud.portal_helpers import Visitor, page_text
from tests.cloud.service_helpers import DEV, engineer, lockout_boiler


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    """Olivia owns and Tom rents the boiler, online and locked out on F28; support Sue."""
    with world_for(db_url, tmp_path) as world:
        lockout_boiler(world)
        world.value(DEV, "flow_temp", 41.5, T0)
        world.user("sue", Role.SUPPORT)
        world.user("ann", Role.TENANT)
        world.user("otto", Role.OWNER)
        world.boiler("boiler-0002", owner="otto", tenant="ann")
        yield world


def test_login_sends_each_role_to_its_main_page(world: World) -> None:
    engineer(world, "eve")
    for user_id, main in (("tom", "/tenant"), ("olivia", "/owner"), ("sue", "/fleet")):
        visitor = Visitor(world, None)
        response = visitor.client.post(
            "/login",
            data={"username": user_id, "password": "correct horse battery"},
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert response.headers["location"] == main
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")


def test_wrong_password_shows_the_form_again_with_a_message(world: World) -> None:
    visitor = Visitor(world, None)
    response = visitor.client.post("/login", data={"username": "tom", "password": "nope"})
    assert response.status_code == 401
    assert "do not match" in page_text(response.text)
    assert SESSION_COOKIE not in visitor.client.cookies


def test_pages_need_a_session_and_come_back_after_login(world: World) -> None:
    visitor = Visitor(world, None)
    response = visitor.client.get(f"/boilers/{DEV}", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next=/boilers/{DEV}"
    after = visitor.client.post(
        "/login",
        data={"username": "tom", "password": "correct horse battery", "next": f"/boilers/{DEV}"},
        follow_redirects=False,
    )
    assert after.headers["location"] == f"/boilers/{DEV}"


def test_login_never_redirects_off_site(world: World) -> None:
    visitor = Visitor(world, None)
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        response = visitor.client.post(
            "/login",
            data={"username": "tom", "password": "correct horse battery", "next": target},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/tenant", target


def test_logout_revokes_the_session_token(world: World) -> None:
    tom = Visitor(world, "tom")
    token = tom.client.cookies[SESSION_COOKIE]
    location, message = tom.submit("/logout")
    assert location == "/login" and "logged out" in message
    api = world.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 401, "the portal session is an API token; log-out revokes it"


def test_a_form_without_its_token_is_refused(world: World) -> None:
    tom = Visitor(world, "tom")
    response = tom.client.post("/logout", data={"csrf": "forged"}, follow_redirects=False)
    assert response.status_code == 403
    assert "expired" in page_text(response.text)
    cross = tom.client.post(
        "/logout", data={"csrf": tom.csrf}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403 and "cross-site" in page_text(cross.text)


def test_tenant_sees_their_boiler_now_in_plain_words(world: World) -> None:
    text = Visitor(world, "tom").text(f"/boilers/{DEV}")
    assert "The boiler has locked out and is not heating" in text
    assert "Fault F28" in text
    assert "Locked out: needs an engineer's reset" in text
    assert "41.5 °C" in text and "1.50 bar" in text
    assert "Request a service" in text


def test_a_tenant_cannot_open_another_tenants_boiler_page(world: World) -> None:
    ann = Visitor(world, "ann")
    text = ann.text(f"/boilers/{DEV}", status=404)
    assert "no boiler" in text.lower()
    api = world.client.get(f"/api/v1/boilers/{DEV}", headers=world.login("ann"))
    assert api.status_code == 404, "the page and the API agree"
    assert ann.get(f"/boilers/{DEV}/live").status_code == 404
    assert Visitor(world, "otto").get(f"/boilers/{DEV}").status_code == 404

    # the error page keeps the visitor's navigation, as any page does
    markup = ann.get(f"/boilers/{DEV}").text
    assert (
        'id="error-detail"' in markup and "Log out" in markup and 'href="/notifications"' in markup
    )
    assert "Log out" not in Visitor(world, None).get("/no-such-page").text  # nobody logged in


def test_every_role_sees_exactly_the_boilers_the_api_shows_them(world: World) -> None:
    engineer(world, "eve")
    for user_id in ("tom", "ann", "olivia", "otto", "sue", "eve"):
        visitor = Visitor(world, user_id)
        for device_id in (DEV, "boiler-0002"):
            api = world.client.get(f"/api/v1/boilers/{device_id}", headers=world.login(user_id))
            assert visitor.get(f"/boilers/{device_id}").status_code == api.status_code, (
                user_id,
                device_id,
            )


def test_support_restart_button_is_enabled_in_lockout(world: World) -> None:
    response = Visitor(world, "sue").get(f"/boilers/{DEV}")
    assert 'id="restart-button"' in response.text
    assert 'id="restart-why"' not in response.text


def test_restart_button_says_why_when_the_boiler_is_not_locked_out(world: World) -> None:
    world.twin(DEV, status=4, fault_code=0)
    response = Visitor(world, "sue").get(f"/boilers/{DEV}")
    button = response.text.split('id="restart-button"', 1)[1].split(">", 1)[0]
    assert "disabled" in button
    assert "No restart needed: the boiler is not locked out." in page_text(response.text)
    assert 'class="why"' not in response.text  # said calmly, not as an error
    world.twin(DEV, status=int(BoilerStatus.LOCKOUT), fault_code=28, connection="offline")
    offline = Visitor(world, "sue").get(f"/boilers/{DEV}").text
    assert 'class="why" id="restart-why">Not available:' in offline  # a real refusal is red


def test_support_restart_from_the_page_creates_one_command(world: World) -> None:
    sue = Visitor(world, "sue")
    fields = {"reason": "Customer confirmed the gas supply is back", "key": "k-1"}
    location, message = sue.submit(f"/boilers/{DEV}/restart", **fields)
    assert location.startswith(f"/boilers/{DEV}?command=")
    assert "Restart requested" in message
    again, said = sue.submit(f"/boilers/{DEV}/restart", **fields)
    assert again == location and "already requested" in said
    commands = world.client.get(
        f"/api/v1/boilers/{DEV}/commands", headers=world.login("sue")
    ).json()["items"]
    assert len(commands) == 1 and commands[0]["requested_by"] == "sue"
    text = sue.text(location)
    assert "Restart requested" in text and "created" in text


def test_a_refused_restart_comes_back_with_the_reason(world: World) -> None:
    location, message = Visitor(world, "sue").submit(f"/boilers/{DEV}/restart", reason="x")
    assert location == f"/boilers/{DEV}"
    assert "support must record a reason" in message


def test_unknown_pages_are_html_and_the_api_stays_json(world: World) -> None:
    tom = Visitor(world, "tom")
    response = tom.get("/no/such/page")
    assert response.status_code == 404 and "text/html" in response.headers["content-type"]
    api = tom.get("/api/v1/no/such/thing")
    assert api.headers["content-type"].startswith("application/problem+json")


def test_notifications_link_to_what_they_are_about(world: World) -> None:
    with world.db() as session:
        notify(
            session,
            ["tom"],
            "boiler_alarm",
            "Your boiler needs attention",
            "F28",
            now_ms=T0,
            device_id=DEV,
        )
    tom = Visitor(world, "tom")
    assert "Your boiler needs attention" in tom.text("/notifications")
    rows = world.client.get("/api/v1/notifications", headers=world.login("tom")).json()["items"]
    location, _ = tom.submit(f"/notifications/{rows[0]['id']}/open")
    assert location == f"/boilers/{DEV}"
    assert (
        world.client.get("/api/v1/notifications?unread=true", headers=world.login("tom")).json()[
            "items"
        ]
        == []
    )


def test_vendored_javascript_is_served_as_pinned(world: World) -> None:
    vendor = Path(cloud.portal.__file__).parent / "static" / "vendor"
    table = (vendor / "VENDOR.md").read_text()
    pinned = dict(re.findall(r"\| `([^`]+\.js)` .*\| ([0-9a-f]{64}) \|", table))
    licences = re.findall(r"\(`([^`]+\.LICENSE)`\)", table)
    assert set(pinned) == {p.name for p in vendor.glob("*.js")}
    assert len(licences) == len(pinned) and all((vendor / name).exists() for name in licences)
    users = (Path(cloud.portal.__file__).parent / "templates" / "base.html").read_text()
    users += Path(cloud.api.docs_pages.__file__).read_text()
    anonymous = Visitor(world, None)
    for name, digest in pinned.items():
        assert f"/static/vendor/{name}" in users, name
        served = anonymous.get(f"/static/vendor/{name}")
        assert served.status_code == 200
        assert hashlib.sha256(served.content).hexdigest() == digest, name


def test_an_unexpected_error_on_a_page_is_a_plain_500_page(world: World) -> None:
    @world.app.get("/boom-page")
    def boom() -> None:
        raise RuntimeError("secret internals at /etc/boilertwin")

    response = Visitor(world, "tom").get("/boom-page")
    assert response.status_code == 500
    assert "text/html" in response.headers["content-type"]
    assert "secret" not in response.text
    assert "Something went wrong" in page_text(response.text)
    assert "Log out" in response.text  # the navigation stays


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_api_docs_need_no_network_beyond_the_cloud(world: World, path: str) -> None:
    page = world.client.get(path)
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/static/") for s in sources), sources
    assert "https://" not in page.text.replace("https://github.com", "")
    for source in sources:
        assert world.client.get(source).status_code == 200, source
    assert world.client.get("/static/favicon.svg").headers["content-type"].startswith("image/svg")


def test_reliability_says_what_it_rests_on(world: World) -> None:
    world.uplink(DEV, 1, world.clock() - 2 * 86_400_000)
    text = Visitor(world, "sue").text(f"/boilers/{DEV}")
    assert (
        "Not judged yet against the 98% guarantee: judged once the window is at least 7 days"
        in text
    )
    assert "Below the 98% guarantee" not in text and "Meets the 98% guarantee" not in text
    assert "observed" in text
