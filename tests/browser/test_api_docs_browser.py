"""The API's documentation in Chromium with every request off this machine blocked: Swagger
UI and ReDoc render the OpenAPI document from the vendored files alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Route, expect

from cloud.db import make_engine, upgrade
from tests.broker import Broker
from tests.browser.conftest import screenshot
from tests.cloud.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(tmp_path: Path, broker: Broker) -> Any:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    stack = Stack(tmp_path / "cloud", broker, url)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.close()


async def test_swagger_ui_and_redoc_work_offline(browser: Browser, stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.api_port}"
    context = await browser.new_context(base_url=base)
    page = await context.new_page()
    blocked: list[str] = []

    async def only_here(route: Route) -> None:
        if route.request.url.startswith(base):
            await route.continue_()
        else:
            blocked.append(route.request.url)
            await route.abort()

    await page.route("**/*", only_here)
    await page.goto("/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("boilertwin cloud")
    await expect(page.locator(".opblock-tag-section").first).to_be_visible()
    await screenshot(page, "api-docs-swagger")
    await page.goto("/redoc")
    await expect(page.locator("h1").first).to_contain_text("boilertwin cloud")
    await expect(page.get_by_text("/api/v1/jobs/{job_id}/proof").first).to_be_attached()
    await screenshot(page, "api-docs-redoc")
    assert blocked == [], f"the docs tried to leave the machine: {blocked}"
    await context.close()
