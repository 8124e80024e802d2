"""The service story through the portal's forms, in-process on SQLite and PostgreSQL: the
owner approves, invited engineers answer, the owner chooses from the shortlist the API
ranks, the contracted engineer reports the repair and restarts the boiler, the tenant rates
the service; and who sees what on the job and engineer pages, as the API decides it."""

from __future__ import annotations

import asyncio
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from cloud.domain import Role
from cloud.models import Job, ThreadEvent, Twin, User
from cloud.portal.feed import ChangeFeed, job_key, source_for, twin_key
from cloud.portal.render import money, number, percent
from cloud.proof_zip import check_bundle
from tests.cloud.api_helpers import World, world_for
from tests.cloud.portal_helpers import Visitor, page_text
from tests.cloud.service_helpers import DEV, Portal, engineer, lockout_boiler, north, running

REFUSED_BEFORE = "report the completed repair first: a restart follows the completion report"


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    """The boiler in lockout (owner olivia, tenant tom, support sue); engineers eve and
    eddie are invited to repairs, ulf lacks the skills and never is."""
    with world_for(
        db_url, tmp_path, verify_normal_s=60.0, newcomer_slots=0, invite_fraction=1.0
    ) as w:
        lockout_boiler(w)
        w.user("sue", Role.SUPPORT)
        engineer(w, "eve", invitations=4, accepted=3, evaluated=2, cs_sum=9.0, sq_sum=8.0)
        engineer(w, "eddie", invitations=2, accepted=1, evaluated=1, cs_sum=3.0, sq_sum=3.0)
        engineer(w, "ulf", skills=("gas_safe",))
        yield w


@pytest.fixture
def portal(world: World) -> Portal:
    return Portal(world)


def tenant_request(portal: Portal) -> str:
    """Tom raises a repair through the API: the job id, waiting for olivia."""
    return str(portal.raise_job("tom")["id"])


def approved(world: World, portal: Portal) -> str:
    """A repair raised by tom and approved by olivia on the job page: crowdsourcing."""
    job_id = tenant_request(portal)
    location, message = Visitor(world, "olivia").submit(f"/jobs/{job_id}/authorize", approve="yes")
    assert location == f"/jobs/{job_id}" and "info:Approved" in message, message
    assert portal.state(job_id) == "crowdsourcing"
    return job_id


def answer(visitor: Visitor, job_id: str, quote: float, km: float) -> str:
    """An invited engineer says they are available on the job page; the message shown."""
    where = north(km)
    location, message = visitor.submit(
        f"/jobs/{job_id}/respond",
        available="yes",
        quote=quote,
        lat=where["lat"],
        lon=where["lon"],
        note="can come today",
    )
    assert location == f"/jobs/{job_id}"
    return message


CONTROL = re.compile(r"<(input|select|textarea)\b([^>]*)>")


def assert_labelled(html: str) -> None:
    """Every visible form control has a ``<label for>`` naming its id."""
    for tag, attributes in CONTROL.findall(html):
        if 'type="hidden"' in attributes:
            continue
        found = re.search(r'\bid="([^"]+)"', attributes)
        assert found, (tag, attributes)
        assert f'<label for="{found.group(1)}"' in html, (tag, found.group(1))


def button(html: str, element_id: str) -> str:
    """The opening tag of the element with `element_id`."""
    return html.split(f'id="{element_id}"', 1)[1].split(">", 1)[0]


def row_text(html: str, engineer_id: str) -> str:
    """The visible text of one shortlist row."""
    table = html.split('id="shortlist"', 1)[1].split("</table>", 1)[0]
    row = table.split(f'data-engineer="{engineer_id}"', 1)[1].split("</tr>", 1)[0]
    return page_text("<body>" + row)


def shown_numbers(candidate: dict[str, Any]) -> list[str]:
    """How the page words the API's figures for one shortlisted engineer."""
    figures = candidate["figures"]
    said = [
        f"{number(candidate['rank_pct'], 0)}%",
        number(candidate["distance_km"], 1, "km"),
        number(candidate["travel_min"], 0, "min"),
        number(candidate["co2_kg"], 2, "kg"),
        money(candidate["quote"]),
        number(candidate["performance"], 3),
        percent(figures["ar"], 0),
        number(figures["cs"], 2),
        number(figures["sq"], 2),
    ]
    return [text.replace("\N{NO-BREAK SPACE}", " ") for text in said]


def test_the_whole_service_story_through_the_portal(world: World, portal: Portal) -> None:
    tom, olivia = Visitor(world, "tom"), Visitor(world, "olivia")
    eve, eddie = Visitor(world, "eve"), Visitor(world, "eddie")
    job_id = tenant_request(portal)
    waiting = olivia.get(f"/jobs/{job_id}").text
    assert 'data-state="pending_authorization"' in waiting
    assert 'id="approve-button"' in waiting and 'id="decline-button"' in waiting
    assert 'id="approve-button"' not in tom.get(f"/jobs/{job_id}").text

    location, message = olivia.submit(f"/jobs/{job_id}/authorize", approve="yes", note="go")
    assert location == f"/jobs/{job_id}" and "info:Approved" in message
    assert portal.state(job_id) == "crowdsourcing"
    assert sorted(portal.invited(job_id)) == ["eddie", "eve"]

    invited = eve.get(f"/jobs/{job_id}").text
    assert 'id="respond-button"' in invited and 'id="deadline"' in invited
    assert "Thank you" in answer(eve, job_id, 190.0, 1.0)
    assert "Your answer: accepted" in eve.text(f"/jobs/{job_id}")
    answer(eddie, job_id, 150.0, 4.0)
    assert portal.state(job_id) == "shortlisted"

    for principle in ("low_carbon", "cheapest"):
        api = portal.get("olivia", f"/jobs/{job_id}/shortlist", principle=principle).json()
        html = olivia.get(f"/jobs/{job_id}", principle=principle).text
        order = re.findall(r'<tr data-engineer="([^"]+)"', html.split('id="shortlist"', 1)[1])
        assert order == [c["engineer_id"] for c in api["candidates"]], principle
        for candidate in api["candidates"]:
            shown = row_text(html, candidate["engineer_id"])
            for figure in shown_numbers(candidate):
                assert figure in shown, (principle, figure, shown)
        assert f'id="choose-{api["candidates"][0]["engineer_id"]}"' in html
    assert "straight-line distance \N{MULTIPLICATION SIGN} 1.3" in olivia.text(f"/jobs/{job_id}")
    tenant_view = tom.get(f"/jobs/{job_id}").text
    assert 'id="shortlist"' in tenant_view and 'id="choose-' not in tenant_view

    location, message = olivia.submit(
        f"/jobs/{job_id}/select", engineer_id="eve", principle="low_carbon"
    )
    assert "Booked with eve" in message
    assert portal.job("olivia", job_id)["engineer_id"] == "eve"
    assert portal.state(job_id) == "contracted"

    now = world.clock()
    world.samples(DEV, "flow_temp", [(now - 3_600_000, 55.0), (now - 1_800_000, 61.0)])
    world.samples(DEV, "ch_pressure", [(now - 3_600_000, 1.4), (now - 1_800_000, 1.5)])
    before = eve.get(f"/jobs/{job_id}").text
    assert "disabled" in button(before, "restart-button")
    assert f"Not available: {REFUSED_BEFORE}" in page_text(before)
    assert "1 Piccadilly, Manchester" in before, "the contract brings the address"
    assert 'id="faults"' in before and "F28" in page_text(before)
    assert 'aria-label="Temperatures"' in before and 'aria-label="Water pressure"' in before
    assert "Flow: latest 61.0" in page_text(before)

    location, message = eve.submit(
        f"/jobs/{job_id}/complete",
        cause="worn ignition electrode",
        actions="replaced, tested",
        parts="electrode, seal",
    )
    assert "Repair reported" in message
    report = portal.job("olivia", job_id)["report"]
    assert report["parts"] == ["electrode", "seal"] and report["cause"] == "worn ignition electrode"
    after = eve.get(f"/jobs/{job_id}").text
    assert "disabled" not in button(after, "restart-button")
    assert 'id="restart-why"' not in after
    assert "Repair reported: worn ignition electrode" in after

    location, message = eve.submit(
        f"/boilers/{DEV}/restart",
        reason="Repair reported: worn ignition electrode",
        key="eve-1",
        back=f"/jobs/{job_id}",
    )
    assert location.startswith(f"/jobs/{job_id}?command=") and "Restart requested" in message
    commands = portal.get("sue", f"/boilers/{DEV}/commands").json()["items"]
    assert [c["requested_by"] for c in commands] == ["eve"]
    assert 'id="command-state"' in eve.get(location).text

    portal.verify(job_id)
    token = portal.told("tom", "evaluate", job_id)[0]["data"]["evaluation_token"]
    rating = tom.get(f"/jobs/{job_id}").text
    assert 'id="evaluate"' in rating and 'id="evaluate-button"' in rating
    assert "How satisfied are you with the service?" in rating
    assert "How good was the repair?" in rating
    assert 'id="evaluate-button"' not in olivia.get(f"/jobs/{job_id}").text
    pages = [rating, tom.get("/notifications").text, tom.get("/jobs").text]

    location, message = tom.submit(f"/jobs/{job_id}/evaluate", cs=5, sq=4, comment="tidy")
    assert location == f"/jobs/{job_id}#evaluate" and "Thank you" in message
    assert portal.state(job_id) == "evaluated"
    done = tom.get(f"/jobs/{job_id}").text
    assert "Thank you" in page_text(done) and "Satisfaction 5/5, repair quality 4/5" in done
    assert 'id="evaluate-button"' not in done
    pages += [done, tom.get("/notifications").text, olivia.get(f"/jobs/{job_id}").text]
    for html in pages:
        assert token not in html, "the one-time token never reaches a page"
    for html in (waiting, invited, before, after, rating, tenant_view, eve.get("/engineer").text):
        assert_labelled(html)
    assert portal.profile("eve")["history"]["evaluated"] == 3
    staff = Visitor(world, "sue").get(f"/jobs/{job_id}").text
    assert 'data-state="evaluated"' in staff and "Satisfaction 5/5" in staff

    thread = olivia.get(f"/jobs/{job_id}").text.split('id="thread"', 1)[1]
    kinds = re.findall(r'data-kind="([a-z_]+)"', thread)
    api_kinds = [e["kind"] for e in portal.thread(job_id)]
    assert kinds == api_kinds and "evaluation" in kinds and "command" in kinds

    # a decision: engineers never see the shortlist (their rivals' quotes), not even the
    # one who won the contract
    assert portal.get("eve", f"/jobs/{job_id}/shortlist").status_code == 403
    assert 'id="shortlist"' not in Visitor(world, "eve").get(f"/jobs/{job_id}").text

    # the proof button downloads the same bundle as the API, and it holds
    assert 'href="/jobs/' + job_id + '/proof"' in olivia.get(f"/jobs/{job_id}").text
    download = olivia.get(f"/jobs/{job_id}/proof")
    assert download.status_code == 200
    assert download.headers["content-disposition"] == f'attachment; filename="proof-{job_id}.zip"'
    report = check_bundle(download.content, world.commands.key.key.public_key())
    assert report.ok and report.job == job_id, report.problems
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        trail = json.loads(archive.read("audit.json"))
    acted = [(e["actor"], e["action"], e["outcome"]) for e in trail]
    assert ("olivia", "POST /jobs/{job_id}/authorize", "done") in acted
    assert ("eve", "POST /jobs/{job_id}/respond", "done") in acted
    assert ("tom", "POST /jobs/{job_id}/evaluate", "done") in acted
    assert all(e["address"] == "testclient" for e in trail)
    for person in ("tom", "eve", "sue"):  # tenant, contracted engineer, support
        assert Visitor(world, person).get(f"/jobs/{job_id}/proof").status_code == 200, person


def test_the_owner_declines_with_a_note(world: World, portal: Portal) -> None:
    job_id = tenant_request(portal)
    olivia = Visitor(world, "olivia")
    _, message = olivia.submit(f"/jobs/{job_id}/authorize", approve="no", note="not now")
    assert "info:Declined" in message and portal.state(job_id) == "declined"
    again, refused = olivia.submit(f"/jobs/{job_id}/authorize", approve="yes")
    assert again == f"/jobs/{job_id}" and "not awaiting authorisation" in refused
    assert "Reason: not now" in Visitor(world, "tom").text(f"/jobs/{job_id}")


def test_only_the_owner_authorises_and_the_refusal_reads_as_the_apis(
    world: World, portal: Portal
) -> None:
    job_id = tenant_request(portal)
    _, message = Visitor(world, "tom").submit(f"/jobs/{job_id}/authorize", approve="yes")
    api = portal.post("tom", f"/jobs/{job_id}/authorize", {"approve": True})
    assert message == "error:" + portal.refused(api, 403)


def test_the_tenant_cancels_their_request(world: World, portal: Portal) -> None:
    job_id = tenant_request(portal)
    tom = Visitor(world, "tom")
    assert 'id="cancel-button"' in tom.get(f"/jobs/{job_id}").text
    _, message = tom.submit(f"/jobs/{job_id}/cancel", reason="fixed itself")
    assert "cancelled" in message and portal.state(job_id) == "cancelled"
    assert 'id="cancel-button"' not in tom.get(f"/jobs/{job_id}").text


def test_an_invited_engineer_sees_no_people_and_an_uninvited_one_nothing(
    world: World, portal: Portal
) -> None:
    job_id = approved(world, portal)
    html = Visitor(world, "eve").get(f"/jobs/{job_id}").text
    text = page_text(html)
    assert "1 Piccadilly" not in html
    for person in ("olivia", "tom"):
        assert not re.search(rf"\b{person}\b", text), person
    assert 'id="now"' not in html
    # what they need to decide: the model, the fault, the area, and the twin (without people)
    assert f'<a href="/boilers/{DEV}" id="boiler-link">' in html
    about = page_text(html.split('id="about-boiler"', 1)[1].split("</section>", 1)[0])
    assert "Fault now F28" in about and "Area Manchester" in about, about
    assert 'id="thread"' not in html and 'id="shortlist"' not in html
    assert "Urgency" in text and 'id="respond-button"' in html

    assert 'id="proof-button"' not in html
    assert Visitor(world, "eve").get(f"/jobs/{job_id}/proof").status_code == 403
    assert portal.get("eve", f"/jobs/{job_id}/proof").status_code == 403

    ulf = Visitor(world, "ulf")
    assert ulf.get(f"/jobs/{job_id}/proof").status_code == 404
    assert portal.get("ulf", f"/jobs/{job_id}/proof").status_code == 404
    assert portal.get("ulf", f"/jobs/{job_id}").status_code == 404
    assert ulf.get(f"/jobs/{job_id}").status_code == 404
    assert ulf.post(f"/jobs/{job_id}/respond", available="no").status_code == 404
    assert Visitor(world, "tom").get("/jobs/no-such-job").status_code == 404


def test_an_available_answer_needs_a_quote_and_a_location(world: World, portal: Portal) -> None:
    job_id = approved(world, portal)
    eve = Visitor(world, "eve")
    _, message = eve.submit(f"/jobs/{job_id}/respond", available="yes")
    assert "quote" in message
    _, message = eve.submit(f"/jobs/{job_id}/respond", available="yes", quote=190)
    assert "location" in message
    assert portal.state(job_id) == "crowdsourcing"
    location, message = eve.submit(f"/jobs/{job_id}/respond", available="no")
    assert location == "/engineer" and "not available" in message
    assert eve.get(f"/jobs/{job_id}").status_code == 404, "a declined invitation closes the job"
    mine = eve.get("/engineer").text
    assert f'id="answer-{job_id}"' not in mine and 'data-state="declined"' in mine


def test_only_the_end_user_with_a_notice_may_rate(world: World, portal: Portal) -> None:
    job_id = portal.crowdsourced()
    assert portal.decline("eddie", job_id).status_code == 200
    assert portal.answer("eve", job_id).status_code == 200
    assert portal.select("eve", job_id).status_code == 200
    assert portal.complete("eve", job_id).status_code == 200
    portal.verify(job_id)
    _, message = Visitor(world, "olivia").submit(f"/jobs/{job_id}/evaluate", cs=5, sq=5)
    assert "no invitation to rate" in message
    _, message = Visitor(world, "tom").submit(f"/jobs/{job_id}/evaluate", cs=9, sq=5)
    assert message.startswith("error:cs:")
    assert portal.state(job_id) == "verified"


def test_jobs_list_shows_visible_jobs_with_a_state_filter(world: World, portal: Portal) -> None:
    first = tenant_request(portal)
    world.clock.now += 1000
    second = approved(world, portal)
    tom = Visitor(world, "tom")
    html = tom.get("/jobs").text
    assert html.index(f'id="job-{second}"') < html.index(f'id="job-{first}"'), "newest first"
    filtered = tom.get("/jobs", state="crowdsourcing").text
    assert f'id="job-{second}"' in filtered and f'id="job-{first}"' not in filtered
    assert '<label for="state">' in filtered
    assert "Engineers invited, waiting for answers" in page_text(filtered)
    assert f'id="job-{second}"' not in Visitor(world, "ulf").get("/jobs").text


def test_engineer_page_lists_invitations_jobs_and_figures(world: World, portal: Portal) -> None:
    job_id = approved(world, portal)
    eve = Visitor(world, "eve")
    html = eve.get("/engineer").text
    assert f'id="answer-{job_id}"' in html
    text = page_text(html)
    assert "repair: no heating" in text
    assert "75.0%" in text and "4.50" in text and "4.00" in text
    assert 'href="/engineers/eve"' in html
    assert "No contracted jobs yet" in text
    job = world.client.get("/api/v1/invitations", headers=world.login("eve")).json()["items"]
    assert [i["job_id"] for i in job] == [job_id]


def test_engineer_availability_toggle(world: World, portal: Portal) -> None:
    eve = Visitor(world, "eve")
    assert 'data-available="yes"' in eve.get("/engineer").text
    location, message = eve.submit("/engineer/availability", available="no")
    assert location == "/engineer" and "paused" in message
    assert portal.profile("eve")["available"] is False
    assert 'data-available="no"' in eve.get("/engineer").text
    eve.submit("/engineer/availability", available="yes")
    assert portal.profile("eve")["available"] is True


def test_engineer_page_is_for_engineers_only(world: World) -> None:
    for user_id in ("tom", "olivia", "sue"):
        visitor = Visitor(world, user_id)
        assert "this page is for engineers" in visitor.text("/engineer", status=403)
        assert visitor.post("/engineer/availability", available="no").status_code == 403


def test_a_flagged_request_goes_ahead_with_a_reason(world: World, portal: Portal) -> None:
    running(world)
    job_id = str(portal.raise_job("olivia")["id"])
    assert portal.state(job_id) == "flagged"
    olivia = Visitor(world, "olivia")
    html = olivia.get(f"/jobs/{job_id}").text
    assert 'id="confirm-button"' in html and 'id="approve-button"' not in html
    assert 'id="confirm-button"' not in Visitor(world, "tom").get(f"/jobs/{job_id}").text
    _, refused = olivia.submit(f"/jobs/{job_id}/confirm", note="")
    assert refused == "error:say why the request stands despite the live data"
    _, message = olivia.submit(f"/jobs/{job_id}/confirm", note="it cuts out at night")
    assert "Confirmed" in message and portal.state(job_id) == "crowdsourcing"


def test_a_job_recorded_before_the_chain_has_no_proof(world: World, portal: Portal) -> None:
    job_id = tenant_request(portal)
    with world.db() as session:
        session.execute(
            update(ThreadEvent).where(ThreadEvent.subject == job_id).values(chain_seq=None)
        )
    refused = portal.get("olivia", f"/jobs/{job_id}/proof")
    assert refused.status_code == 409
    assert "recorded before the thread was chained" in refused.json()["detail"]
    page = Visitor(world, "olivia").get(f"/jobs/{job_id}/proof")
    assert page.status_code == 409 and "recorded before the thread was chained" in page.text


def test_pages_name_people_not_logins(world: World, portal: Portal) -> None:
    with world.db() as session:
        session.get_one(User, "olivia").display_name = "Olivia Okafor"
        session.get_one(User, "tom").display_name = "Tom Tenant"
    job_id = tenant_request(portal)
    people = page_text(Visitor(world, "olivia").get(f"/jobs/{job_id}").text.split('id="people"')[1])
    assert people.startswith(">Requested by Tom Tenant · owner Olivia Okafor · tenant Tom Tenant")
    boiler = Visitor(world, "sue").get(f"/boilers/{DEV}").text.split('id="boiler-people"')[1]
    assert "Owner Olivia Okafor · Tenant Tom Tenant" in page_text(boiler)


async def test_a_changed_job_wakes_its_live_page(world: World, portal: Portal) -> None:
    """The feed behind the live job page: a job written by anyone wakes the streams watching
    it (PostgreSQL: migration 0014's trigger; SQLite: the poll), and a stream watching a job
    and its boiler is woken by either."""
    job_id = tenant_request(portal)
    url = str(world.sessions.kw["bind"].url.render_as_string(hide_password=False))
    feed = ChangeFeed(source_for(url, world.sessions, poll_s=0.05))

    async def woken(event: asyncio.Event) -> bool:
        try:
            async with asyncio.timeout(5):
                await event.wait()
        except TimeoutError:
            return False
        event.clear()
        return True

    with feed.watch(job_key(job_id), twin_key(DEV)) as page, feed.watch(job_key("x")) as other:
        assert await woken(page)  # the first look
        await woken(other)
        await asyncio.sleep(0.2)
        with world.db() as session:
            session.execute(
                update(Job).where(Job.id == job_id).values(updated_ms=Job.updated_ms + 1)
            )
        assert await woken(page), "the job changed"
        assert not other.is_set()
        with world.db() as session:
            session.execute(
                update(Twin).where(Twin.device_id == DEV).values(version=Twin.version + 1)
            )
        assert await woken(page), "its boiler changed"
