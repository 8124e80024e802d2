"""A power cut at every step of an agent update, on real processes (the rig of
`tests.edge_agent.test_updater`: real wheels, virtual environments, the ``current`` link and
the guard under a systemd-like supervisor). The agent is killed outright (`crash_point`:
no clean-up, no acks) during the download, during the install, between marking the switch
and moving the link, right after the link, and in the new release's first start on trial.
Each time an agent comes back up, the command gets an outcome, and a later attempt picks up
what the cut left (the partial download is resumed with ``Range``); no reading is lost."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from edge_agent.updater import CRASH_EXIT, EXIT_RESTART
from protocols.messages import AckState, RejectReason
from tests.broker import Broker
from tests.edge_agent.harness import CloudListener, Gateway
from tests.edge_agent.test_updater import (
    Artifacts,
    Supervisor,
    births,
    build_release,
    manifest,
    rig,
    update,
)

__all__ = ["rig"]  # the fixture, shared

DELIVERED, EXECUTING = AckState.DELIVERED, AckState.EXECUTING
FAILED, SUCCEEDED = AckState.FAILED, AckState.SUCCEEDED


async def cut_at(
    step: str,
    rig: tuple[Gateway, CloudListener, Supervisor, Artifacts],
    broker: Broker,
    version: str,
    data: bytes,
) -> tuple[list[AckState], Any]:
    """Send the update with a crash armed at `step`; its acks (each state once) and the last."""
    gateway, cloud, supervisor, artifacts = rig
    supervisor.crash_file.write_text(step)
    states, last = await update(
        gateway, broker, cloud, manifest(artifacts, f"{version}.whl", data, version)
    )
    assert not supervisor.crash_file.exists(), f"the agent never reached step {step!r}"
    return list(dict.fromkeys(states)), last


async def test_a_power_cut_at_every_step_of_an_update_leaves_a_running_agent(
    tmp_path: Path, rig: tuple[Gateway, CloudListener, Supervisor, Artifacts], broker: Broker
) -> None:
    gateway, cloud, supervisor, artifacts = rig
    current, releases = tmp_path / "current", tmp_path / "releases"
    original = os.readlink(current)
    updates = gateway.directory / "state" / "updates"
    good, newer = await asyncio.gather(
        asyncio.to_thread(build_release, tmp_path, "0.2.0"),
        asyncio.to_thread(build_release, tmp_path, "0.3.0"),
    )

    # -- during the download: the old release comes back, the part file is kept ------------
    states, last = await cut_at("download", rig, broker, "0.2.0", good)
    assert states == [DELIVERED, FAILED], states
    assert last.reason is RejectReason.DOWNLOAD_FAILED
    assert last.observed["step"] == "interrupted during download"
    assert last.observed["agent_version"] == "0.1.0"
    assert supervisor.exits == [CRASH_EXIT] and os.readlink(current) == original
    [part] = updates.glob("*.part")
    assert 0 < part.stat().st_size < len(good)
    kept = part.stat().st_size

    # -- during the install: the download resumed where it stopped, the build is left -------
    states, last = await cut_at("install", rig, broker, "0.2.0", good)
    assert states == [DELIVERED, FAILED], states
    assert last.reason is RejectReason.ROLLED_BACK
    assert last.observed["step"] == "interrupted during install"
    assert artifacts.requests[-1] == ("/0.2.0.whl", f"bytes={kept}-"), artifacts.requests
    assert supervisor.exits == [CRASH_EXIT] * 2 and os.readlink(current) == original
    assert (releases / ".0.2.0.building").exists() and not (releases / "0.2.0").exists()

    # -- after the switch is marked, before the link moves: the old release still runs ------
    states, last = await cut_at("switch", rig, broker, "0.2.0", good)
    assert states == [DELIVERED, FAILED], states
    assert last.reason is RejectReason.ROLLED_BACK and last.observed["agent_version"] == "0.1.0"
    assert os.readlink(current) == original
    assert (releases / "0.2.0").exists() and not (releases / ".0.2.0.building").exists()
    assert len(artifacts.requests) == 2, "an installed download was fetched again"

    # -- right after the link: the new release starts on trial and confirms itself ----------
    states, last = await cut_at("switched", rig, broker, "0.2.0", good)
    assert states == [DELIVERED, SUCCEEDED], states  # it died before acking `executing`
    assert last.observed["agent_version"] == "0.2.0"
    assert os.readlink(current) == str(releases / "0.2.0")
    await cloud.wait_for(births(1, "0.2.0"), 30)

    # -- the new release dies in its first start on trial: the guard lets it try again ------
    states, last = await cut_at("trial", rig, broker, "0.3.0", newer)
    assert states == [DELIVERED, EXECUTING, SUCCEEDED], states
    assert last.observed["agent_version"] == "0.3.0"
    assert os.readlink(current) == str(releases / "0.3.0")
    assert supervisor.exits[-2:] == [EXIT_RESTART, CRASH_EXIT], supervisor.exits
    assert any("0.3.0 on trial: start 2" in said for said in supervisor.guard_said)
    await cloud.wait_for(births(1, "0.3.0"), 30)

    assert not (gateway.directory / "state" / "update-pending.json").exists()
    seqs = sorted({r.message.seq for r in cloud.received if r.kind.value != "state"})
    assert seqs == list(range(1, len(seqs) + 1)), "a message went missing across the cuts"
