"""Agent releases and staged rollouts: waves, a halt on failures, rollback, manual resume.

A release is a wheel kept under `CloudSettings.artifacts_dir` by its SHA-256, served at
``GET /api/v1/updates/artifacts/{sha256}?dev=...&t=...`` (with ``Range``, so a gateway resumes
a broken download) to the gateway the link was made for (`download_token`): each update
command carries its gateway's own link, inside the signed manifest.

A rollout sends it in waves: cumulative percentages of the eligible fleet (the
boilers, of one model or all, whose agent is older than the release and at least its
``min_agent``). Each gateway gets a signed ``update`` command: the command *is* the manifest
(version, URL, SHA-256, size, min agent, rollout id), so the agent trusts nothing it was not
signed for.

`advance` (run every few seconds by ``cloud serve``) follows the commands' acks:

* a wave is done when every gateway in it succeeded or failed (one offline past the
  command's expiry is a straggler: it gets a new command when it is back, and does not hold
  the wave) and `min_wave_s` has passed; then the next wave is sent;
* when the failed share of the finished gateways exceeds `max_failure_rate` (once at least
  `MIN_FINISHED` have finished), the rollout **halts**: no more waves, and every gateway it
  updated gets a ``rollback`` command; an operator may `resume` it;
* a gateway whose download failed (a dead cell) or whose update a power cut stopped before
  the switch is sent the update again, up to `DOWNLOAD_ATTEMPTS` tries, and resumes where
  it stopped; only then does it count as failed (a broken release fails its hash or health
  checks instead, and those count at once);
* after the last wave, it is completed; while it is the newest rollout, its stragglers are
  still followed and sent the update when they come back, days later if need be.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from cloud import thread
from cloud.commands import Issuer
from cloud.domain import CommandState
from cloud.errors import Conflict, InvalidInput, NotFound
from cloud.keys import CommandKey
from cloud.lifecycle_models import Release, Rollout, RolloutTarget
from cloud.models import Command, Device, Twin
from cloud.settings import CloudSettings
from protocols.cose import private_key_to_raw
from protocols.messages import UPDATE_INTERRUPTED, CommandName, RejectReason
from protocols.versions import is_version, newer

log = logging.getLogger(__name__)

MIN_FINISHED = 3
"""Finished gateways before a failure rate is judged (one early failure is not a trend)."""
FINISHED = {CommandState.SUCCEEDED.value: "succeeded", CommandState.FAILED.value: "failed"}
FINISHED[CommandState.REJECTED.value] = "failed"
STRAGGLING = (CommandState.EXPIRED.value, CommandState.TIMED_OUT.value)
DOWNLOAD_ATTEMPTS = 3
"""Tries a gateway gets at an update whose download fails before it counts as failed."""
RETRIED = frozenset({RejectReason.DOWNLOAD_FAILED.value})
"""Failure reasons worth another try: the download broke, not the release."""
ARTIFACT_PATH = "/api/v1/updates/artifacts/"


@dataclass(frozen=True, slots=True)
class Publisher:
    """What issuing update commands needs beyond the signing key: where artifacts are."""

    issuer: Issuer
    base_url: str

    @classmethod
    def under(cls, key: CommandKey, settings: CloudSettings, actor: str) -> Publisher:
        """Commands signed with `key` for `actor`, artifacts at the cloud's public address."""
        base = settings.public_url or f"http://{settings.api_host}:{settings.api_port}"
        return cls(Issuer.under(key, settings, actor), base)


def add_release(
    session: Session,
    wheel: Path,
    *,
    version: str,
    min_agent: str,
    artifacts_dir: Path,
    now_ms: int,
    actor: str,
) -> Release:
    """Keep `wheel` as release `version`."""
    if not is_version(version) or not is_version(min_agent):
        raise InvalidInput("version and min_agent must be release versions, e.g. 0.2.0")
    if session.get(Release, version) is not None:
        raise Conflict(f"release {version} exists already", version=version)
    try:
        data = wheel.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {wheel}: {exc.strerror}", field="wheel") from exc
    if not data.startswith(b"PK"):
        raise InvalidInput(f"{wheel} is not a wheel (a zip file)", field="wheel")
    digest = hashlib.sha256(data).hexdigest()
    same = session.scalars(select(Release).where(Release.sha256 == digest)).first()
    if same is not None:
        raise Conflict(f"{wheel} is release {same.version} already", version=same.version)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    target = artifacts_dir / f"{digest}.whl"
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(wheel, tmp)
        tmp.replace(target)
    release = Release(
        version=version,
        sha256=digest,
        size=len(data),
        filename=wheel.name,
        min_agent=min_agent,
        created_ms=now_ms,
        created_by=actor,
    )
    session.add(release)
    log.info("release %s added (%s, %d bytes)", version, digest[:12], len(data))
    return release


def download_token(key: CommandKey, device_id: str, sha256: str) -> str:
    """What lets `device_id` (and no one else) download artifact `sha256`: an HMAC under a
    secret derived from the command key, so it needs no storage of its own."""
    secret = hashlib.sha256(b"bt-artifact-link\0" + private_key_to_raw(key.key)).digest()
    mac = hmac.new(secret, f"{device_id}\0{sha256}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def artifact_url(publisher: Publisher, sha256: str, device_id: str) -> str:
    """The download link an update command carries (inside the signed manifest)."""
    token = download_token(publisher.issuer.key, device_id, sha256)
    query = urllib.parse.urlencode({"dev": device_id, "t": token})
    return f"{publisher.base_url.rstrip('/')}{ARTIFACT_PATH}{sha256}?{query}"


def artifact_for(
    session: Session, key: CommandKey, artifacts_dir: Path, sha256: str, device_id: str, token: str
) -> Path:
    """The file behind a download link; `NotFound` for a link that is not a live device's
    own (the same answer as for an unknown artifact, so links cannot be probed)."""
    device = session.get(Device, device_id)
    if device is None or device.revoked:
        raise NotFound("no such artifact", sha256=sha256)
    if not hmac.compare_digest(token, download_token(key, device_id, sha256)):
        raise NotFound("no such artifact", sha256=sha256)
    return artifact_path(session, artifacts_dir, sha256)


def artifact_path(session: Session, artifacts_dir: Path, sha256: str) -> Path:
    """The file of a release's artifact; `NotFound` unless it is one."""
    release = session.scalars(select(Release).where(Release.sha256 == sha256)).first()
    path = artifacts_dir / f"{sha256}.whl"
    if release is None or not path.is_file():
        raise NotFound("no such artifact", sha256=sha256)
    return path


def start_rollout(
    session: Session,
    version: str,
    *,
    waves: list[float],
    max_failure_rate: float,
    min_wave_s: float,
    model: str | None,
    now_ms: int,
    publisher: Publisher,
) -> Rollout:
    """Start rolling out `version`; its first wave is sent at once."""
    release = session.get(Release, version)
    if release is None:
        raise NotFound(f"no release {version}", version=version)
    if not waves or any(not 0 < w <= 100 for w in waves) or waves != sorted(waves):
        raise InvalidInput("waves must be rising percentages in (0, 100], e.g. 1,10,50,100")
    if waves[-1] != 100:
        waves = [*waves, 100.0]
    if not 0 <= max_failure_rate < 1:
        raise InvalidInput("max_failure_rate must be 0 to less than 1")
    running = session.scalars(select(Rollout).where(Rollout.state == "running")).first()
    if running is not None:
        raise Conflict(f"rollout {running.id} is running; halt it first", rollout=running.id)
    rollout = Rollout(
        version=version,
        model=model,
        waves=list(waves),
        wave=0,
        state="running",
        max_failure_rate=max_failure_rate,
        min_wave_s=min_wave_s,
        wave_started_ms=now_ms,
        created_ms=now_ms,
        created_by=publisher.issuer.actor,
        updated_ms=now_ms,
    )
    session.add(rollout)
    session.flush()
    _send_wave(session, rollout, release, now_ms, publisher)
    return rollout


def _eligible(session: Session, rollout: Rollout, release: Release) -> list[tuple[str, str | None]]:
    """Devices the release is for and not yet in this rollout: (id, running version)."""
    targeted = select(RolloutTarget.device_id).where(RolloutTarget.rollout_id == rollout.id)
    query = (
        select(Device.id, Twin.agent_version)
        .join(Twin, Twin.device_id == Device.id)
        .where(Device.revoked.is_(False), Device.id.not_in(targeted))
    )
    if rollout.model is not None:
        query = query.where(Device.model == rollout.model)
    out: list[tuple[str, str | None]] = []
    for device_id, running in session.execute(query.order_by(Device.id)):
        if running is None or not newer(release.version, running):
            continue
        if newer(release.min_agent, running):
            continue
        out.append((device_id, running))
    return out


def _send_wave(
    session: Session, rollout: Rollout, release: Release, now_ms: int, publisher: Publisher
) -> int:
    eligible = _eligible(session, rollout, release)
    targeted = (
        session.scalar(
            select(func.count())
            .select_from(RolloutTarget)
            .where(RolloutTarget.rollout_id == rollout.id)
        )
        or 0
    )
    total = targeted + len(eligible)
    wanted = math.ceil(total * rollout.waves[rollout.wave] / 100)
    chosen = eligible[: max(0, wanted - targeted)]
    for device_id, running in chosen:
        command = _update(session, rollout, release, device_id, now_ms, publisher)
        session.add(
            RolloutTarget(
                rollout_id=rollout.id,
                device_id=device_id,
                wave=rollout.wave,
                from_version=running,
                command_id=command,
                state="sent",
                updated_ms=now_ms,
            )
        )
    rollout.wave_started_ms = now_ms
    rollout.updated_ms = now_ms
    log.info(
        "rollout %d of %s: wave %d (%g%%) sent to %d gateway(s)",
        rollout.id,
        release.version,
        rollout.wave + 1,
        rollout.waves[rollout.wave],
        len(chosen),
    )
    return len(chosen)


def _update(
    session: Session,
    rollout: Rollout,
    release: Release,
    device_id: str,
    now_ms: int,
    publisher: Publisher,
) -> str:
    url = artifact_url(publisher, release.sha256, device_id)
    command = publisher.issuer.issue(
        session,
        device_id,
        CommandName.UPDATE,
        {
            "version": release.version,
            "url": url,
            "sha256": release.sha256,
            "size": release.size,
            "min_agent": release.min_agent,
            "rollout": rollout.id,
        },
        now_ms=now_ms,
        reason=f"rollout {rollout.id}: agent {release.version}",
        role="rollout",
    )
    return command.id


def advance(session: Session, now_ms: int, publisher: Publisher) -> list[str]:
    """One round over every running (or rolling back) rollout; what happened, in words."""
    said: list[str] = []
    for rollout in session.scalars(_followed()):
        release = session.get(Release, rollout.version)
        assert release is not None  # a foreign key
        counts = _follow(session, rollout, now_ms, publisher, release)
        if rollout.state != "running":
            continue
        # judged on what finished since the start (or since an operator's resume)
        failed = counts["failed"] - rollout.forgiven_failed
        finished = counts["succeeded"] + counts["failed"] - rollout.forgiven_finished
        rate = failed / finished if finished > 0 else 0.0
        if finished >= MIN_FINISHED and rate > rollout.max_failure_rate:
            why = f"{failed} of {finished} failed ({rate:.0%} > {rollout.max_failure_rate:.0%})"
            said.append(halt(session, rollout, now_ms, publisher, why))
            continue
        wave_done = counts["sent"] == 0
        waited = now_ms - rollout.wave_started_ms >= rollout.min_wave_s * 1000
        if not (wave_done and waited):
            continue
        if rollout.wave + 1 >= len(rollout.waves):
            rollout.state = "completed"
            rollout.updated_ms = now_ms
            said.append(f"rollout {rollout.id} completed: {counts['succeeded']} updated")
            continue
        rollout.wave += 1
        sent = _send_wave(session, rollout, release, now_ms, publisher)
        said.append(f"rollout {rollout.id}: wave {rollout.wave + 1} sent to {sent}")
    for line in said:
        log.info("%s", line)
    return said


def _followed() -> Select[Rollout]:
    """The rollouts `advance` looks at: running and halted ones, and the newest one if it
    completed with gateways still to update (stragglers, sent the update when they are back;
    a newer rollout takes them over)."""
    newest = select(func.max(Rollout.id)).scalar_subquery()
    unfinished = (
        select(RolloutTarget.device_id)
        .where(RolloutTarget.rollout_id == Rollout.id)
        .where(RolloutTarget.state.in_(("sent", "straggling")))
        .exists()
    )
    return select(Rollout).where(
        or_(
            Rollout.state.in_(("running", "halted")),
            and_(Rollout.state == "completed", Rollout.id == newest, unfinished),
        )
    )


def _follow(
    session: Session, rollout: Rollout, now_ms: int, publisher: Publisher, release: Release
) -> dict[str, int]:
    """Move each target on from its command's state; counts by target state (``sent``
    counts only the current wave's gateways still under way, stragglers apart)."""
    counts = {"sent": 0, "succeeded": 0, "failed": 0, "straggling": 0, "rolled_back": 0}
    rows = session.execute(
        select(
            RolloutTarget, Command.state, Command.result_reason, Command.observed, Twin.connection
        )
        .join(Command, Command.id == RolloutTarget.command_id)
        .join(Twin, Twin.device_id == RolloutTarget.device_id)
        .where(RolloutTarget.rollout_id == rollout.id)
    ).all()
    for target, state, reason, observed, connection in rows:
        if target.state in ("sent", "straggling"):
            if state in FINISHED and _try_again(rollout, target, state, reason, observed):
                target.command_id = _update(
                    session, rollout, release, target.device_id, now_ms, publisher
                )
                target.attempts += 1
                target.state, target.reason, target.updated_ms = "sent", reason, now_ms
                log.info(
                    "rollout %d: %s did not get the update through (%s); try %d of %d sent",
                    rollout.id,
                    target.device_id,
                    reason,
                    target.attempts,
                    DOWNLOAD_ATTEMPTS,
                )
            elif state in FINISHED:
                target.state, target.reason, target.updated_ms = FINISHED[state], reason, now_ms
            elif state in STRAGGLING:
                target.state = "straggling"
                if connection == "online" and rollout.state in ("running", "completed"):
                    target.command_id = _update(
                        session, rollout, release, target.device_id, now_ms, publisher
                    )
                    target.state = "sent"
        elif target.state == "rolling_back" and state == CommandState.SUCCEEDED.value:
            target.state, target.updated_ms = "rolled_back", now_ms
        key = target.state if target.state in counts else "sent"
        if key == "sent" and target.wave != rollout.wave:
            key = "straggling"
        counts[key] += 1
    return counts


def _try_again(
    rollout: Rollout,
    target: RolloutTarget,
    state: str,
    reason: str | None,
    observed: dict[str, Any] | None,
) -> bool:
    """Whether a finished update command is sent again rather than counted: a failed
    download or an update cut short before its switch, with tries left, in a rollout still
    sending."""
    step = (observed or {}).get("step")
    cut_short = isinstance(step, str) and step.startswith(UPDATE_INTERRUPTED)
    return (
        FINISHED[state] == "failed"
        and (reason in RETRIED or cut_short)
        and target.attempts < DOWNLOAD_ATTEMPTS
        and rollout.state in ("running", "completed")
    )


def halt(session: Session, rollout: Rollout, now_ms: int, publisher: Publisher, why: str) -> str:
    """Stop the rollout and send every gateway it updated back to its previous release."""
    rollout.state = "halted"
    rollout.halted_reason = why
    rollout.updated_ms = now_ms
    updated = session.scalars(
        select(RolloutTarget).where(
            RolloutTarget.rollout_id == rollout.id, RolloutTarget.state == "succeeded"
        )
    ).all()
    for target in updated:
        command = publisher.issuer.issue(
            session,
            target.device_id,
            CommandName.ROLLBACK,
            {"to": target.from_version or "", "rollout": rollout.id},
            now_ms=now_ms,
            reason=f"rollout {rollout.id} halted: {why}",
            role="rollout",
        )
        target.command_id, target.state, target.updated_ms = command.id, "rolling_back", now_ms
    thread.record(
        session,
        device_id=None,
        kind="rollout",
        ts_ms=now_ms,
        recorded_ms=now_ms,
        actor=publisher.issuer.actor,
        subject=str(rollout.id),
        data={"change": "halted", "why": why, "rolling_back": len(updated)},
    )
    return f"rollout {rollout.id} halted ({why}): {len(updated)} gateway(s) sent back"


def halt_by_hand(session: Session, rollout_id: int, now_ms: int, publisher: Publisher) -> bool:
    """An operator's halt (`halt`, naming the operator); False if it was not running."""
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"no rollout {rollout_id}", rollout=rollout_id)
    if rollout.state != "running":
        return False
    halt(session, rollout, now_ms, publisher, f"halted by {publisher.issuer.actor}")
    return True


def resume(session: Session, rollout_id: int, now_ms: int) -> Rollout:
    """An operator's go-ahead after a halt: the rollout carries on from its wave, judged on
    what finishes from now on (the failures that halted it are known)."""
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"no rollout {rollout_id}", rollout=rollout_id)
    if rollout.state != "halted":
        raise Conflict(f"rollout {rollout_id} is {rollout.state}, not halted", rollout=rollout_id)
    counts = dict(
        session.execute(
            select(RolloutTarget.state, func.count())
            .where(RolloutTarget.rollout_id == rollout.id)
            .group_by(RolloutTarget.state)
        ).all()
    )
    rollout.state = "running"
    rollout.halted_reason = None
    rollout.forgiven_failed = counts.get("failed", 0)
    rollout.forgiven_finished = counts.get("failed", 0) + sum(
        counts.get(s, 0) for s in ("succeeded", "rolling_back", "rolled_back")
    )
    rollout.wave_started_ms = now_ms
    rollout.updated_ms = now_ms
    return rollout


def rollout_json(session: Session, rollout: Rollout) -> dict[str, Any]:
    """A rollout with its gateways counted by state and wave."""
    rows = session.execute(
        select(RolloutTarget.state, RolloutTarget.wave, func.count())
        .where(RolloutTarget.rollout_id == rollout.id)
        .group_by(RolloutTarget.state, RolloutTarget.wave)
    ).all()
    states: dict[str, int] = {}
    waves: dict[int, int] = {}
    for state, wave, count in rows:
        states[state] = states.get(state, 0) + count
        waves[wave + 1] = waves.get(wave + 1, 0) + count
    retried = session.scalar(
        select(func.count())
        .select_from(RolloutTarget)
        .where(RolloutTarget.rollout_id == rollout.id, RolloutTarget.attempts > 1)
    )
    return {
        "id": rollout.id,
        "version": rollout.version,
        "model": rollout.model,
        "state": rollout.state,
        "wave": rollout.wave + 1,
        "waves": rollout.waves,
        "max_failure_rate": rollout.max_failure_rate,
        "halted_reason": rollout.halted_reason,
        "gateways": states,
        "per_wave": waves,
        "downloads_retried": retried or 0,
        "created_ms": rollout.created_ms,
        "updated_ms": rollout.updated_ms,
    }


def fleet_versions(session: Session) -> dict[str, int]:
    """Gateways per running agent version (from their last ``birth``)."""
    rows = session.execute(
        select(Twin.agent_version, func.count()).group_by(Twin.agent_version)
    ).all()
    return {version or "unknown": count for version, count in rows}
