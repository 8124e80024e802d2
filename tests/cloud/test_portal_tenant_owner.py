"""The tenant's and the owner's main pages and the service-request form, in-process on SQLite
and PostgreSQL: each lists exactly what the API shows the visitor, refuses other roles, and
the form raises requests exactly as ``POST /api/v1/jobs`` does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.domain import Role
from cloud.models import Reminder
from cloud.notify import NotificationKind, notify
from tests.cloud.api_helpers import T0, World, world_for
from tests.cloud.portal_helpers import Visitor, page_text
from tests.cloud.service_helpers import DEV, Portal, engineer, lockout_boiler

OTHER = "boiler-0002"
"""Ann rents it from Otto."""
FORM = "/requests/new"


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    """Olivia owns and Tom rents DEV (locked out on F28); Otto and Ann, another boiler."""
    with world_for(
        db_url, tmp_path, verify_normal_s=60.0, newcomer_slots=0, invite_fraction=1.0
    ) as world:
        lockout_boiler(world)
        world.user("sue", Role.SUPPORT)
        world.user("ann", Role.TENANT)
        world.user("otto", Role.OWNER)
        world.boiler(OTHER, owner="otto", tenant="ann", address="9 Other Street")
        yield world


@pytest.fixture
def api(world: World) -> Portal:
    return Portal(world)


def jobs_seen(world: World, user_id: str) -> list[dict[str, Any]]:
    """The jobs `user_id` sees through the API."""
    response = world.client.get("/api/v1/jobs", headers=world.login(user_id))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def request_fields(**changes: str) -> dict[str, str]:
    """A complete request form for DEV (a repair, no heating), with `changes`."""
    fields = {
        "device": DEV,
        "service_type": "repair",
        "problem": "no_heating",
        "description": "Radiators cold since this morning",
        "preferred_time": "2026-09-22T10:00",
        "principle": "low_carbon",
        "key": "form-1",
    }
    return fields | changes


# --- The tenant's page --------------------------------------------------------------------


def test_tenant_page_shows_their_boiler_live_and_no_other(world: World) -> None:
    response = Visitor(world, "tom").get("/tenant")
    assert response.status_code == 200
    markup, text = response.text, page_text(response.text)
    assert 'id="now"' in markup and f'sse-connect="/boilers/{DEV}/live"' in markup
    assert 'sse-swap="now"' in markup and 'id="alarm-banner"' in markup
    assert "The boiler has locked out and is not heating" in text
    assert "Locked out: needs an engineer's reset" in text
    assert f'href="/requests/new?device={DEV}" id="request-service"' in markup
    assert f'href="/boilers/{DEV}"' in markup and "Details and history" in text
    assert OTHER not in markup and "9 Other Street" not in text
    ann = Visitor(world, "ann").get("/tenant").text
    assert f'sse-connect="/boilers/{OTHER}/live"' in ann and DEV not in ann


def test_tenant_page_links_the_request_in_progress_instead(world: World, api: Portal) -> None:
    job = api.raise_job("tom")
    markup = Visitor(world, "tom").get("/tenant").text
    assert 'id="request-service"' not in markup
    assert f'href="/jobs/{job["id"]}" id="open-job"' in markup
    text = page_text(markup)
    assert "My requests" in text and "Waiting for the owner's approval" in text
    assert job["id"] not in Visitor(world, "ann").get("/tenant").text


def test_tenant_sees_the_annual_check_reminder_with_its_date(world: World) -> None:
    tom = Visitor(world, "tom")
    assert 'id="annual-reminder"' not in tom.get("/tenant").text
    with world.db() as session:
        session.add(Reminder(device_id=DEV, due_date="2027-03-01", sent_ms=T0))
    markup = tom.get("/tenant").text
    assert 'id="annual-reminder"' in markup
    assert "Annual gas-safety check due on 1 Mar 2027" in page_text(markup)
    assert f"/requests/new?device={DEV}&amp;service_type=annual_check" in markup
    assert 'id="annual-reminder"' not in Visitor(world, "ann").get("/tenant").text
    form = tom.get("/requests/new", device=DEV, service_type="annual_check").text
    assert '<option value="annual_check" selected>' in form


def test_the_reminder_notice_alone_is_enough(world: World) -> None:
    with world.db() as session:
        notify(
            session,
            ["ann"],
            NotificationKind.ANNUAL_CHECK_DUE,
            "Annual gas-safety check due on 2026-10-05",
            now_ms=T0,
            device_id=OTHER,
            data={"due": "2026-10-05", "service_type": "annual_check"},
        )
    text = Visitor(world, "ann").text("/tenant")
    assert "Annual gas-safety check due on 5 Oct 2026" in text
    assert "Latest notifications" in text


def test_rate_prompt_only_for_the_tenants_verified_job(world: World, api: Portal) -> None:
    engineer(world, "eve")
    job_id = api.contracted("eve")
    tom = Visitor(world, "tom")
    assert f'id="rate-{job_id}"' not in tom.get("/tenant").text, "not verified yet"
    assert api.complete("eve", job_id).status_code == 200
    api.verify(job_id)
    markup = tom.get("/tenant").text
    assert f'id="rate-{job_id}" href="/jobs/{job_id}#evaluate"' in markup
    assert "Rate the repair" in page_text(markup)
    token = api.told("tom", "evaluate", job_id)[0]["data"]["evaluation_token"]
    assert token not in markup, "a notification's one-time token is never on a page"
    assert "rate-" not in Visitor(world, "ann").get("/tenant").text
    rated = api.post("tom", f"/jobs/{job_id}/evaluation", {"token": token, "cs": 5, "sq": 5})
    assert rated.status_code == 200, rated.text
    assert f'id="rate-{job_id}"' not in tom.get("/tenant").text, "rated once"


# --- The owner's page ---------------------------------------------------------------------


def test_owner_page_lists_properties_in_plain_words(world: World) -> None:
    markup = Visitor(world, "olivia").get("/owner").text
    text = page_text(markup)
    assert "1 Piccadilly, Manchester" in text and f'href="/boilers/{DEV}"' in markup
    assert "Locked out: needs an engineer's reset" in text
    assert f'id="lockout-{DEV}"' in markup and "Online" in text and "F28" in text
    assert "tom" in text
    assert 'data-label="Tenant"' in markup and 'class="stack"' in markup
    assert f'href="/requests/new?device={DEV}"' in markup
    assert OTHER not in markup and "9 Other Street" not in text
    assert DEV not in Visitor(world, "otto").get("/owner").text


def test_owner_sees_the_request_waiting_and_the_contract(world: World, api: Portal) -> None:
    engineer(world, "eve")
    waiting = api.raise_job("tom", problem="fault_shown")
    olivia = Visitor(world, "olivia")
    markup = olivia.get("/owner").text
    assert f'id="review-{waiting["id"]}" href="/jobs/{waiting["id"]}"' in markup
    assert "Requests waiting for you" in page_text(markup)
    assert f'id="review-{waiting["id"]}"' not in Visitor(world, "otto").get("/owner").text
    api.post("olivia", f"/jobs/{waiting['id']}/cancel", {"note": "duplicate"})
    job_id = api.crowdsourced()
    assert api.answer("eve", job_id, quote=185.0).status_code == 200
    shortlisted = olivia.get("/owner").text
    assert f'id="choose-{job_id}" href="/jobs/{job_id}"' in shortlisted
    assert "Choose an engineer" in page_text(shortlisted)
    assert api.select("eve", job_id).status_code == 200
    markup = olivia.get("/owner").text
    contract = markup.split(f'data-job="{job_id}"', 1)[1].split("</tr>", 1)[0]
    assert "Eve" in contract and "£185.00" in contract
    assert "Engineer booked" in page_text(contract)
    assert f'id="review-{waiting["id"]}"' not in markup, "cancelled: nothing to review"


@pytest.mark.parametrize(
    ("path", "allowed", "refused"),
    [
        ("/tenant", "tenants", ("olivia", "sue", "eve")),
        ("/owner", "owners", ("tom", "sue", "eve")),
        (FORM, "owners and tenants", ("sue", "eve")),
    ],
)
def test_each_page_refuses_other_roles(
    world: World, path: str, allowed: str, refused: tuple[str, ...]
) -> None:
    engineer(world, "eve")
    for user_id in refused:
        response = Visitor(world, user_id).get(path, **({"device": DEV} if path == FORM else {}))
        assert response.status_code == 403, (user_id, path)
        assert "text/html" in response.headers["content-type"]
        assert f"this page is for {allowed}" in page_text(response.text)


# --- The request form ---------------------------------------------------------------------


def test_request_form_has_a_label_for_every_control(world: World) -> None:
    markup = Visitor(world, "tom").get(FORM, device=DEV).text
    form = markup.split('id="request-form"', 1)[1].split("</form>", 1)[0]
    controls = re.findall(r"<(input|select|textarea)\b([^>]*)>", form)
    ids = []
    for tag, attributes in controls:
        if 'type="hidden"' in attributes:
            continue
        found = re.search(r'\bid="([^"]+)"', attributes)
        assert found, (tag, attributes)
        ids.append(found.group(1))
    assert {"service_type", "problem", "description", "preferred_time"} <= set(ids)
    assert {"principle-low_carbon", "principle-low_cost", "principle-cheapest"} <= set(ids)
    for control in ids:
        assert f'<label for="{control}"' in form, control
    assert '<optgroup label="Repair"' in form and '<option value="no_heating"' in form
    assert "<legend>" in form and 'name="key" value="portal-' in form
    assert 'type="datetime-local"' in form and 'class="stacked" id="request-form"' in markup
    assert "sent to the owner for approval" not in form
    assert "goes to the owner for approval first" in page_text(markup)


def test_a_tenants_request_waits_for_the_owner(world: World) -> None:
    tom = Visitor(world, "tom")
    location, message = tom.submit("/requests", **request_fields())
    [job] = jobs_seen(world, "tom")
    assert location == f"/jobs/{job['id']}"
    assert "sent to the owner for approval" in message
    assert job["state"] == "pending_authorization" and job["requested_by"] == "tom"
    assert job["description"] == "Radiators cold since this morning"
    # 10:00 in London (British Summer Time) is 09:00 UTC.
    assert job["preferred"] == 1_790_067_600_000
    assert [j["id"] for j in jobs_seen(world, "olivia")] == [job["id"]]


def test_an_owners_request_is_validated_and_engineers_invited(world: World) -> None:
    engineer(world, "eve")
    fields = request_fields(principle="cheapest", preferred_time="")
    location, message = Visitor(world, "olivia").submit("/requests", **fields)
    [job] = jobs_seen(world, "olivia")
    assert location == f"/jobs/{job['id']}"
    assert job["state"] == "crowdsourcing" and job["principle"] == "cheapest"
    assert "engineers invited" in message


def test_a_double_submit_makes_one_job(world: World) -> None:
    tom = Visitor(world, "tom")
    first, _ = tom.submit("/requests", **request_fields(key="twice"))
    again, message = tom.submit("/requests", **request_fields(key="twice"))
    assert again == first and "already sent" in message
    assert len(jobs_seen(world, "tom")) == 1
    keys = {tom.get(FORM, device=DEV).text.split('name="key" value="', 1)[1][:44] for _ in range(2)}
    assert len(keys) == 2, "each render of the form has a fresh key"


def test_invalid_input_returns_to_the_form_with_the_reason(world: World) -> None:
    tom = Visitor(world, "tom")
    for changes, reason in (
        ({"service_type": "polish"}, "unknown service type"),
        ({"problem": "annual_check"}, "problem not valid for repair"),
        ({"problem": ""}, "problem"),
        ({"preferred_time": "soon"}, "preferred time"),
        ({"principle": "fastest"}, "principle"),
    ):
        location, message = tom.submit("/requests", **request_fields(**changes))
        assert location.startswith(f"/requests/new?device={DEV}&"), location
        assert reason in message, (changes, message)
    assert jobs_seen(world, "tom") == []
    back = tom.client.get(location)
    assert back.status_code == 200
    assert "Radiators cold since this morning" in back.text, "what was typed comes back"
    assert "principle" in page_text(back.text)


def test_another_tenants_boiler_is_not_found(world: World) -> None:
    ann = Visitor(world, "ann")
    assert ann.get(FORM, device=DEV).status_code == 404
    assert Visitor(world, "otto").get(FORM, device=DEV).status_code == 404
    assert ann.get("/requests/new", device="no-such-boiler").status_code == 404
    response = ann.post("/requests", follow=False, **request_fields())
    assert response.status_code == 404
    assert jobs_seen(world, "ann") == [] and jobs_seen(world, "tom") == []


def test_other_roles_cannot_post_a_request(world: World) -> None:
    response = Visitor(world, "sue").post("/requests", follow=False, **request_fields())
    assert response.status_code == 403
    assert jobs_seen(world, "sue") == []
