"""Rollout bookkeeping on SQLite and PostgreSQL (`cloud.rollouts.advance`, no broker): a
gateway whose update expired while it was away is a straggler; the rollout completes
without it, sends it the update when it is back, and counts it in when it succeeds; a newer
rollout takes such stragglers over. A download that failed, or an update a power cut stopped
before its switch, is sent again before it counts as a failure. And each gateway's download
link serves it alone."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from cloud.domain import CommandState, Role
from cloud.lifecycle_models import Release, Rollout, RolloutTarget
from cloud.models import Command, Device, Twin
from cloud.rollouts import (
    DOWNLOAD_ATTEMPTS,
    Publisher,
    add_release,
    advance,
    halt_by_hand,
    rollout_json,
    start_rollout,
)
from protocols.messages import UPDATE_INTERRUPTED
from tests.cloud.api_helpers import World, world_for
from tests.cloud.portal_helpers import Visitor
from tests.cloud.rollout_scenario import fake_wheel

DEVICES = ("boiler-a", "boiler-b", "boiler-c")


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(db_url, tmp_path, artifacts_dir=tmp_path / "artifacts") as world:
        for device in DEVICES:
            world.boiler(device, model="EcoHeat 24")
            world.twin(device, connection="online", agent_version="0.1.0")
        yield world


def release(world: World, tmp_path: Path, version: str) -> None:
    wheel = fake_wheel(tmp_path / f"boilertwin-{version}-py3-none-any.whl", 2048, version)
    with world.db() as session:
        add_release(
            session,
            wheel,
            version=version,
            min_agent="0.1.0",
            artifacts_dir=world.settings.artifacts_dir,
            now_ms=world.clock(),
            actor="test",
        )


def publisher(world: World) -> Publisher:
    return Publisher.under(world.commands.key, world.settings, "rollout")


def start(world: World, version: str) -> int:
    with world.db() as session:
        rollout = start_rollout(
            session,
            version,
            waves=[100],
            max_failure_rate=0.5,
            min_wave_s=0,
            model=None,
            now_ms=world.clock(),
            publisher=publisher(world),
        )
        return rollout.id


def step(world: World) -> list[str]:
    with world.db() as session:
        return advance(session, world.clock(), publisher(world))


def finish(
    world: World,
    rollout_id: int,
    device: str,
    state: CommandState,
    reason: str | None = None,
    step: str | None = None,
) -> None:
    """The gateway's current command of the rollout ends in `state` (with `reason`, and the
    update's `step` as the agent observed it)."""
    with world.db() as session:
        target = session.get_one(RolloutTarget, (rollout_id, device))
        command = session.get_one(Command, target.command_id)
        command.state, command.result_reason = state.value, reason
        command.observed = {"step": step} if step else {}


def connect(world: World, device: str, connection: str) -> None:
    with world.db() as session:
        session.get_one(Twin, device).connection = connection


def targets(world: World, rollout_id: int) -> dict[str, str]:
    with world.db() as session:
        rows = session.scalars(select(RolloutTarget).where(RolloutTarget.rollout_id == rollout_id))
        return {t.device_id: t.state for t in rows}


def updates_to(world: World, device: str) -> list[str]:
    with world.db() as session:
        rows = session.scalars(
            select(Command).where(Command.device_id == device, Command.name == "update")
        )
        return sorted(str(c.args["version"]) for c in rows)


def test_a_straggler_is_updated_when_it_is_back_after_the_rollout_completed(
    world: World, tmp_path: Path
) -> None:
    release(world, tmp_path, "0.2.0")
    rollout_id = start(world, "0.2.0")
    for device in ("boiler-a", "boiler-b"):
        finish(world, rollout_id, device, CommandState.SUCCEEDED)
    connect(world, "boiler-c", "offline")
    finish(world, rollout_id, "boiler-c", CommandState.EXPIRED)
    assert step(world) == [f"rollout {rollout_id} completed: 2 updated"]
    assert targets(world, rollout_id)["boiler-c"] == "straggling"
    step(world)  # still away: nothing sent
    assert updates_to(world, "boiler-c") == ["0.2.0"]

    connect(world, "boiler-c", "online")
    step(world)
    assert updates_to(world, "boiler-c") == ["0.2.0", "0.2.0"]
    assert targets(world, rollout_id)["boiler-c"] == "sent"
    finish(world, rollout_id, "boiler-c", CommandState.SUCCEEDED)
    step(world)
    assert set(targets(world, rollout_id).values()) == {"succeeded"}
    with world.db() as session:
        assert session.get_one(Rollout, rollout_id).state == "completed"
    step(world)  # nothing left to follow
    assert updates_to(world, "boiler-c") == ["0.2.0", "0.2.0"]


def test_a_newer_rollout_takes_the_stragglers_over(world: World, tmp_path: Path) -> None:
    release(world, tmp_path, "0.2.0")
    first = start(world, "0.2.0")
    for device in ("boiler-a", "boiler-b"):
        finish(world, first, device, CommandState.SUCCEEDED)
    connect(world, "boiler-c", "offline")
    finish(world, first, "boiler-c", CommandState.EXPIRED)
    step(world)
    for device in ("boiler-a", "boiler-b"):
        world.twin(device, agent_version="0.2.0")  # their births after the update
    release(world, tmp_path, "0.3.0")
    second = start(world, "0.3.0")
    assert set(targets(world, second)) == {"boiler-a", "boiler-b", "boiler-c"}
    connect(world, "boiler-c", "online")
    step(world)
    assert updates_to(world, "boiler-c") == ["0.2.0", "0.3.0"], "the old rollout sent again"
    assert targets(world, first)["boiler-c"] == "straggling"


# --- failed downloads -----------------------------------------------------------------------


def test_a_failed_download_is_tried_again_before_it_counts(world: World, tmp_path: Path) -> None:
    """A download cut short (power, signal) gets the update again, up to DOWNLOAD_ATTEMPTS
    tries, without counting as a failure; the last failure counts."""
    release(world, tmp_path, "0.2.0")
    rollout_id = start(world, "0.2.0")
    finish(world, rollout_id, "boiler-a", CommandState.SUCCEEDED)
    finish(world, rollout_id, "boiler-b", CommandState.FAILED, "download_failed")
    step(world)
    assert updates_to(world, "boiler-b") == ["0.2.0"] * 2
    assert targets(world, rollout_id)["boiler-b"] == "sent"
    for _ in range(DOWNLOAD_ATTEMPTS - 1):
        finish(world, rollout_id, "boiler-b", CommandState.FAILED, "download_failed")
        step(world)
    assert updates_to(world, "boiler-b") == ["0.2.0"] * DOWNLOAD_ATTEMPTS
    assert targets(world, rollout_id)["boiler-b"] == "failed"
    finish(world, rollout_id, "boiler-c", CommandState.SUCCEEDED)
    step(world)
    with world.db() as session:
        rollout = session.get_one(Rollout, rollout_id)
        said = rollout_json(session, rollout)
        assert rollout.state == "completed"
    assert said["gateways"] == {"succeeded": 2, "failed": 1}
    assert said["downloads_retried"] == 1
    world.user("sue", Role.SUPPORT)
    page = Visitor(world, "sue").text("/fleet/lifecycle")
    assert "1 needed another try at the download" in page


def test_a_retried_download_that_succeeds_is_not_a_failure(world: World, tmp_path: Path) -> None:
    release(world, tmp_path, "0.2.0")
    rollout_id = start(world, "0.2.0")
    finish(world, rollout_id, "boiler-a", CommandState.REJECTED, "download_failed")
    finish(world, rollout_id, "boiler-b", CommandState.FAILED, "bad_artifact")  # the release
    step(world)
    assert updates_to(world, "boiler-b") == ["0.2.0"], "a bad artifact is not retried"
    finish(world, rollout_id, "boiler-a", CommandState.SUCCEEDED)
    finish(world, rollout_id, "boiler-c", CommandState.SUCCEEDED)
    step(world)
    assert targets(world, rollout_id) == {
        "boiler-a": "succeeded",
        "boiler-b": "failed",
        "boiler-c": "succeeded",
    }


def test_an_update_cut_short_by_a_power_cut_is_tried_again(world: World, tmp_path: Path) -> None:
    """An install interrupted before the switch is no verdict on the release; a release
    rolled back after its trial is."""
    release(world, tmp_path, "0.2.0")
    rollout_id = start(world, "0.2.0")
    cut = f"{UPDATE_INTERRUPTED} install"
    finish(world, rollout_id, "boiler-a", CommandState.FAILED, "rolled_back", cut)
    finish(world, rollout_id, "boiler-b", CommandState.FAILED, "rolled_back", "trial")
    step(world)
    assert updates_to(world, "boiler-a") == ["0.2.0"] * 2
    assert updates_to(world, "boiler-b") == ["0.2.0"]
    assert targets(world, rollout_id)["boiler-b"] == "failed"


def test_a_halted_rollout_sends_no_retries(world: World, tmp_path: Path) -> None:
    release(world, tmp_path, "0.2.0")
    rollout_id = start(world, "0.2.0")
    with world.db() as session:
        halt_by_hand(session, rollout_id, world.clock(), publisher(world))
    finish(world, rollout_id, "boiler-a", CommandState.FAILED, "download_failed")
    step(world)
    assert updates_to(world, "boiler-a") == ["0.2.0"]


# --- download links -------------------------------------------------------------------------


def test_an_artifact_is_served_only_to_the_gateway_its_link_was_made_for(
    world: World, tmp_path: Path
) -> None:
    release(world, tmp_path, "0.2.0")
    rollout_id = start(world, "0.2.0")
    with world.db() as session:
        target = session.get_one(RolloutTarget, (rollout_id, "boiler-a"))
        link = str(session.get_one(Command, target.command_id).args["url"])
        sha = session.get_one(Release, "0.2.0").sha256
    path = urllib.parse.urlsplit(link)
    assert path.path == f"/api/v1/updates/artifacts/{sha}"
    query = dict(urllib.parse.parse_qsl(path.query))
    assert query["dev"] == "boiler-a" and len(query["t"]) == 32
    wheel = (world.settings.artifacts_dir / f"{sha}.whl").read_bytes()
    whole = world.client.get(f"{path.path}?{path.query}")
    assert whole.status_code == 200 and whole.content == wheel
    rest = world.client.get(f"{path.path}?{path.query}", headers={"Range": "bytes=100-"})
    assert rest.status_code == 206 and rest.content == wheel[100:]

    other = {"dev": "boiler-b", "t": query["t"]}  # someone else's link
    for params in ({}, {"dev": "boiler-a"}, {"dev": "boiler-a", "t": "0" * 32}, other):
        refused = world.client.get(path.path, params=params)
        assert refused.status_code == 404, (params, refused.status_code)
        assert refused.json()["detail"] == "no such artifact"
    wrong_sha = world.client.get(f"/api/v1/updates/artifacts/{'0' * 64}?{path.query}")
    assert wrong_sha.status_code == 404
    with world.db() as session:
        session.get_one(Device, "boiler-a").revoked = True
    assert world.client.get(f"{path.path}?{path.query}").status_code == 404
