"""systemd integration: sd_notify datagrams on a real socket, the watchdog on virtual time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.watchdog import Progress, feed_watchdog, notify, watchdog_interval_s
from tests.clocks import FakeClock


@contextlib.contextmanager
def systemd_socket(address: str) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's notify socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(address)
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()


def received(sock: socket.socket) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = str(tmp_path / "notify")
    with systemd_socket(path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        yield sock


# --- notify -----------------------------------------------------------------------------------


def test_notify_sends_one_datagram(notify_socket: socket.socket) -> None:
    assert notify("READY=1") is True
    assert notify("STOPPING=1") is True
    assert received(notify_socket) == [b"READY=1", b"STOPPING=1"]


def test_notify_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"boilertwin-test-{os.getpid()}-{id(monkeypatch)}"
    with systemd_socket("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("WATCHDOG=1") is True
        assert received(sock) == [b"WATCHDOG=1"]


def test_notify_without_systemd_is_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_notify_to_a_vanished_socket_is_false_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert notify("READY=1") is False


def test_watchdog_interval_comes_from_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "360000000")
    assert watchdog_interval_s() == 360.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 360.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert watchdog_interval_s() is None


# --- progress ---------------------------------------------------------------------------------


def test_progress_reports_the_loops_that_stalled() -> None:
    clock = FakeClock()
    progress = Progress(clock, ("poll", "uplink"))
    assert progress.stalled(120) == []
    clock.now += 100
    progress.mark("poll")
    clock.now += 30  # poll 30 s ago, uplink 130 s ago
    assert progress.stalled(120) == ["uplink"]
    clock.now += 100
    assert progress.stalled(120) == ["poll", "uplink"]
    progress.mark("uplink")
    progress.mark("poll")
    assert progress.stalled(120) == []
    clock.now += 120  # exactly the limit is not yet stalled
    assert progress.stalled(120) == []


# --- feeding the watchdog ---------------------------------------------------------------------


async def test_the_watchdog_is_fed_only_while_both_loops_progress(
    notify_socket: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    feeds: list[float] = []  # virtual times at which a WATCHDOG=1 arrived

    def tick(now: float) -> None:
        for message in received(notify_socket):  # sent before the watchdog slept again
            assert message == b"WATCHDOG=1"
            feeds.append(now - 10)
        if now < 600 or now >= 1200:  # the poll loop hangs from 600 to 1200
            progress.mark("poll")
        if not 900 <= now < 1200:  # the uplink from 900 to 1200
            progress.mark("uplink")

    clock = FakeClock(tick)
    progress = Progress(clock, ("poll", "uplink"))
    watchdog = asyncio.create_task(feed_watchdog(progress, clock, 120.0), name="watchdog")
    while clock.now < 1500:
        await asyncio.sleep(0)
    watchdog.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watchdog

    # Fed every half interval while both loops make progress, including 660 (poll last
    # marked at 590, 70 s ago) ...
    assert [t for t in feeds if t < 700] == [60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 660]
    # ... not once while a loop has been silent for longer than the interval ...
    assert not [t for t in feeds if 700 <= t < 1200]
    # ... and again as soon as both are back.
    assert [t for t in feeds if t >= 1200][:3] == [1200, 1260, 1320]
    # The stall is logged when it starts and when the set of stalled loops changes, not on
    # every missed feed.
    stalls = [r.getMessage() for r in caplog.records if "watchdog not fed" in r.getMessage()]
    assert stalls == [
        "watchdog not fed: no progress in poll",
        "watchdog not fed: no progress in poll, uplink",
    ]
