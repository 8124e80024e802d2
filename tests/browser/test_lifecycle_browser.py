"""The gateway-lifecycle page in Chromium on the live stack: support sets a configuration
layer for the boiler's gateway with the page's form, the real agent applies it, and the
boiler's page (on a phone) shows it in sync; a setting the schema refuses comes back as a
message; an admin halts a rollout with its button and resumes it."""

from __future__ import annotations

import time

import pytest
from playwright.async_api import Browser, Page, expect

from cloud.db import transaction
from cloud.domain import Role
from cloud.lifecycle_models import ConfigLayer, Release, Rollout
from tests.browser.conftest import screenshot
from tests.browser.test_portal_story import fits_and_labelled, log_in
from tests.cloud.stack import Stack, eventually
from tests.cloud.test_service_stack import DEV, SUPPORT, Rig

pytestmark = pytest.mark.integration

ADMIN = "ada"


async def shows(page: Page, selector: str, text: str) -> bool:
    """Reload `page` and say whether `selector` shows `text` (the card is not live)."""
    await page.reload()
    return (await page.locator(selector).inner_text()).strip() == text


async def test_support_configures_a_gateway_and_an_admin_halts_a_rollout(
    browser: Browser, portal_rig: Rig
) -> None:
    rig = portal_rig
    stack = rig.stack
    await rig.gateway.spawn()

    async def online() -> bool:
        return bool((await stack.twin(SUPPORT, DEV))["connectivity"]["state"] == "online")

    await eventually(online, "the gateway online")
    base = f"http://127.0.0.1:{stack.api_port}"
    support = await log_in(browser, base, SUPPORT)
    page = support.page
    # the fleet table (ids do not wrap) and an error page that keeps the navigation
    await page.goto("/fleet")
    await screenshot(page, "fleet")
    missing = await page.goto("/boilers/no-such-boiler")
    assert missing is not None and missing.status == 404
    await expect(page.locator("header nav")).to_contain_text("Fleet")
    await expect(page.locator("link[rel=icon]")).to_have_attribute("href", "/static/favicon.svg")
    await screenshot(page, "error-page")
    await page.goto("/fleet/lifecycle")
    await fits_and_labelled(page)

    # A setting the schema refuses: the reason, and nothing stored.
    await page.select_option("#layer-scope", "device")
    await page.fill("#layer-target", DEV)
    await page.fill("#layer-settings", "report.poll_interval_s = -5")
    await page.click("#layer-button")
    await expect(page.locator("#flash")).to_contain_text("greater than 0")
    with transaction(stack.sessions) as session:
        assert session.query(ConfigLayer).count() == 0

    # A good one: saved, sent, applied by the real agent.
    await page.select_option("#layer-scope", "device")
    await page.fill("#layer-target", DEV)
    await page.fill("#layer-settings", "report.poll_interval_s = 2\nreport.batch_interval_s = 3")
    await page.click("#layer-button")
    await expect(page.locator("#flash")).to_contain_text(
        "Layer saved: 1 gateway sent a new configuration."
    )
    await expect(page.locator(f'tr[data-layer="device/{DEV}"]')).to_contain_text(
        "report.poll_interval_s = 2"
    )
    await screenshot(page, "lifecycle-layer")

    phone = await log_in(browser, base, SUPPORT, phone=True)
    await phone.page.goto(f"/boilers/{DEV}")
    await eventually(
        lambda: shows(phone.page, "#config-state", "Up to date"), "the gateway to apply it"
    )
    await expect(phone.page.locator("#config-reported")).to_have_text("version 1")
    await expect(phone.page.locator("#config-settings")).to_contain_text(
        "report.batch_interval_s = 3"
    )
    await fits_and_labelled(phone.page)
    await phone.page.locator("#config").scroll_into_view_if_needed()
    await screenshot(phone.page, "boiler-config-phone")

    # An admin halts a running rollout (one no gateway has taken yet) and resumes it.
    stack.user(ADMIN, Role.ADMIN)
    rollout_id = running_rollout(stack)
    assert await page.locator(f"#halt-{rollout_id}").count() == 0  # support may not
    admin = await log_in(browser, base, ADMIN)
    await admin.page.goto("/fleet/lifecycle")
    await admin.page.click(f"#halt-{rollout_id}")
    await expect(admin.page.locator("#flash")).to_contain_text(f"Rollout {rollout_id} halted")
    row = admin.page.locator(f'tr[data-rollout="{rollout_id}"] .rollout-state')
    await expect(row).to_have_text(f"halted: halted by {ADMIN}")
    await admin.page.click(f"#resume-{rollout_id}")
    await expect(admin.page.locator("#flash")).to_contain_text(f"Rollout {rollout_id} resumed")
    await expect(row).to_have_text("running")
    await screenshot(admin.page, "lifecycle-rollouts")
    for person in (support, phone, admin):  # their live streams end before the stack stops
        await person.context.close()


def running_rollout(stack: Stack) -> int:
    """A running rollout of a release newer than any gateway's minimum (no targets yet)."""
    now = int(time.time() * 1000)
    with transaction(stack.sessions) as session:
        session.add(
            Release(
                version="9.9.9",
                sha256="0" * 64,
                size=1,
                filename="boilertwin-9.9.9-py3-none-any.whl",
                min_agent="9.0.0",
                created_ms=now,
                created_by=ADMIN,
            )
        )
        rollout = Rollout(
            version="9.9.9",
            model=None,
            waves=[100.0],
            wave=0,
            state="running",
            max_failure_rate=0.1,
            min_wave_s=3600,
            wave_started_ms=now,
            created_ms=now,
            created_by=ADMIN,
            updated_ms=now,
        )
        session.add(rollout)
        session.flush()
        return rollout.id
