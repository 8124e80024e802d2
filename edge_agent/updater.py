"""Signed agent updates: download, check, install beside the current release, switch, and
confirm or roll back.

The ``update`` command is the manifest, signed with a pinned cloud key and checked by the
executor like every command (this device, clock, expiry, never run twice). Here:

1. **manifest**: the version must be newer than this agent's (no downgrade) and this agent
   at least ``min_agent``; the size at most ``update.max_bytes``;
2. **download** over HTTPS from the cloud into the state folder, resuming a partial file
   with ``Range``; the file must have the manifest's size and SHA-256, or it is deleted and
   the command fails ``bad_artifact`` (``download_failed`` if the cloud cannot be reached);
3. **install** into a new virtual environment ``releases_dir/<version>`` next to the
   current one (the release's wheel with ``pip --no-index --no-deps``; its dependencies are
   the current environment's, reached through a ``.pth`` file): built under a temporary name
   and renamed, so a half-built release never has the release's name;
4. **switch**: ``update-pending.json`` (written when the command starts, with its step) is
   marked ``switched`` with the trial deadline, then the ``current`` link is pointed at the
   new release atomically, ``executing`` is acked with ``step: switched``, and the agent exits
   so that systemd starts the new release (`EXIT_RESTART`);
5. **trial** (`Trial`, in the new release): once it has polled the boiler and published to
   the broker within ``update.trial_s``, it confirms itself: the pending file is removed and
   ``succeeded`` acked. If it crashes, `edge_agent.guard` (run before every start) rolls
   back after ``update.max_starts``; if it runs but never gets healthy, it points the link
   back itself and exits. The previous release, started again, acks ``failed`` with reason
   ``rolled_back``.

A power cut at any step leaves a bootable agent, and the command gets its outcome: during
the download or the install the old release starts again, finds the pending file at that
step and fails the command (``download_failed`` or ``rolled_back``, ``step: interrupted
during ...``; the partial download is kept and resumed by the next attempt, a half-built
environment is removed by it); between marking the switch and the link the old release
still runs and fails it (``rolled_back``, another release runs); after the link the new
release starts on trial, and the guard and the trial decide as above. Each of these is
tested by killing the agent there (`crash_point`, tests/edge_agent/test_update_crashes.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import ssl
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.commands import InProgress, Rejected
from edge_agent.config import EdgeSettings
from edge_agent.guard import PENDING, point, write_json
from protocols.messages import UPDATE_INTERRUPTED, AckState, Command, RejectReason, Scalar
from protocols.versions import is_version, newer

log = logging.getLogger(__name__)

EXIT_RESTART = 75
"""The agent's exit code after switching releases: systemd (``Restart=always``) starts the
new one; ``SuccessExitStatus`` keeps it from counting as a failure."""
CHUNK = 64 * 1024
CRASH_FILE_ENV = "BOILERTWIN_CRASH_FILE"
"""Fault injection for tests (never set in production): the path of a file naming a step
(`crash_point`); the agent dies there at once, as in a power cut."""
CRASH_EXIT = 137
"""The exit code of an injected crash (as after SIGKILL)."""


def crash_point(step: str) -> None:
    """Die here, without clean-up or acks, if the file named by `CRASH_FILE_ENV` names
    `step` (the file is removed first, so it happens once)."""
    path = os.environ.get(CRASH_FILE_ENV)
    if not path:
        return
    try:
        wanted = Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return
    if wanted == step:
        Path(path).unlink(missing_ok=True)
        log.critical("injected crash at update step %r", step)
        os._exit(CRASH_EXIT)


@dataclass(frozen=True, slots=True)
class Manifest:
    version: str
    url: str
    sha256: str
    size: int
    min_agent: str

    @classmethod
    def of(cls, command: Command, max_bytes: int) -> Manifest:
        a = command.args
        version, minimum, url = a.get("version"), a.get("min_agent"), a.get("url")
        sha, size = a.get("sha256"), a.get("size")
        if not (is_version(version) and is_version(minimum)) or not isinstance(url, str):
            raise Rejected(RejectReason.INVALID_ARGS, {"error": "version, min_agent, url"})
        if not isinstance(sha, str) or len(sha) != 64 or type(size) is not int:
            raise Rejected(RejectReason.INVALID_ARGS, {"error": "sha256 and size"})
        if not url.startswith(("https://", "http://")):
            raise Rejected(RejectReason.INVALID_ARGS, {"error": "url must be http(s)"})
        assert isinstance(version, str) and isinstance(minimum, str)
        if not 0 < size <= max_bytes:
            raise Rejected(RejectReason.INVALID_ARGS, {"error": f"size over {max_bytes}"})
        if not newer(version, __version__) or newer(minimum, __version__):
            raise Rejected(RejectReason.DOWNGRADE, {"agent_version": __version__})
        return cls(version, url, sha.lower(), size, minimum)


def download(manifest: Manifest, folder: Path, ca_file: Path | None, timeout_s: float) -> Path:
    """The artifact, whole and checked; resumes what an earlier attempt left."""
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / f"{manifest.sha256}.whl"
    part = folder / f"{manifest.sha256}.part"
    if not done.exists():
        have = part.stat().st_size if part.exists() else 0
        if have < manifest.size:
            headers = {"Range": f"bytes={have}-"} if have else {}
            request = urllib.request.Request(manifest.url, headers=headers)
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            try:
                with urllib.request.urlopen(request, timeout=timeout_s, context=context) as r:
                    mode = "ab" if have and r.status == 206 else "wb"
                    with open(part, mode) as out:
                        while chunk := r.read(CHUNK):
                            out.write(chunk)
                            out.flush()
                            crash_point("download")
                            if out.tell() > manifest.size:
                                break
                        out.flush()
                        os.fsync(out.fileno())
            except (urllib.error.URLError, OSError) as exc:
                raise Rejected(RejectReason.DOWNLOAD_FAILED, {"error": str(exc)[:200]}) from exc
        digest = hashlib.sha256()
        with open(part, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        size = part.stat().st_size
        if size != manifest.size or digest.hexdigest() != manifest.sha256:
            part.unlink()
            raise Rejected(RejectReason.BAD_ARTIFACT, {"size": size})
        os.replace(part, done)
    return done


def install(wheel: Path, releases_dir: Path, version: str, timeout_s: float) -> Path:
    """A new environment ``releases_dir/<version>`` with the release installed."""
    target = releases_dir / version
    if (target / "bin" / "python").exists():
        return target  # installed by an attempt the power cut interrupted after the rename
    building = releases_dir / f".{version}.building"
    shutil.rmtree(building, ignore_errors=True)
    releases_dir.mkdir(parents=True, exist_ok=True)
    named = wheel.with_name(f"boilertwin-{version}-py3-none-any.whl")  # pip reads the name
    shutil.copyfile(wheel, named)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(building)],
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )
        crash_point("install")
        site = Path(
            sysconfig.get_path("purelib", vars={"base": str(building), "platbase": str(building)})
        )
        site.mkdir(parents=True, exist_ok=True)
        # the dependencies: every site-packages folder this release sees (its own, and the
        # ones it reaches itself through such a file), after the new release's own
        bases = [os.path.realpath(p) for p in sys.path if p.rstrip("/").endswith("site-packages")]
        (site / "_boilertwin_base.pth").write_text("".join(f"{p}\n" for p in bases))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(building / "bin" / "python"),
                "install",
                "--no-index",
                "--no-deps",
                "--no-cache-dir",
                "--ignore-installed",  # the dependencies reached through the .pth hold an older one
                "--quiet",
                str(named),
            ],
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(building, ignore_errors=True)
        detail = getattr(exc, "stderr", b"") or b""
        raise Rejected(
            RejectReason.BAD_ARTIFACT, {"error": f"does not install: {detail[-160:]!r}"}
        ) from exc
    os.replace(building, target)
    return target


class Updater:
    """Runs ``update`` commands (the executor's handler)."""

    def __init__(self, settings: EdgeSettings, restart: Callable[[], None]) -> None:
        self.settings = settings
        self.restart = restart
        """Called once the new release is switched in: the agent stops and exits with
        `EXIT_RESTART`."""

    async def __call__(self, command: Command) -> dict[str, Scalar]:
        u = self.settings.update
        if u.releases_dir is None or u.current_link is None:
            raise Rejected(RejectReason.UNSUPPORTED_COMMAND)
        manifest = Manifest.of(command, u.max_bytes)
        state = self.settings.device.state_dir
        link = u.current_link
        previous = link.resolve() if link.is_symlink() else Path(sys.prefix)
        pending: dict[str, object] = {
            "command_id": command.id,
            "from": __version__,
            "from_path": str(previous),
            "to": manifest.version,
            "link": str(link),
            "max_starts": u.max_starts,
            "starts": 0,
            "switched": False,
            "step": "download",
        }
        write_json(state / PENDING, pending)
        try:
            wheel = await asyncio.to_thread(
                download, manifest, state / "updates", self.settings.provisioning.ca_file, 60.0
            )
            pending["step"] = "install"
            write_json(state / PENDING, pending)
            release = await asyncio.to_thread(
                install, wheel, u.releases_dir, manifest.version, u.install_timeout_s
            )
        except Rejected:
            (state / PENDING).unlink(missing_ok=True)
            raise
        pending |= {
            "step": "switch",
            "to_path": str(release),
            "deadline_ms": int(time.time() * 1000 + u.trial_s * 1000),
            "switched": True,
        }
        write_json(state / PENDING, pending)  # before the link: a trial from its first start
        crash_point("switch")
        point(link, release)
        crash_point("switched")
        log.warning("%s: switched to release %s: restarting", command.dev, manifest.version)
        self.restart()
        raise InProgress({"step": "switched", "agent_version": manifest.version})


def read_pending(state_dir: Path) -> dict[str, Any] | None:
    try:
        pending: dict[str, Any] = json.loads((state_dir / PENDING).read_text(encoding="utf-8"))
        return pending
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("unreadable %s (%s): removed", state_dir / PENDING, exc)
        (state_dir / PENDING).unlink(missing_ok=True)
        return None


Report = Callable[[str, AckState, RejectReason | None, dict[str, Scalar]], None]


async def settle(
    settings: EdgeSettings,
    report: Report,
    healthy: Callable[[], bool],
    restart: Callable[[], None],
    wall_ms: Callable[[], int],
    every_s: float = 0.5,
) -> str:
    """At start: finish the update an earlier run began, if any (see the module docs);
    says what it did."""
    state = settings.device.state_dir
    pending = read_pending(state)
    if pending is None:
        return "no update pending"
    command_id = str(pending.get("command_id", ""))
    if not pending.get("switched"):
        (state / PENDING).unlink(missing_ok=True)
        step = str(pending.get("step", "download"))
        reason = RejectReason.DOWNLOAD_FAILED if step == "download" else RejectReason.ROLLED_BACK
        report(
            command_id,
            AckState.FAILED,
            reason,
            {"agent_version": __version__, "step": f"{UPDATE_INTERRUPTED} {step}"},
        )
        return f"an update interrupted during its {step}: failed"
    if pending.get("rolled_back") or pending.get("to") != __version__:
        (state / PENDING).unlink(missing_ok=True)
        why = str(pending.get("rolled_back") or "another release runs")
        report(
            command_id,
            AckState.FAILED,
            RejectReason.ROLLED_BACK,
            {"agent_version": __version__, "step": "trial", "why": why[:120]},
        )
        return f"release {pending.get('to')} rolled back ({why})"
    crash_point("trial")
    deadline = int(pending.get("deadline_ms", 0))
    while not healthy():
        if wall_ms() > deadline:
            point(Path(str(pending["link"])), Path(str(pending["from_path"])))
            pending["rolled_back"] = "never healthy within the trial"
            write_json(state / PENDING, pending)
            restart()
            return "never healthy: rolled back"
        await asyncio.sleep(every_s)
    (state / PENDING).unlink(missing_ok=True)
    report(command_id, AckState.SUCCEEDED, None, {"agent_version": __version__})
    return f"release {__version__} confirmed healthy"
