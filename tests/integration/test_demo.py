"""`make demo` end to end: simulator, agent, Mosquitto and a verifying tail, then nothing left."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.broker import free_port
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "demo" / "run-demo.sh"
LINE = re.compile(r"^\d\d:\d\d:\d\d  (?P<kind>\w+)\s+seq \d+\s+epoch \d+ ", re.MULTILINE)


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (the demo's run folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and int(entry.name) != os.getpid():
            found.append(f"{entry.name}: {cmdline}")
    return found


def test_demo_shows_verified_messages_and_cleans_up(tmp_path: Path) -> None:
    require_tool("mosquitto")
    boilertwin = Path(sys.executable).parent / "boilertwin"
    run_dir = tmp_path / "demo"
    env = os.environ | {
        "DEMO_SECONDS": "25",
        "DEMO_DIR": str(run_dir),
        "DEMO_BROKER_PORT": str(free_port()),
        "DEMO_CONTROL_PORT": str(free_port()),
        "BOILERTWIN": str(boilertwin),
        "PYTHON": sys.executable,
        "PATH": f"{boilertwin.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
    )
    output = result.stdout + result.stderr
    logs = "\n".join(
        f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted(run_dir.glob("*.log"))
    )
    assert result.returncode == 0, output + logs
    assert "curl -X POST http://127.0.0.1:" in output  # the banner says how to inject a fault
    kinds = [m["kind"] for m in LINE.finditer(result.stdout)]
    assert "birth" in kinds, output + logs
    assert "data" in kinds, output + logs
    assert {"health", "event"} & set(kinds), output + logs
    assert "REJECTED" not in output
    assert re.search(r"state\s+online", result.stdout), output
    assert processes_mentioning(str(run_dir)) == []
