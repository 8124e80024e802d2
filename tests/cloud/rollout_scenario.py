"""The gateway-lifecycle story on a simulated fleet, for the test suite (a few hundred
gateways) and ``make bench`` (1,000+): every gateway joins with one batch claim token, a
configuration change reaches all of them, a good release rolls out in waves, and a bad one
(never healthy on a share of gateways) halts itself and sends every gateway it reached back.
Returns the figures the README quotes."""

from __future__ import annotations

import asyncio
import statistics
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from cloud.db import transaction
from cloud.domain import Role
from cloud.lifecycle_models import RolloutTarget
from cloud.models import Command, Twin
from cloud.provisioning import create_claims
from cloud.rollouts import add_release, fleet_versions
from hw_sim.fleet import FleetSettings, Identity, run_fleet
from hw_sim.fleet_lifecycle import claim_gateways
from tests.broker import Broker
from tests.cloud.stack import Stack, eventually

GOOD, BAD = "0.2.0", "0.3.0"


@dataclass
class Figures:
    gateways: int
    claim_median_s: float
    claim_p95_s: float
    provision_all_s: float
    """First claim sent to every gateway's birth stored in its twin."""
    config_all_s: float
    good_rollout_s: float
    waves: int
    artifact_bytes: int
    bad_artifact_bytes: int
    downloaded_per_update: float
    bad_reached: int
    bad_failed: int
    rolled_back: int
    halt_to_all_back_s: float
    gateway_rollback_s: float
    versions_after: dict[str, int]

    def lines(self) -> list[str]:
        return [
            f"gateways: {self.gateways}",
            f"provisioning: claim round trip median {self.claim_median_s * 1000:.0f} ms, "
            f"95th percentile {self.claim_p95_s * 1000:.0f} ms; every gateway from its first "
            f"claim to its birth in the twin: {self.provision_all_s:.1f} s",
            f"configuration change applied by every gateway: {self.config_all_s:.1f} s",
            f"good release {GOOD}: {self.waves} waves, all updated in {self.good_rollout_s:.1f} s; "
            f"artifact {self.artifact_bytes:,} bytes, downloaded per gateway per update "
            f"{self.downloaded_per_update:,.0f} bytes",
            f"bad release {BAD}: reached {self.bad_reached}, {self.bad_failed} rolled back by "
            f"themselves (trial {self.gateway_rollback_s:.1f} s), rollout halted, "
            f"{self.rolled_back} sent back by the cloud, halt to every gateway back: "
            f"{self.halt_to_all_back_s:.1f} s",
            f"agent versions after: {self.versions_after}",
        ]


def fake_wheel(path: Path, size: int, version: str = GOOD) -> Path:
    """A wheel-shaped zip of about `size` bytes (the simulator does not install it)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        wheel.writestr("boilertwin/__init__.py", f"__version__ = {version!r}\n")
        wheel.writestr("boilertwin/payload.bin", bytes(range(256)) * (size // 256))
    return path


def size_of(path: Path) -> int:
    return path.stat().st_size


def lifecycle_stack(directory: Path, broker: Broker, db_url: str, **settings: Any) -> Stack:
    stack = Stack(
        directory,
        broker,
        db_url,
        **{
            "broker_admin_password_file": str(broker.admin_password_file),
            "artifacts_dir": str(directory / "artifacts"),
            "config_command_ttl_s": 600.0,
        }
        | settings,
    )
    # gateways fetch artifacts from the API itself
    stack.config.write_text(
        stack.config.read_text() + f'public_url = "http://127.0.0.1:{stack.api_port}"\n'
    )
    stack.user("ada", Role.ADMIN)
    return stack


async def run_story(
    stack: Stack, count: int, wheel: Path, *, fail_share: float = 0.5, trial_s: float = 2.0
) -> Figures:
    """The whole story on a started `stack`; asserts each step as it goes."""
    token = claim_token(stack, count, "fleet")
    base = f"http://127.0.0.1:{stack.api_port}"
    started = time.monotonic()
    claimed, round_trips = await claim_gateways(count, base, token)
    identities = [Identity(c.device_id, c.key, c.password) for c in claimed]
    settings = FleetSettings(
        broker_host=stack.broker.host,
        broker_port=stack.broker.port,
        time_scale=60.0,
        duration_s=60.0 * 3600,
        lockouts_per_day=0.0,
        fail_version=BAD,
        fail_share=fail_share,
        trial_s=trial_s,
        seed=7,
    )
    stop = asyncio.Event()
    fleet = asyncio.create_task(run_fleet(identities, claimed[0].cloud_keys, settings, stop))
    try:
        figures = await _story(stack, count, wheel, fleet, started, round_trips)
    finally:
        stop.set()
        summary = await asyncio.wait_for(fleet, 60)
    done = summary.lifecycle
    figures.downloaded_per_update = done.downloaded_bytes / max(1, done.downloads)  # no resends
    figures.gateway_rollback_s = statistics.median(done.rollback_s) if done.rollback_s else 0.0
    assert done.downloads == count + figures.bad_reached, done
    expected = count * figures.artifact_bytes + figures.bad_reached * figures.bad_artifact_bytes
    assert done.downloaded_bytes == expected, (done.downloaded_bytes, expected)
    return figures


def _count(stack: Stack, query: Any) -> int:
    with stack.sessions() as session:
        return int(session.scalar(query) or 0)


async def _story(
    stack: Stack,
    count: int,
    wheel: Path,
    fleet: asyncio.Task[Any],
    started: float,
    round_trips: list[float],
) -> Figures:
    def alive() -> None:
        if fleet.done():
            fleet.result()
            raise AssertionError("the fleet stopped early")

    async def every_birth() -> bool:
        alive()
        query = select(func.count()).select_from(Twin).where(Twin.agent_version == "0.1.0")
        return _count(stack, query) == count

    await eventually(every_birth, "every claimed gateway's birth in its twin", timeout=120)
    provision_all = time.monotonic() - started

    # -- a configuration change for the whole fleet ------------------------------------------
    mark = time.monotonic()
    answer = await stack.api.put(
        "/api/v1/config/layers/fleet/*",
        json={"settings": {"report": {"heartbeat_s": 1800}}},
        headers=await stack.login("ada"),
    )
    assert answer.status_code == 200 and answer.json()["issued"] == count, answer.text

    async def configured() -> bool:
        alive()
        query = (
            select(func.count())
            .select_from(Command)
            .where(Command.name == "configure", Command.state == "succeeded")
        )
        return _count(stack, query) == count

    await eventually(configured, "every gateway acking configuration v1", timeout=120)
    config_all = time.monotonic() - mark

    # -- a good release in waves -----------------------------------------------------------
    wheels = {GOOD: wheel, BAD: fake_wheel(wheel.with_name(f"bad-{BAD}.whl"), size_of(wheel), BAD)}
    sizes = {}
    with transaction(stack.sessions) as session:
        for version in (GOOD, BAD):
            release = add_release(
                session,
                wheels[version],
                version=version,
                min_agent="0.1.0",
                artifacts_dir=stack.directory / "artifacts",
                now_ms=int(time.time() * 1000),
                actor="test",
            )
            sizes[version] = release.size
    mark = time.monotonic()
    good = await start(stack, GOOD, [10, 50, 100])
    done = await eventually(lambda: rollout_in(stack, good, "completed"), "rollout done", 180)
    good_s = time.monotonic() - mark
    assert done["gateways"] == {"succeeded": count}, done
    with stack.sessions() as session:
        assert fleet_versions(session) == {GOOD: count}

    # -- a bad release halts itself and everyone it reached goes back ----------------------
    bad = await start(stack, BAD, [5, 50, 100])
    halted = await eventually(lambda: rollout_in(stack, bad, "halted"), "the halt", 120)
    halt_at = time.monotonic()

    async def all_back() -> dict[str, Any] | None:
        alive()
        view = await rollout_in(stack, bad, "halted")
        if view is None or set(view["gateways"]) - {"failed", "rolled_back"}:
            return None
        with stack.sessions() as session:
            versions = fleet_versions(session)
        return view if versions == {GOOD: count} else None

    final = await eventually(all_back, "every gateway the bad release reached back", 120)
    back_s = time.monotonic() - halt_at
    reached = sum(final["gateways"].values())
    assert halted["wave"] == 1 and reached < count, final
    with stack.sessions() as session:
        reasons = session.execute(
            select(RolloutTarget.reason, func.count())
            .where(RolloutTarget.rollout_id == bad, RolloutTarget.state == "failed")
            .group_by(RolloutTarget.reason)
        ).all()
        versions_after = fleet_versions(session)
    assert dict(reasons).keys() <= {"rolled_back"}, reasons
    return Figures(
        gateways=count,
        claim_median_s=statistics.median(round_trips),
        claim_p95_s=sorted(round_trips)[int(0.95 * (len(round_trips) - 1))],
        provision_all_s=provision_all,
        config_all_s=config_all,
        good_rollout_s=good_s,
        waves=3,
        artifact_bytes=sizes[GOOD],
        bad_artifact_bytes=sizes[BAD],
        downloaded_per_update=0.0,  # from the fleet's own count, at the end
        bad_reached=reached,
        bad_failed=final["gateways"].get("failed", 0),
        rolled_back=final["gateways"].get("rolled_back", 0),
        halt_to_all_back_s=back_s,
        gateway_rollback_s=0.0,
        versions_after=versions_after,
    )


def claim_token(stack: Stack, uses: int, batch: str) -> str:
    """One claim token, valid for an hour, that `uses` gateways may claim with."""
    now = int(time.time() * 1000)
    with transaction(stack.sessions) as session:
        claims = create_claims(
            session, count=1, batch=batch, expires_ms=now + 3_600_000, now_ms=now, max_uses=uses
        )
        return claims.tokens[0]


async def start(stack: Stack, version: str, waves: list[float]) -> int:
    answer = await stack.api.post(
        "/api/v1/updates/rollouts",
        json={"version": version, "waves": waves, "max_failure_rate": 0.1, "min_wave_s": 0},
        headers=await stack.login("ada"),
    )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


async def rollout_in(stack: Stack, rollout_id: int, state: str) -> dict[str, Any] | None:
    view = await stack.get("ada", f"/api/v1/updates/rollouts/{rollout_id}")
    return view if view["state"] == state else None  # type: ignore[no-any-return]
