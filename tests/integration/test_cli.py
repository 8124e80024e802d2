"""The ``boilertwin sim`` commands as separate processes, driven by a master that is not ours.

mbpoll is a libmodbus-based Modbus master from Debian: it opens the pty at 19200 8E1 exactly
as it would a USB RS-485 adapter.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from tests.conftest import require_tool

pytestmark = pytest.mark.integration

BOILERTWIN = [sys.executable, "-m", "boilertwin"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimProcess:
    def __init__(self, args: list[str], ready_marker: str) -> None:
        self.proc = subprocess.Popen(
            [*BOILERTWIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.banner = ""
        deadline = time.monotonic() + 20
        while ready_marker not in self.banner:
            line = self.proc.stdout.readline()
            if not line:
                _, err = self.proc.communicate(timeout=5)
                raise AssertionError(f"simulator exited early: {err}")
            self.banner += line
            assert time.monotonic() < deadline
        os.set_blocking(self.proc.stdout.fileno(), False)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=10)


@pytest.fixture
def boiler(tmp_path: Path) -> Iterator[tuple[SimProcess, Path, int, str]]:
    pty, tcp, control = tmp_path / "boiler0", free_port(), free_port()
    sim = SimProcess(
        [
            "sim",
            "boiler",
            "--pty",
            str(pty),
            "--tcp",
            f"127.0.0.1:{tcp}",
            "--control",
            f"127.0.0.1:{control}",
            "--time-scale",
            "30",
            "--seed",
            "4",
            "--start",
            "2026-01-15T03:00:00",
            "--log-level",
            "warning",
        ],
        "Ctrl-C or SIGTERM stops it.",
    )
    yield sim, pty, tcp, f"http://127.0.0.1:{control}"
    if sim.proc.poll() is None:
        sim.stop(signal.SIGKILL)


def post(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body or {}).encode()
    with urllib.request.urlopen(
        urllib.request.Request(url, data=data, method="POST"), timeout=5
    ) as r:
        return json.loads(r.read())


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def mbpoll(*args: str) -> str:
    tool = require_tool("mbpoll")
    result = subprocess.run([tool, *args], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def registers(output: str) -> dict[int, int]:
    return {int(a): int(v) for a, v in re.findall(r"^\[(\d+)\]:\s+(-?\d+)", output, re.MULTILINE)}


def test_banner_tells_how_to_reach_every_service(boiler: Any) -> None:
    sim, pty, tcp, url = boiler
    assert str(pty) in sim.banner and f"127.0.0.1:{tcp}" in sim.banner and url in sim.banner
    assert "19200 8E1" in sim.banner and "mbpoll" in sim.banner
    assert os.path.realpath(pty).startswith("/dev/pts/")


def test_libmodbus_master_reads_and_resets_over_rtu_8e1_and_tcp(boiler: Any) -> None:
    _, pty, tcp, url = boiler
    rtu = ["-m", "rtu", "-b", "19200", "-P", "even", "-a", "1", "-0", "-1", "-q"]
    values = registers(mbpoll(*rtu, "-t", "3", "-r", "0", "-c", "19", str(pty)))
    truth = get(url + "/state")["registers"]
    assert values[0] in range(8)
    assert (values[10] << 16) | values[11] == truth["burner_starts"]
    assert abs(values[5] - truth["outdoor_temp"] * 10) <= 2  # tenths of a degree, moving slowly
    again = registers(
        mbpoll(*rtu, "-t", "3", "-r", "100", "-c", "8", str(pty))
    )  # second connection
    assert (
        bytes(b for v in again.values() for b in v.to_bytes(2, "big")).rstrip(b"\0")
        == b"BT24C-000001"
    )
    tcp_values = registers(
        mbpoll(
            "-m",
            "tcp",
            "-p",
            str(tcp),
            "-a",
            "1",
            "-0",
            "-1",
            "-q",
            "-t",
            "3",
            "-r",
            "10",
            "-c",
            "4",
            "127.0.0.1",
        )
    )
    assert (tcp_values[10] << 16) | tcp_values[11] == truth["burner_starts"]

    post(url + "/demand", {"ch": "on", "dhw": "off"})
    post(url + "/fault", {"code": "F28"})
    post(url + "/advance", {"seconds": 60})
    assert get(url + "/state")["status"] == "lockout"
    post(url + "/repair")
    mbpoll(*rtu, "-t", "4", "-r", "210", str(pty), "1")  # write the reset register
    post(url + "/advance", {"seconds": 15})
    state = get(url + "/state")
    assert state["status"] == "running" and state["last_reset"] == "accepted"


def test_sigterm_stops_cleanly_and_removes_the_link(boiler: Any) -> None:
    sim, pty, _, _ = boiler
    assert pty.is_symlink()
    assert sim.stop(signal.SIGTERM) == 0
    assert not pty.exists() and not pty.is_symlink()


def test_ctrl_c_stops_cleanly_too(boiler: Any) -> None:
    sim, pty, _, _ = boiler
    assert sim.stop(signal.SIGINT) == 0
    assert not pty.is_symlink()


def test_busy_pty_path_is_refused_with_a_clear_error(boiler: Any, tmp_path: Path) -> None:
    _, pty, _, _ = boiler
    result = subprocess.run(
        [*BOILERTWIN, "sim", "boiler", "--pty", str(pty)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 1
    assert "live pty" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tcp", "nonsense"], "HOST:PORT"),
        (["--pty", "x", "--unit", "0"], "unit id"),
        (["--pty", "x", "--parity", "X"], "parity"),
        (["--pty", "x", "--time-scale", "0"], "time scale"),
        ([], "give a pty path"),
    ],
)
def test_bad_options_are_explained(args: list[str], message: str) -> None:
    result = subprocess.run(
        [*BOILERTWIN, "sim", "boiler", *args], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_standalone_modem_answers_at_commands(tmp_path: Path) -> None:
    path, control = tmp_path / "modem0", free_port()
    sim = SimProcess(
        ["sim", "modem", "--pty", str(path), "--control", f"127.0.0.1:{control}"], "/modem"
    )
    try:
        post(f"http://127.0.0.1:{control}/modem", {"rssi": 9, "operator": "Test Net"})
        with serial.Serial(str(path), 115200, timeout=1) as port:
            port.write(b"ATE0\r")
            assert b"OK" in port.read_until(b"OK\r\n")
            port.write(b"AT+CSQ\r")
            assert b"+CSQ: 9,99" in port.read_until(b"OK\r\n")
            port.write(b"AT+COPS?\r")
            assert b'"Test Net"' in port.read_until(b"OK\r\n")
    finally:
        assert sim.stop() == 0
    assert not path.is_symlink()
