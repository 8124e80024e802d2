"""Shared fixtures: a simulator running in the test's event loop, and a tiny HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hw_sim.runner import SimSettings, Simulator

MIDNIGHT = 1_763_683_200.0

pytest_plugins = ["tests.broker"]


def require_tool(name: str) -> str:
    """Path of a system tool the suite needs; in CI its absence is a failure, not a skip."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if path is None:
        message = f"{name} is not installed (make test installs it with apt-get)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


async def http(
    url: str, method: str = "GET", body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    """One HTTP/1.1 request; returns (status, parsed JSON body)."""
    assert url.startswith("http://")
    host_port, _, path = url[len("http://") :].partition("/")
    host, _, port = host_port.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    head = f"{method} /{path} HTTP/1.1\r\nHost: {host_port}\r\nContent-Length: {len(data)}\r\n\r\n"
    writer.write(head.encode() + data)
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(payload) if payload else None


class RunningSim:
    """A simulator served in the test's loop, with handy addresses."""

    def __init__(self, sim: Simulator, task: asyncio.Task[None]) -> None:
        self.sim = sim
        self.task = task

    @property
    def pty(self) -> str:
        assert self.sim.rtu is not None
        return self.sim.rtu.path

    @property
    def tcp_port(self) -> int:
        assert self.sim.tcp is not None
        return self.sim.tcp.port

    @property
    def url(self) -> str:
        assert self.sim.control is not None
        return f"http://{self.sim.control.host}:{self.sim.control.port}"

    async def control(self, path: str, body: Any = None, method: str = "POST") -> Any:
        status, payload = await http(self.url + path, method, body)
        assert status == 200, payload
        return payload

    async def state(self) -> dict[str, Any]:
        status, payload = await http(self.url + "/state")
        assert status == 200
        return payload  # type: ignore[no-any-return]


@pytest.fixture
async def start_sim(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start simulators with given settings; all are stopped (and links removed) afterwards."""
    running: list[RunningSim] = []

    async def start(**overrides: Any) -> RunningSim:
        values: dict[str, Any] = {
            "pty": str(tmp_path / f"boiler{len(running)}"),
            "tcp": ("127.0.0.1", 0),
            "control": ("127.0.0.1", 0),
            "start_wall_s": MIDNIGHT + 3 * 3600,
            "seed": 1,
        }
        values.update(overrides)
        sim = Simulator(SimSettings(**values))
        ready = asyncio.Event()
        task = asyncio.create_task(sim.run(ready=lambda _: ready.set()))
        waiter = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=10, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()
        assert waiter in done, "simulator did not start"
        handle = RunningSim(sim, task)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        handle.task.cancel()
    for handle in running:
        with contextlib.suppress(asyncio.CancelledError):
            await handle.task
