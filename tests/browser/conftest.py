"""Browser fixtures: Debian's Chromium under Playwright, and a live stack to point it at.

The browser is the machine's own ``/usr/bin/chromium`` (``make test`` installs the Debian
package where it is missing); Playwright never downloads one. The stack is the real thing:
Mosquitto with the project's config, a simulated boiler on a pty, the edge agent, and
``boilertwin cloud serve`` on SQLite (the database layer is covered on PostgreSQL by the
in-process portal tests). Screenshots go to ``test-artifacts/screenshots/`` for review.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from cloud.db import make_engine, upgrade
from tests.broker import Broker
from tests.cloud.test_service_stack import SETTINGS, Rig, open_rig
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM_FLAGS = [
    "--no-sandbox",  # tests run as root in CI containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Chromium phones home at start; this machine's closed network refuses it noisily.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
"""A common phone's viewport in CSS pixels."""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless."""
    executable = require_tool("chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_FLAGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as ``test-artifacts/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
async def portal_rig(
    tmp_path: Path, broker: Broker, start_sim: Any, request: pytest.FixtureRequest
) -> AsyncIterator[Rig]:
    """The service stack's cast (owner, tenant, support, three engineers) and one boiler,
    with the cloud (API and portal) running on a migrated SQLite database."""
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    settings = SETTINGS | {"portal_live_poll_s": 0.3} | getattr(request, "param", {})
    async with open_rig(tmp_path, broker, url, start_sim, settings) as rig:
        yield rig
