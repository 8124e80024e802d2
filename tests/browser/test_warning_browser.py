"""A predictive-maintenance warning seen and acted on in Chromium, on the live stack.

The simulated boiler on a pty develops a slow leak over short days (the end-to-end rig of
`tests.cloud.test_predict_stack`); once the cloud's predictor warns of it, support finds the
boiler in the fleet page's "at risk" tile and list and follows it to the boiler, the owner
reads the warning with its reasons on the boiler page (on a phone) and books a preventive
visit with its button, landing on the new job.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from cloud.db import make_engine, upgrade
from tests.broker import Broker
from tests.browser.conftest import screenshot
from tests.browser.test_portal_story import fits_and_labelled, log_in
from tests.cloud.test_predict_stack import DEV, OWNER, SUPPORT, Rig, leak_until_warned, open_rig

pytestmark = pytest.mark.integration


@pytest.fixture
async def rig(tmp_path: Path, broker: Broker, start_sim: Any) -> AsyncIterator[Rig]:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    async with open_rig(tmp_path, broker, url, start_sim) as opened:
        yield opened


@pytest.mark.timeout(300)
async def test_a_warning_on_the_fleet_and_boiler_pages_and_a_visit_booked(
    rig: Rig, browser: Browser
) -> None:
    warning = await leak_until_warned(rig)
    base = str(rig.stack.api.base_url)

    support = await log_in(browser, base, SUPPORT)
    page = support.page
    await page.goto("/fleet")
    await expect(page.locator("#count-at_risk")).to_contain_text("1")
    row = page.locator("#at-risk-list tbody tr").filter(has_text=DEV)
    await expect(row).to_contain_text("A slow water leak")
    await expect(row).to_contain_text("F22")
    await screenshot(page, "fleet-at-risk")
    await row.get_by_role("link", name=DEV).click()
    await expect(page).to_have_url(re.compile(rf"/boilers/{DEV}"))
    await expect(page.locator("#predictions")).to_contain_text("Warnings: faults on the way")

    owner = await log_in(browser, base, OWNER, phone=True)
    page = owner.page
    await page.goto(f"/boilers/{DEV}")
    card = page.locator("#predictions")
    await expect(card).to_contain_text("A slow water leak")
    await expect(card).to_contain_text("low water pressure expected in about")
    await expect(card).to_contain_text("Why: pressure")
    await fits_and_labelled(page)
    await screenshot(page, "boiler-warning-phone")
    await card.get_by_label("Note for the engineer").fill("Mornings suit best")
    await card.get_by_role("button", name="Book a preventive visit").click()
    await expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    await expect(page.locator("main")).to_contain_text("Request validated against its warning")
    await expect(page.locator("main")).to_contain_text("Mornings suit best")
    job_id = page.url.rsplit("/", 1)[-1]
    await screenshot(page, "preventive-job")

    await page.goto(f"/boilers/{DEV}")
    await expect(page.locator("#predictions")).to_contain_text("A preventive visit is booked")
    booked = await rig.stack.get(OWNER, f"/api/v1/predictions/{warning['id']}")
    assert booked["job_id"] == job_id
