"""A gateway's ``boilertwin edge run`` loads the edge agent only: never the cloud stack.

The real command runs as its own process under ``python -X importtime``, which logs every
module imported for as long as the process lives (lazy imports inside functions included), so
the check covers start-up, telemetry, the uplink and shutdown rather than one import line.
"""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from protocols.messages import TelemetryBatch
from tests.broker import Broker
from tests.edge_agent.harness import Gateway, listening

pytestmark = pytest.mark.integration

FORBIDDEN = ("cloud", "sqlalchemy", "fastapi", "starlette", "alembic", "uvicorn")
"""Top-level packages a gateway process must never load."""
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|(?P<indent>\s*)(?P<module>\S+)$")


def imported_modules(log: str) -> set[str]:
    """Every module ``-X importtime`` reported in `log`."""
    return {m["module"] for m in map(IMPORT_LINE.match, log.splitlines()) if m}


def test_imported_modules_reads_importtime_lines() -> None:
    log = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       120 |        120 |   sqlalchemy.orm\n"
        "INFO something else\n"
        "import time:        12 |        400 | cloud\n"
    )
    assert imported_modules(log) == {"sqlalchemy.orm", "cloud"}


@pytest.fixture
async def gateway(
    tmp_path: Path, broker: Broker, start_sim: Callable[..., Any]
) -> AsyncIterator[Gateway]:
    sim = await start_sim(time_scale=60.0)
    gw = Gateway(tmp_path / "gateway", broker, sim.pty)
    yield gw
    if gw.process is not None:
        gw.process.kill()
        await gw.process.wait()


async def test_edge_run_never_imports_the_cloud_stack(gateway: Gateway, broker: Broker) -> None:
    async with listening(broker, gateway) as cloud:
        await gateway.spawn(importtime=True)
        await cloud.wait_for(
            lambda c: any(isinstance(r.message, TelemetryBatch) for r in c.received), 20
        )
        assert await gateway.signal(signal.SIGTERM) == 0, gateway.log_text()
    modules = imported_modules(gateway.log_text())
    assert "edge_agent.agent" in modules, "the log holds the agent's imports"
    loaded = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)
    assert loaded == [], loaded
