"""The fleet simulator's gateway lifecycle: joining by claim, remote configuration, updates.

* `claim_gateways`: each simulated gateway makes its key and claims its identity from the
  cloud with a claim token (``POST /api/v1/provisioning/claims``), as ``edge provision``
  does, instead of being imported from a key file.
* `Lifecycle` answers the cloud's ``configure``, ``update`` and ``rollback`` commands the
  way the agent does, without installing software: a configuration's version is kept and
  reported in ``health``; an update's manifest is checked (newer, ``min_agent``), its
  artifact downloaded from the cloud and checked against the manifest's size and SHA-256;
  then the gateway runs the new version, unless it is in the cohort `fail_share` for which
  `fail_version` is broken: those never get healthy and roll back by themselves after
  `trial_s` (ack ``failed``/``rolled_back``), as the agent's trial does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocols.cose import generate_private_key, public_key_from_pem
from protocols.errors import ProtocolError
from protocols.messages import AckState, Command, CommandName, RejectReason, Scalar
from protocols.provisioning import CONTENT_TYPE, make_request
from protocols.remote_config import decode
from protocols.versions import is_version, newer

SIM_MODEL = "Sim 100"


@dataclass(frozen=True, slots=True)
class Claimed:
    """A gateway that joined by claim: its identity and the cloud keys it pinned."""

    device_id: str
    key: Any
    password: str
    cloud_keys: dict[str, Ed25519PublicKey]


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": CONTENT_TYPE}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def claim_gateways(
    count: int, cloud_url: str, token: str, *, prefix: str = "simgw", parallel: int = 16
) -> tuple[list[Claimed], list[float]]:
    """`count` gateways claimed with `token` (good for at least `count` uses); also each
    claim's round trip in seconds."""
    url = cloud_url.rstrip("/") + "/api/v1/provisioning/claims"
    gate = asyncio.Semaphore(parallel)
    loop = asyncio.get_running_loop()

    async def one(i: int) -> tuple[Claimed, float]:
        key = generate_private_key()
        device_id = f"{prefix}-{i:06d}"
        body = make_request(
            key,
            claim=token,
            dev=device_id,
            serial=f"SIM-{i:08d}",
            model=SIM_MODEL,
            agent="sim-fleet-1",
            iat=int(loop.time() * 1000),
            nonce=uuid.uuid4().hex,
        )
        async with gate:
            started = loop.time()
            status, raw = await asyncio.to_thread(_post, url, body)
            took = loop.time() - started
        if status not in (200, 201):
            raise RuntimeError(f"claim of {device_id} refused ({status}): {raw[:300]!r}")
        answer = json.loads(raw)
        keys = {kid: public_key_from_pem(pem.encode()) for kid, pem in answer["cloud_keys"].items()}
        return Claimed(answer["device_id"], key, answer["broker"]["password"], keys), took

    done = await asyncio.gather(*(one(i) for i in range(count)))
    return [c for c, _ in done], [t for _, t in done]


@dataclass
class LifecycleFigures:
    """What the fleet's gateways did with lifecycle commands."""

    outcomes: Counter[str] = field(default_factory=Counter)
    downloaded_bytes: int = 0
    downloads: int = 0
    rollback_s: list[float] = field(default_factory=list)
    """Seconds from an update's arrival to the gateway running its old version again."""

    def lines(self) -> list[str]:
        per = self.downloaded_bytes / self.downloads if self.downloads else 0
        return [
            f"lifecycle commands: {dict(self.outcomes) or 'none'}",
            f"update downloads: {self.downloads:,} ({per:,.0f} bytes each)",
        ]


Ack = Callable[..., None]
"""`ack(command_id, state, reason=None, observed=None)`: enqueue a signed ack."""


@dataclass
class Lifecycle:
    """One simulated gateway's software and configuration state."""

    version: str
    fail_version: str | None = None
    failing: bool = False
    """Whether this gateway is in the cohort for which `fail_version` never gets healthy."""
    trial_s: float = 2.0
    config_version: int = 0
    previous: str | None = None
    cut_downloads: bool = False
    """Whether this gateway's first download of each release breaks off."""
    tried: set[str] = field(default_factory=set)
    """Releases it has started to download."""

    @classmethod
    def draw(
        cls,
        version: str,
        rng: random.Random,
        fail_version: str | None,
        fail_share: float,
        trial_s: float,
        cut_download_share: float = 0.0,
    ) -> Lifecycle:
        failing = rng.random() < fail_share
        # drawn only when asked for, so that seeded runs without it stay as they were
        cut = cut_download_share > 0 and rng.random() < cut_download_share
        return cls(version, fail_version, failing, trial_s, cut_downloads=cut)

    async def handle(
        self, command: Command, ack: Ack, rebirth: Callable[[], None], figures: LifecycleFigures
    ) -> None:
        """Run one lifecycle command (its ``delivered`` ack is already enqueued)."""
        name = command.name
        try:
            if name is CommandName.CONFIGURE:
                observed = self._configure(command)
            elif name is CommandName.UPDATE:
                observed = await self._update(command, ack, rebirth, figures)
            else:
                observed = self._rollback(rebirth)
        except _Refused as refused:
            figures.outcomes[f"{name.value}:{refused.reason.value}"] += 1
            ack(command.id, refused.state, refused.reason, refused.observed)
            return
        figures.outcomes[f"{name.value}:succeeded"] += 1
        ack(command.id, AckState.SUCCEEDED, None, observed)

    def _configure(self, command: Command) -> dict[str, Scalar]:
        version = command.args.get("version")
        if type(version) is not int or version <= self.config_version:
            raise _Refused(RejectReason.INVALID_ARGS, {"error": "version not newer"})
        try:
            decode(command.args.get("config"))
        except ProtocolError as exc:
            raise _Refused(RejectReason.INVALID_ARGS, {"error": str(exc)}) from None
        self.config_version = version
        return {"config_version": version}

    async def _update(
        self, command: Command, ack: Ack, rebirth: Callable[[], None], figures: LifecycleFigures
    ) -> dict[str, Scalar]:
        args = command.args
        target, minimum = args.get("version"), args.get("min_agent")
        if not is_version(target) or not is_version(minimum):
            raise _Refused(RejectReason.INVALID_ARGS, {"error": "bad manifest"})
        assert isinstance(target, str) and isinstance(minimum, str)
        if not newer(target, self.version) or newer(minimum, self.version):
            raise _Refused(RejectReason.DOWNGRADE, {"agent_version": self.version})
        started = asyncio.get_running_loop().time()
        first_try = target not in self.tried
        self.tried.add(target)
        if self.cut_downloads and first_try:
            raise _Refused(
                RejectReason.DOWNLOAD_FAILED,
                {"error": "connection lost mid-download (simulated)", "step": "download"},
                AckState.FAILED,
            )
        try:
            data = await asyncio.to_thread(_download, str(args.get("url")))
        except OSError as exc:
            raise _Refused(
                RejectReason.DOWNLOAD_FAILED, {"error": str(exc)[:200]}, AckState.FAILED
            ) from None
        figures.downloads += 1
        figures.downloaded_bytes += len(data)
        if len(data) != args.get("size") or hashlib.sha256(data).hexdigest() != args.get("sha256"):
            raise _Refused(RejectReason.BAD_ARTIFACT, {"size": len(data)}, AckState.FAILED)
        ack(command.id, AckState.EXECUTING, None, {"step": "switched"})
        if self.failing and target == self.fail_version:
            await asyncio.sleep(self.trial_s)  # never healthy: the trial runs out
            figures.rollback_s.append(asyncio.get_running_loop().time() - started)
            rebirth()  # the old version starts again
            raise _Refused(
                RejectReason.ROLLED_BACK,
                {"agent_version": self.version, "step": "trial"},
                AckState.FAILED,
            )
        self.previous, self.version = self.version, target
        rebirth()
        return {"agent_version": target}

    def _rollback(self, rebirth: Callable[[], None]) -> dict[str, Scalar]:
        if self.previous is None:
            raise _Refused(RejectReason.INVALID_ARGS, {"error": "no previous release"})
        self.version, self.previous = self.previous, None
        rebirth()
        return {"agent_version": self.version}


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as answer:
        data: bytes = answer.read()
        return data


class _Refused(Exception):
    def __init__(
        self,
        reason: RejectReason,
        observed: dict[str, Scalar],
        state: AckState = AckState.REJECTED,
    ) -> None:
        super().__init__(reason.value)
        self.reason, self.observed, self.state = reason, observed, state


LIFECYCLE = frozenset({CommandName.CONFIGURE, CommandName.UPDATE, CommandName.ROLLBACK})


class Outage:
    """Gateways taken off the air from outside a run (a scenario's stragglers): `cut` drops
    their link at once (the broker publishes their will) and keeps them off until `restore`;
    their boilers run on and their readings wait in their outboxes. `run_fleet` attaches it."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.links: dict[str, asyncio.Event] = {}
        """Each gateway's "drop the link now" event, by device id (`run_fleet` fills it)."""

    def cut(self, device_ids: list[str]) -> None:
        for device_id in device_ids:
            self.down.add(device_id)
            self.links[device_id].set()

    def restore(self, device_ids: list[str]) -> None:
        self.down.difference_update(device_ids)

    async def held(self, device_id: str, stop: asyncio.Event) -> None:
        """Return once `device_id` may connect (or the run stops)."""
        while device_id in self.down and not stop.is_set():
            await asyncio.sleep(0.1)
