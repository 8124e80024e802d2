"""`make demo` end to end: three boilers, their agents, Mosquitto and the cloud; the lockout
scenario, then the repair scenario twice (it must be re-runnable), played against it from
outside; then Ctrl-C and nothing left running."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_tool


def _ctrl_c_reaches_it() -> None:
    """A suite started in the background by a non-interactive shell inherits SIGINT and
    SIGQUIT ignored, and bash may not trap a signal ignored when it started: give the demo
    the terminal's default, as a user's Ctrl-C finds it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "demo" / "run-demo.sh"
READY_S = 90.0
"""Provisioning, start-up and every boiler's first report; 15-40 s here."""


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


def healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(api.removesuffix("/api/v1") + "/healthz", timeout=5) as reply:
            return reply.status == 200
    except OSError:
        return False


def logs(run_dir: Path) -> str:
    return "\n".join(
        f"--- {log.relative_to(run_dir)} ---\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted(run_dir.rglob("*.log"))
        if log.name != "mosquitto.log"
    )


def play(boilertwin: Path, scenario: str, run_dir: Path, timeout: float) -> str:
    """Run ``boilertwin demo --scenario`` to the end; what it said (it must pass)."""
    played = subprocess.run(
        [str(boilertwin), "demo", "--scenario", scenario, "--dir", str(run_dir)],
        cwd=run_dir.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    told = played.stdout + played.stderr
    assert played.returncode == 0, told + logs(run_dir)
    assert f"scenario {scenario}: PASSED" in told, told
    return told


MAIN_PAGES = {"tenant": "/tenant", "owner": "/owner", "engineer": "/engineer"}
MAIN_PAGES |= {"support": "/fleet", "admin": "/fleet"}


def portal_main_page(portal: str, user: dict[str, str]) -> str:
    """Log in to the portal's form as `user`; the main page it opens (after checking it
    answers 200 with the user's name on it)."""
    with httpx.Client(base_url=portal, timeout=10) as browser:
        form = {"username": user["id"], "password": user["password"], "next": "/"}
        logged_in = browser.post("/login", data=form)
        assert logged_in.status_code == 303, logged_in.text
        target = logged_in.headers["location"]
        main = browser.get(target)
        assert main.status_code == 200, main.text
        assert user["id"] in main.text
        return target


@pytest.mark.timeout(300)
def test_demo_plays_its_scenarios_and_cleans_up(tmp_path: Path) -> None:
    require_tool("mosquitto")
    boilertwin = Path(sys.executable).parent / "boilertwin"
    run_dir = tmp_path / "demo"
    env = os.environ | {
        "DEMO_SECONDS": "240",  # a backstop: the test stops it with Ctrl-C once it is done
        "DEMO_DIR": str(run_dir),
        "BOILERTWIN": str(boilertwin),
        "PYTHON": sys.executable,
        "PATH": f"{boilertwin.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    out_path = tmp_path / "demo.out"
    with out_path.open("w") as out:
        demo = subprocess.Popen(
            ["bash", str(SCRIPT)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_ctrl_c_reaches_it,
        )
    info_path = run_dir / "demo.json"
    try:
        deadline = time.monotonic() + READY_S
        while not info_path.exists():
            assert demo.poll() is None, out_path.read_text() + logs(run_dir)
            assert time.monotonic() < deadline, out_path.read_text() + logs(run_dir)
            time.sleep(0.2)
        info = json.loads(info_path.read_text())
        assert healthy(info["api"]), out_path.read_text() + logs(run_dir)
        assert [b["id"] for b in info["boilers"]] == [f"boiler-demo-{n}" for n in (1, 2, 3)]
        assert {u["role"] for u in info["users"]} >= {"admin", "support", "owner", "tenant"}

        engineers = {u["id"] for u in info["users"] if u["role"] == "engineer"}
        assert len(engineers) >= 6, info["users"]  # deploy/demo/engineers.csv, each can log in
        for user in info["users"]:  # the portal opens for every listed login, on their page
            assert portal_main_page(info["portal"], user) == MAIN_PAGES[user["role"]], user

        told = play(boilertwin, "lockout", run_dir, timeout=90)
        assert "twin shows LOCKOUT" in told, told
        assert "command SUCCEEDED" in told, told
        assert "executing -> succeeded" in told, told  # the thread, as the API keeps it
        for state in ("created", "sent", "delivered", "executing", "succeeded"):
            assert f"  command {state} (+" in told, (state, told)  # every state, none skipped

        for _ in range(2):  # the second run starts from what the first one left
            told = play(boilertwin, "repair", run_dir, timeout=120)
            for step in range(1, 11):
                assert f"--- {step}. " in told, told
            assert "[boiler_alarm]" in told, told
            assert "validation: matched" in told, told
            assert "invited j.evans" in told, told  # the top engineer by W
            assert "\N{POUND SIGN}" in told and "GBP" not in told, told  # one currency format
            assert "refused: HTTP 403" in told and "report the completed repair first" in told
            assert "command SUCCEEDED" in told, told
            assert "job VERIFIED" in told, told
            assert "[evaluate]" in told, told
            assert re.search(r"CS \d\.\d{3} -> \d\.\d{3}, SQ \d\.\d{3} -> \d\.\d{3}", told), told
            for kind in ("request", "contract", "completion", "verification", "evaluation"):
                assert f"  {kind} " in told, (kind, told)
            assert "is evaluated" in told, told
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
    output = out_path.read_text()
    assert demo.returncode == 130, output + logs(run_dir)
    assert info["api"] in output and "/docs" in output  # the banner: the API and its OpenAPI
    assert f"web portal    {info['portal']}" in output
    for user in info["users"]:
        assert user["password"] in output  # and the logins
    assert "demo: stopped" in output
    assert not info_path.exists()  # the scenario now says the demo is not running
    assert processes_mentioning(str(run_dir)) == []

    after = subprocess.run(
        [str(boilertwin), "demo", "--scenario", "lockout", "--dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert after.returncode == 1
    assert "the demo is not running: start it with `make demo`" in after.stderr
