"""The staff pages, in-process on SQLite and PostgreSQL: the fleet overview's counts and list
agree with the API's boiler list for every filter, search and paging, ingest health shows the
API's figures, the engineers directory shows AR, CS and SQ as the API gives them, and
engineer profiles are visible exactly to those the API shows them to."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.domain import Role
from cloud.lifecycle_models import ConfigLayer
from cloud.models import Gap, IngestCounter, Invitation, Job, Twin
from cloud.registry import revoke_device
from protocols.reference import BoilerStatus
from tests.cloud.api_helpers import HOUR, T0, World, world_for
from tests.cloud.portal_helpers import Visitor, page_text
from tests.cloud.service_helpers import engineer

STAFF_ONLY = "this page is for the manufacturer's staff"
FILTERS: tuple[dict[str, str], ...] = (
    {},
    {"connectivity": "online"},
    {"connectivity": "offline"},
    {"connectivity": "stale"},
    {"connectivity": "unknown"},
    {"status": "lockout"},
    {"status": "running"},
    {"q": "mill"},
    {"q": "SN-C"},
    {"q": "%"},
    {"connectivity": "online", "status": "lockout", "q": "boiler"},
)
TILES = {"online": {"connectivity": "online"}, "offline": {"connectivity": "offline"}}
TILES |= {"stale": {"connectivity": "stale"}, "unknown": {"connectivity": "unknown"}}
TILES |= {"lockout": {"status": "lockout"}, "all": {}}


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    """Owners olga and otto, tenant tina, support sue, admin ada; boilers a (online, locked
    out), b (stale, running), c (offline) and d (never connected); engineers eve and eddie."""
    with world_for(db_url, tmp_path) as world:
        for user, role in (
            ("olga", Role.OWNER),
            ("otto", Role.OWNER),
            ("tina", Role.TENANT),
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
            "boiler-b", owner="olga", model="EcoHeat 30", serial="SN-B", address="2 Mill Lane"
        )
        world.boiler("boiler-c", owner="otto", model="CondensPro", serial="SN-C")
        world.boiler("boiler-d", model="CondensPro", serial="SN-D", address="9 High Street")
        lockout = int(BoilerStatus.LOCKOUT)
        world.twin("boiler-a", connection="online", last_seen_ms=T0, status=lockout, fault_code=28)
        world.twin(
            "boiler-b",
            connection="online",
            last_seen_ms=T0 - HOUR,
            status=int(BoilerStatus.RUNNING),
        )
        world.twin("boiler-c", connection="offline", last_seen_ms=T0 - HOUR)
        engineer(
            world,
            "eve",
            invitations=8,
            accepted=7,
            evaluated=3,
            cs_sum=13.0,
            sq_sum=11.0,
            prices={"repair": 185.5, "service": 90.0},
            price_jobs={"repair": 3},
        )
        engineer(
            world,
            "eddie",
            skills=("gas_safe", "boiler_service"),
            invitations=3,
            accepted=1,
            evaluated=1,
            cs_sum=5.0,
            sq_sum=2.0,
        )
        yield world


def api(world: World, user: str, path: str, **params: Any) -> Any:
    """GET an API path as `user`: (status, body)."""
    response = world.client.get(f"/api/v1{path}", params=params, headers=world.login(user))
    return response.status_code, response.json()


def rows(markup: str, table: str) -> list[str]:
    """The ``data-id`` of each row of the table with id `table`."""
    found = re.search(rf'<table[^>]*id="{table}".*?</table>', markup, re.S)
    return re.findall(r'<tr data-id="([^"]+)"', found.group(0)) if found else []


def tile(markup: str, name: str) -> tuple[int, str]:
    """A count tile's number and the address it links to."""
    found = re.search(rf'<a href="([^"]*)" id="count-{name}"><strong>(\d+)</strong>', markup)
    assert found, name
    return int(found.group(2)), found.group(1).replace("&amp;", "&")


def element(markup: str, element_id: str) -> str:
    """The visible text of the element with `element_id` (no nested same-name tags)."""
    found = re.search(rf'<(\w+)[^>]*id="{element_id}"[^>]*>(.*?)</\1>', markup, re.S)
    assert found, element_id
    return page_text(found.group(2))


# --- fleet ----------------------------------------------------------------------------------


def test_the_list_shows_what_the_api_lists_for_every_filter(world: World) -> None:
    sue = Visitor(world, "sue")
    for filters in FILTERS:
        status, body = api(world, "sue", "/boilers", **filters)
        assert status == 200, body
        response = sue.get("/fleet", **filters)
        assert response.status_code == 200, (filters, page_text(response.text))
        assert rows(response.text, "fleet") == [item["id"] for item in body["items"]], filters
        if body["total"]:
            assert f"of {body['total']}" in element(response.text, "fleet-total")


def test_count_tiles_agree_with_the_api_and_link_to_their_list(world: World) -> None:
    ada = Visitor(world, "ada")
    markup = ada.get("/fleet").text
    expected = {"online": 1, "offline": 1, "stale": 1, "unknown": 1, "lockout": 1, "all": 4}
    for name, filters in TILES.items():
        count, href = tile(markup, name)
        _, body = api(world, "ada", "/boilers", **filters)
        assert count == body["total"] == expected[name], name
        assert rows(ada.client.get(href).text, "fleet") == [item["id"] for item in body["items"]]


def test_rows_say_the_state_in_words(world: World) -> None:
    text = page_text(Visitor(world, "sue").get("/fleet", status="lockout").text)
    assert "boiler-a EcoHeat 24 1 Mill Lane olga Online" in text
    assert "Locked out: needs an engineer's reset F28" in text
    markup = Visitor(world, "sue").get("/fleet").text
    assert '<span class="badge lockout">' in markup
    assert '<a href="/boilers/boiler-c">boiler-c</a>' in markup
    for control in ("connectivity", "status", "q"):
        assert f'<label for="{control}">' in markup and f'id="{control}"' in markup


def test_search_and_filters_combine(world: World) -> None:
    sue = Visitor(world, "sue")
    assert rows(sue.get("/fleet", q="mill").text, "fleet") == ["boiler-a", "boiler-b"]
    assert rows(sue.get("/fleet", q="condens").text, "fleet") == ["boiler-c", "boiler-d"]
    assert rows(sue.get("/fleet", q="high street").text, "fleet") == ["boiler-d"]
    assert rows(sue.get("/fleet", q="_").text, "fleet") == []  # a literal _, not a wildcard
    both = sue.get("/fleet", q="mill", connectivity="stale")
    assert rows(both.text, "fleet") == ["boiler-b"]
    assert 'value="stale" selected' in both.text and 'value="mill"' in both.text
    assert "No boilers match" in sue.text("/fleet", q="nothing-like-this")


def test_paging_keeps_the_filters(world: World) -> None:
    for n in range(55):
        world.boiler(f"boiler-p{n:02d}", model="PageHeat")
    sue = Visitor(world, "sue")
    first = sue.get("/fleet", q="pageheat")
    assert len(rows(first.text, "fleet")) == 50
    assert "Boilers 1\N{EN DASH}50 of 55" in page_text(first.text)
    assert (
        'href="/fleet?q=pageheat&amp;page=2"' in first.text and 'id="page-prev"' not in first.text
    )
    second = sue.get("/fleet", q="pageheat", page=2)
    _, body = api(world, "sue", "/boilers", q="pageheat", limit=50, offset=50)
    assert rows(second.text, "fleet") == [item["id"] for item in body["items"]]
    assert len(body["items"]) == 5 and "Boilers 51\N{EN DASH}55 of 55" in page_text(second.text)
    assert 'href="/fleet?q=pageheat"' in second.text and 'id="page-next"' not in second.text
    everything = sue.get("/fleet", page=2)
    assert rows(everything.text, "fleet") == [f"boiler-p{n:02d}" for n in range(46, 55)]


def test_an_unknown_filter_is_explained_with_the_apis_status(world: World) -> None:
    sue = Visitor(world, "sue")
    status, problem = api(world, "sue", "/boilers", status="melting")
    response = sue.get("/fleet", status="melting")
    assert response.status_code == status == 422
    assert "'standby'" in problem["detail"]
    text = element(response.text, "fleet-problem")
    assert "unknown status 'melting'" in text and "known: standby" in text
    assert rows(response.text, "fleet") == []
    assert tile(response.text, "all")[0] == 4, "the counts still show"
    bad = sue.get("/fleet", connectivity="maybe")
    assert bad.status_code == 422 and "unknown connectivity 'maybe'" in page_text(bad.text)
    assert sue.get("/fleet", page=0).status_code == 422


@pytest.mark.parametrize("path", ["/fleet", "/fleet/ingest", "/fleet/lifecycle", "/engineers"])
def test_staff_pages_are_for_staff_only(world: World, path: str) -> None:
    for user in ("olga", "tina", "eve"):
        assert STAFF_ONLY in Visitor(world, user).text(path, status=403)
    for user in ("sue", "ada"):
        assert Visitor(world, user).get(path).status_code == 200


def test_ingest_health_shows_the_apis_figures(world: World) -> None:
    world.twin("boiler-a", received=100, duplicates=3, lost_accounted=5)
    with world.db() as session:
        session.add(IngestCounter(outcome="accepted", reason="ok", count=100))
        session.add(IngestCounter(outcome="rejected", reason="bad_signature", count=2))
        session.add(IngestCounter(outcome="rejected", reason="replayed", count=7))
        session.add(IngestCounter(outcome="duplicate", reason="seen", count=3))
        for first, last, kind, resolved in (
            (10, 14, "accounted", None),
            (20, 20, "unexplained", None),
            (30, 32, "unexplained", T0),
        ):
            session.add(
                Gap(
                    device_id="boiler-a",
                    first_seq=first,
                    last_seq=last,
                    kind=kind,
                    reason="x",
                    detected_ms=T0,
                    resolved_ms=resolved,
                )
            )
    _, stats = api(world, "sue", "/ingest/stats")
    markup = Visitor(world, "sue").get("/fleet/ingest").text
    counters = element(markup, "ingest-counters")
    assert "rejected bad signature 2" in counters and "rejected replayed 7" in counters
    assert "duplicate seen 3" in counters and "ok" not in counters
    assert element(markup, "ingest-accepted") == "100"
    assert element(markup, "ingest-rejected") == "9"
    assert element(markup, "ingest-duplicates") == str(stats["fleet"]["duplicates"]) == "3"
    assert element(markup, "ingest-lost") == str(stats["fleet"]["lost_accounted"]) == "5"
    gaps = element(markup, "gaps")
    for name, words in (
        ("accounted", "Dropped by the gateway (it said so)"),
        ("unexplained_open", "Missing, no explanation"),
        ("unexplained_resolved", "Arrived late after all"),
    ):
        group = stats["gaps"][name]
        assert f"{words} {group['ranges']} {group['messages']}" in gaps, name
    overview = Visitor(world, "sue").get("/fleet").text
    assert 'href="/fleet/ingest"' in overview
    assert "Messages rejected 9" in element(overview, "ingest-summary")


# --- engineers ------------------------------------------------------------------------------


def shown(profile: dict[str, Any]) -> tuple[str, str, str]:
    """AR, CS and SQ of an API profile as the portal shows them."""
    figures = profile["figures"]
    return f"{figures['ar_pct']:.1f}%", f"{figures['cs']:.2f}", f"{figures['sq']:.2f}"


def directory_row(markup: str, engineer_id: str) -> str:
    """The visible text of one row of the engineers directory."""
    found = re.search(rf'<tr data-id="{engineer_id}">(.*?)</tr>', markup, re.S)
    assert found, engineer_id
    return page_text(found.group(1))


def test_directory_shows_the_apis_figures(world: World) -> None:
    engineer(world, "cole")  # a cold start: no figures yet
    _, body = api(world, "sue", "/engineers")
    markup = Visitor(world, "sue").get("/engineers").text
    assert rows(markup, "engineers") == ["cole", "eddie", "eve"]
    for profile in body["items"]:
        row = directory_row(markup, profile["id"])
        newcomer = ("no invitations yet", "no ratings yet", "no ratings yet")
        ar, cs, sq = shown(profile) if profile["history"]["evaluated"] else newcomer
        history = profile["history"]
        assert f"{ar} {cs} {sq} {history['invitations']} {history['accepted']}" in row
        assert profile["gas_safe_number"] in row
    assert "87.5% 4.33 3.67 8 7 3" in directory_row(markup, "eve")
    assert '<a href="/engineers/eve">eve</a>' in markup


def test_directory_search_and_sort(world: World) -> None:
    sue = Visitor(world, "sue")
    assert rows(sue.get("/engineers", q="boiler_service").text, "engineers") == ["eddie"]
    assert rows(sue.get("/engineers", q="EVE").text, "engineers") == ["eve"]
    assert rows(sue.get("/engineers", sort="ar").text, "engineers") == ["eve", "eddie"]
    assert rows(sue.get("/engineers", sort="cs").text, "engineers") == ["eddie", "eve"]
    assert rows(sue.get("/engineers", sort="sq").text, "engineers") == ["eve", "eddie"]
    assert rows(sue.get("/engineers", sort="name").text, "engineers") == ["eddie", "eve"]
    assert "No engineers match" in sue.text("/engineers", q="plumbing")
    assert sue.get("/engineers", sort="height").status_code == 422
    markup = sue.get("/engineers", sort="cs").text
    assert '<label for="q">' in markup and '<label for="sort">' in markup
    assert 'value="cs" selected' in markup


def invite(
    world: World, engineer_id: str, device_id: str, owner: str, tenant: str | None = None
) -> str:
    """A crowdsourcing job on `device_id` with `engineer_id` invited; its id."""
    job_id = f"job-{engineer_id}-{device_id}"
    with world.db() as session:
        session.add(
            Job(
                id=job_id,
                device_id=device_id,
                service_type="repair",
                problem="no_heating",
                preferred_ms=T0,
                principle="best",
                requested_by=owner,
                owner_id=owner,
                tenant_id=tenant,
                state="crowdsourcing",
                created_ms=T0,
                updated_ms=T0,
            )
        )
        session.flush()
        session.add(
            Invitation(
                job_id=job_id, engineer_id=engineer_id, state="open", performance=0.9, invited_ms=T0
            )
        )
    return job_id


def test_profile_visibility_matches_the_api(world: World) -> None:
    invite(world, "eve", "boiler-a", "olga", "tina")
    cases = {"sue": 200, "ada": 200, "eve": 200, "eddie": 404, "olga": 200, "tina": 200}
    cases |= {"otto": 404}
    for user, expected in cases.items():
        status, _ = api(world, user, "/engineers/eve")
        assert Visitor(world, user).get("/engineers/eve").status_code == status == expected, user
    assert Visitor(world, "sue").get("/engineers/nobody").status_code == 404
    assert Visitor(world, "sue").get("/engineers/olga").status_code == 404, "not an engineer"


def test_profile_shows_figures_pricing_and_what_they_mean(world: World) -> None:
    _, profile = api(world, "sue", "/engineers/eve")
    markup = Visitor(world, "sue").get("/engineers/eve").text
    ar, cs, sq = shown(profile)
    assert (element(markup, "profile-ar"), element(markup, "profile-cs")) == (ar, cs)
    assert element(markup, "profile-sq") == sq == "3.67"
    text = page_text(markup)
    assert "7 of 8 invitations" in text and "over 3 rated jobs" in text
    assert "from 1 (poor) to 5 (excellent)" in text
    pricing = element(markup, "pricing")
    assert "repair £185.50 3" in pricing and "service £90.00 3" in pricing
    assert element(markup, "gas-safe") == "1234567"
    assert "boiler repair" in element(markup, "skills")
    assert element(markup, "home") == "53.49, -2.25"


def test_only_staff_and_the_engineer_see_home_and_jobs(world: World) -> None:
    job_id = invite(world, "eve", "boiler-a", "olga")
    with world.db() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.engineer_id, job.state = "eve", "contracted"
    for user in ("sue", "eve"):
        markup = Visitor(world, user).get("/engineers/eve").text
        assert 'id="home"' in markup, user
        assert f'href="/jobs/{job_id}"' in markup and "Engineer booked" in page_text(markup)
    olga = Visitor(world, "olga").get("/engineers/eve")
    assert olga.status_code == 200
    assert 'id="home"' not in olga.text and "Recent jobs" not in olga.text
    assert element(olga.text, "profile-ar") == "87.5%"


def test_an_invited_engineer_lists_the_boiler_without_people(world: World) -> None:
    """The shared list query (`cloud.fleet_views.boiler_rows`) redacts for invited engineers."""
    invite(world, "eve", "boiler-a", "olga", "tina")
    status, body = api(world, "eve", "/boilers")
    assert status == 200, body
    [row] = body["items"]
    assert row["id"] == "boiler-a" and row["model"] == "EcoHeat 24"
    assert (row["owner"], row["tenant"], row["address"]) == (None, None, None)


def test_the_lifecycle_page_shows_versions_rollouts_and_layers(world: World) -> None:
    sue = Visitor(world, "sue")
    empty = sue.get("/fleet/lifecycle").text
    assert "No rollout yet" in element(empty, "rollouts")
    assert "edge.toml" in element(empty, "layers")
    world.twin("boiler-a")
    with world.db() as session:
        twin = session.get(Twin, "boiler-a")
        assert twin is not None
        twin.agent_version = "0.2.0"
        session.add(
            ConfigLayer(
                scope="fleet",
                target="*",
                settings={"report": {"poll_interval_s": 30.0}},
                updated_ms=T0,
                updated_by="sue",
            )
        )
    markup = sue.get("/fleet/lifecycle").text
    assert "0.2.0 1" in element(markup, "versions")
    assert "fleet *" in element(markup, "layers") and "poll_interval_s" in element(markup, "layers")
    assert 'href="/fleet/lifecycle"' in sue.get("/fleet").text


def test_the_boiler_history_tells_registry_changes_in_sentences(world: World) -> None:
    """The registry's own thread events (registered, revoked) read as sentences on the page,
    not as a list of fields."""
    with world.db() as session:
        revoke_device(session, "boiler-c", now_ms=world.clock(), actor="ada")
    markup = Visitor(world, "sue").get("/boilers/boiler-c").text
    found = re.search(r'<ul class="timeline" id="thread">.*?</ul>', markup, re.S)
    assert found, "no history on the boiler page"
    history = page_text(found.group(0))
    assert "Revoked: the gateway can no longer connect or send readings" in history
    assert "Registered (CondensPro SN-C) with key " in history
    assert "Change registered" not in history and "change revoked" not in history.lower()
