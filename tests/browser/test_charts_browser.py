"""The boiler page's charts on a phone in Chromium, on the live stack: support picks the
short ranges (15 minutes, an hour), the chart shows the boiler's real readings fitted to the
range they cover, and the axis and legend text is as large as the page's own text."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import screenshot
from tests.browser.test_portal_story import fits_and_labelled, log_in
from tests.cloud.stack import eventually
from tests.cloud.test_service_stack import DEV, SUPPORT, Rig

pytestmark = pytest.mark.integration


async def test_short_ranges_on_a_phone(browser: Browser, portal_rig: Rig) -> None:
    stack = portal_rig.stack
    await portal_rig.gateway.spawn()

    async def readings() -> bool:
        twin = await stack.twin(SUPPORT, DEV)
        return bool(twin["reported"].get("flow_temp"))

    await eventually(readings, "the boiler's first readings")
    owner = await log_in(browser, f"http://127.0.0.1:{stack.api_port}", SUPPORT, phone=True)
    page = owner.page
    await page.goto(f"/boilers/{DEV}")
    for value, name in (("15m", "Last 15 minutes"), ("1h", "Last hour")):
        await page.select_option("#range", value)
        await page.get_by_role("button", name="Show").click()
        await expect(page).to_have_url(
            f"http://127.0.0.1:{stack.api_port}/boilers/{DEV}?range={value}"
        )
        await expect(page.locator("#range")).to_have_value(value)
        chart = page.locator("svg.chart").first
        await expect(chart).to_be_visible()
        legend = page.locator("ul.legend").first
        await expect(legend).to_contain_text("reading")
        assert name in await page.locator("#range").inner_text()
    axis = page.locator(".chart-axis").first
    await expect(axis).to_be_visible()
    sizes = await page.evaluate(
        """() => [getComputedStyle(document.querySelector('.chart-axis')).fontSize,
                  getComputedStyle(document.body).fontSize].map(parseFloat)"""
    )
    assert sizes[0] >= 12 and sizes[0] >= 0.8 * sizes[1], sizes
    assert await page.locator("svg.chart text").count() == 0
    await fits_and_labelled(page)
    await page.locator("svg.chart").first.scroll_into_view_if_needed()
    await screenshot(page, "boiler-charts-phone-1h")
