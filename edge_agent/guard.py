"""The update guard: run before every start of the agent, it undoes an update that does not
take (``python3 guard.py --state-dir DIR``; systemd's ``ExecStartPre``).

It imports nothing but the standard library, on purpose: it is copied once to the gateway
(``/opt/boilertwin/guard.py``) and run by the system's Python, so a broken release cannot
break the guard that must roll it back. This is what stops the boot loop seen in other
platforms' rollbacks: the decision is made outside the release being judged.

While an update is on trial (``update-pending.json`` in the state folder, written by the
agent before it switches), each start is counted. When the new release has been started
`max_starts` times without confirming itself healthy, or its trial deadline has passed, the
guard points the ``current`` link back at the previous release and marks the pending file
``rolled_back``; the previous release then starts and reports the outcome to the cloud.
Every write is atomic (a temporary file or link, fsynced, then renamed), so a power cut at
any point leaves either the old or the new state, both bootable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PENDING = "update-pending.json"


def write_json(path: Path, document: dict[str, object]) -> None:
    """Atomically and durably."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(document, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    _sync_dir(path.parent)


def point(link: Path, target: Path) -> None:
    """Make `link` a symlink to `target`, atomically (a new link renamed over the old)."""
    tmp = link.with_name(link.name + ".new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)
    _sync_dir(link.parent)


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def guard(state_dir: Path, now_ms: int | None = None) -> str:
    """One check before a start; says what it did."""
    path = state_dir / PENDING
    try:
        pending = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no update on trial"
    except (OSError, ValueError) as exc:
        return f"unreadable {path} ({exc}): left for the agent"
    if pending.get("rolled_back") or not pending.get("switched"):
        return "nothing to judge"
    now = int(time.time() * 1000) if now_ms is None else now_ms
    pending["starts"] = int(pending.get("starts", 0)) + 1
    late = now > int(pending.get("deadline_ms", 0))
    if pending["starts"] > int(pending.get("max_starts", 3)) or late:
        why = "trial deadline passed" if late else f"{pending['starts'] - 1} starts, never healthy"
        point(Path(pending["link"]), Path(pending["from_path"]))
        pending["rolled_back"] = why
        write_json(path, pending)
        return f"rolled back to {pending['from']}: {why}"
    write_json(path, pending)
    return f"release {pending['to']} on trial: start {pending['starts']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/boilertwin"))
    args = parser.parse_args(argv)
    print(f"boilertwin guard: {guard(args.state_dir)}", file=sys.stderr)
    return 0  # never stops the agent from starting


if __name__ == "__main__":
    raise SystemExit(main())
