"""The gateway-lifecycle page's forms (in-process app, SQLite and PostgreSQL): support sets
and removes configuration layers, admins halt and resume rollouts, and a boiler's page
shows the configuration it should run against the one it runs. Each form is the API's
action with the API's rules; every refusal comes back as a message and changes nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from cloud.domain import CommandState, Role
from cloud.lifecycle_models import ConfigLayer, Rollout, RolloutTarget
from cloud.models import Command
from cloud.rollouts import Publisher, add_release, start_rollout
from tests.cloud.api_helpers import World, world_for
from tests.cloud.portal_helpers import Visitor, page_text
from tests.cloud.rollout_scenario import fake_wheel

PAGE = "/fleet/lifecycle"
FIVE = "report.poll_interval_s = 5"


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    """Support sue, admin ada, owner olga; boilers a (EcoHeat 24) and b (EcoHeat 30),
    both olga's, both reporting agent 0.1.0."""
    with world_for(db_url, tmp_path, artifacts_dir=tmp_path / "artifacts") as world:
        world.user("sue", Role.SUPPORT, name="Sue Support")
        world.user("ada", Role.ADMIN, name="Ada Admin")
        world.user("olga", Role.OWNER, name="Olga Owner")
        world.boiler("boiler-a", owner="olga", model="EcoHeat 24", serial="SN-A")
        world.boiler("boiler-b", owner="olga", model="EcoHeat 30", serial="SN-B")
        for device in ("boiler-a", "boiler-b"):
            world.twin(
                device, connection="online", last_seen_ms=world.clock(), agent_version="0.1.0"
            )
        yield world


def configures(world: World) -> dict[str, list[int]]:
    """The configuration versions sent to each boiler (the virtual clock stands still, so
    their order is the versions')."""
    with world.db() as session:
        rows = session.scalars(
            select(Command)
            .where(Command.name == "configure")
            .order_by(Command.created_ms, Command.id)
        ).all()
        sent: dict[str, list[int]] = {}
        for row in rows:
            sent.setdefault(row.device_id, []).append(int(row.args["version"]))
        return {device: sorted(versions) for device, versions in sent.items()}


def layer_settings(world: World) -> dict[tuple[str, str], dict[str, object]]:
    with world.db() as session:
        return {(r.scope, r.target): r.settings for r in session.scalars(select(ConfigLayer))}


def element(markup: str, element_id: str) -> str:
    found = re.search(rf'<(\w+)[^>]*id="{element_id}"[^>]*>(.*?)</\1>', markup, re.S)
    assert found, element_id
    return page_text(found.group(2))


# --- configuration layers -----------------------------------------------------------------


def test_support_sets_a_fleet_layer_and_every_gateway_is_sent_it(world: World) -> None:
    sue = Visitor(world, "sue")
    where, said = sue.submit(
        f"{PAGE}/layers",
        scope="fleet",
        target="",
        settings="[report]\npoll_interval_s = 30\nbatch_interval_s = 120\n",
    )
    assert where == PAGE and said == "info:Layer saved: 2 gateways sent a new configuration."
    assert layer_settings(world) == {
        ("fleet", "*"): {"report": {"poll_interval_s": 30, "batch_interval_s": 120}}
    }
    assert configures(world) == {"boiler-a": [1], "boiler-b": [1]}
    markup = sue.get(PAGE).text
    shown = element(markup, "layers")
    assert "fleet *" in shown and "report.batch_interval_s = 120" in shown and "sue" in shown
    # The page and the API agree.
    api = world.client.get("/api/v1/config/layers", headers=world.login("sue")).json()
    assert api["layers"][0]["settings"] == {
        "report": {"poll_interval_s": 30, "batch_interval_s": 120}
    }
    # Saving the same settings again sends nothing new.
    _, again = sue.submit(
        f"{PAGE}/layers",
        scope="fleet",
        settings="report.batch_interval_s = 120\nreport.poll_interval_s = 30",
    )
    assert again == "info:Layer saved: 0 gateways sent a new configuration."
    assert configures(world) == {"boiler-a": [1], "boiler-b": [1]}


def test_a_model_layer_reaches_that_model_and_a_device_layer_wins(world: World) -> None:
    sue = Visitor(world, "sue")
    _, said = sue.submit(
        f"{PAGE}/layers", scope="model", target="EcoHeat 24", settings="report.poll_interval_s = 20"
    )
    assert said == "info:Layer saved: 1 gateway sent a new configuration."
    sue.submit(
        f"{PAGE}/layers", scope="device", target="boiler-a", settings="report.poll_interval_s = 5"
    )
    assert configures(world) == {"boiler-a": [1, 2]}
    page = sue.get("/boilers/boiler-a").text
    assert element(page, "config-desired") == "version 2"
    assert element(page, "config-reported") == "edge.toml only"
    assert element(page, "config-state") == "Waiting for the gateway"
    assert "report.poll_interval_s = 5" in element(page, "config-settings")


def test_removing_a_layer_sends_the_gateways_their_configuration_without_it(world: World) -> None:
    sue = Visitor(world, "sue")
    sue.submit(f"{PAGE}/layers", scope="fleet", settings="outbox.max_bytes = 50000000")
    assert 'aria-label="Remove the layer for fleet *"' in sue.get(PAGE).text
    where, said = sue.submit(f"{PAGE}/layers", scope="fleet", target="*", settings="")
    assert where == PAGE and said == "info:Layer removed: 2 gateways sent a new configuration."
    assert layer_settings(world) == {}
    assert configures(world) == {"boiler-a": [1, 2], "boiler-b": [1, 2]}
    assert "Every gateway runs on its edge.toml" in page_text(sue.get(PAGE).text)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"scope": "fleet", "settings": "report.poll_interval_s = "}, "settings: Invalid value"),
        ({"scope": "fleet", "settings": "report.poll_interval_s = -1"}, "poll interval s"),
        ({"scope": "fleet", "settings": "report.nonsense = 1"}, "nonsense"),
        ({"scope": "fleet", "settings": 'mqtt.password = "x"'}, "password"),
        ({"scope": "fleet", "settings": "[cloud]\nurl = 'x'"}, "cloud"),
        (
            {"scope": "device", "target": "", "settings": "report.poll_interval_s = 5"},
            "name the gateway",
        ),
        (
            {"scope": "device", "target": "boiler-z", "settings": "report.poll_interval_s = 5"},
            "no gateway boiler-z",
        ),
        (
            {"scope": "galaxy", "settings": "report.poll_interval_s = 5"},
            "choose who the settings are for",
        ),
    ],
)
def test_bad_settings_are_refused_with_the_reason_and_change_nothing(
    world: World, fields: dict[str, str], reason: str
) -> None:
    sue = Visitor(world, "sue")
    where, said = sue.submit(f"{PAGE}/layers", **fields)
    assert where == PAGE and said.startswith("error:") and reason in said, said
    assert layer_settings(world) == {} and configures(world) == {}


def test_only_staff_may_change_configuration_and_only_from_the_page(world: World) -> None:
    settings = {"scope": "fleet", "settings": "report.poll_interval_s = 5"}
    olga = Visitor(world, "olga")
    refused = olga.post(f"{PAGE}/layers", follow=False, **settings)
    assert refused.status_code == 403, refused.status_code
    assert "this page is for the manufacturer's staff" in page_text(refused.text)
    assert "Remote configuration" not in page_text(olga.get("/boilers/boiler-a").text)
    sue = Visitor(world, "sue")
    no_token = sue.client.post(f"{PAGE}/layers", data=settings, follow_redirects=False)
    assert no_token.status_code == 403
    elsewhere = sue.client.post(
        f"{PAGE}/layers",
        data={"csrf": sue.csrf, **settings},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert elsewhere.status_code == 403
    assert layer_settings(world) == {} and configures(world) == {}


def test_a_refused_configuration_is_shown_on_the_boiler_page(world: World) -> None:
    sue = Visitor(world, "sue")
    sue.submit(f"{PAGE}/layers", scope="device", target="boiler-b", settings="modbus.timeout_s = 2")
    with world.db() as session:
        command = session.scalars(select(Command).where(Command.device_id == "boiler-b")).one()
        command.state = CommandState.REJECTED.value
        command.result_reason = "invalid_args"
        command.observed = {"error": "the boiler does not answer within 2 s"}
    page = sue.get("/boilers/boiler-b").text
    assert element(page, "config-state") == "Refused by the gateway"
    assert element(page, "config-rejected") == (
        "The gateway refused version 1: the boiler does not answer within 2 s. "
        "It keeps running version 0."
    )


# --- rollouts -------------------------------------------------------------------------------


def running_rollout(world: World, tmp_path: Path) -> int:
    """Release 0.2.0 rolling out in one wave; boiler-a has installed it, boiler-b not yet."""
    wheel = fake_wheel(tmp_path / "boilertwin-0.2.0-py3-none-any.whl", 4096)
    publisher = Publisher.under(world.commands.key, world.settings, "ada")
    with world.db() as session:
        add_release(
            session,
            wheel,
            version="0.2.0",
            min_agent="0.1.0",
            artifacts_dir=world.settings.artifacts_dir,
            now_ms=world.clock(),
            actor="ada",
        )
        rollout = start_rollout(
            session,
            "0.2.0",
            waves=[100],
            max_failure_rate=0.5,
            min_wave_s=0,
            model=None,
            now_ms=world.clock(),
            publisher=publisher,
        )
        target = session.get_one(RolloutTarget, (rollout.id, "boiler-a"))
        target.state = "succeeded"
        return rollout.id


def test_an_admin_halts_a_rollout_and_its_gateways_are_sent_back(
    world: World, tmp_path: Path
) -> None:
    rollout_id = running_rollout(world, tmp_path)
    sue, ada = Visitor(world, "sue"), Visitor(world, "ada")
    assert f'id="halt-{rollout_id}"' not in sue.get(PAGE).text
    assert "Only an admin may halt or resume a rollout" in page_text(sue.get(PAGE).text)
    _, refused = sue.submit(f"{PAGE}/rollouts/{rollout_id}/halt")
    assert refused == "error:a support agent may not halt a rollout", refused
    assert f'id="halt-{rollout_id}"' in ada.get(PAGE).text
    where, said = ada.submit(f"{PAGE}/rollouts/{rollout_id}/halt")
    assert where == PAGE
    assert said == f"info:Rollout {rollout_id} halted: the gateways it updated are going back."
    with world.db() as session:
        rollout = session.get_one(Rollout, rollout_id)
        assert (rollout.state, rollout.halted_reason) == ("halted", "halted by ada")
        back = session.scalars(select(Command).where(Command.name == "rollback")).all()
        assert [(c.device_id, c.args["to"]) for c in back] == [("boiler-a", "0.1.0")]
    markup = ada.get(PAGE).text
    assert "halted: halted by ada" in page_text(markup)
    assert f'id="resume-{rollout_id}"' in markup and f'id="halt-{rollout_id}"' not in markup
    _, twice = ada.submit(f"{PAGE}/rollouts/{rollout_id}/halt")
    assert twice == f"info:Rollout {rollout_id} was not running; nothing changed."


def test_an_admin_resumes_a_halted_rollout(world: World, tmp_path: Path) -> None:
    rollout_id = running_rollout(world, tmp_path)
    ada = Visitor(world, "ada")
    _, not_halted = ada.submit(f"{PAGE}/rollouts/{rollout_id}/resume")
    assert not_halted == f"error:rollout {rollout_id} is running, not halted"
    ada.submit(f"{PAGE}/rollouts/{rollout_id}/halt")
    _, said = ada.submit(f"{PAGE}/rollouts/{rollout_id}/resume")
    assert said == f"info:Rollout {rollout_id} resumed from its current wave."
    with world.db() as session:
        assert session.get_one(Rollout, rollout_id).state == "running"
    assert f'id="halt-{rollout_id}"' in ada.get(PAGE).text
    missing = ada.post(f"{PAGE}/rollouts/999/halt", follow=False)
    assert missing.status_code == 404
