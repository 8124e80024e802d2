"""The repair story clicked through in Chromium by each person in turn, on the live stack.

A real F28 lockout on the simulated boiler reaches the tenant's page without a reload; the
tenant asks for a repair, the landlord approves it, the invited engineers answer, the
landlord chooses from the shortlist, the engineer finds the restart button disabled with
its reason, reports the repair, restarts the boiler and watches the command's progress
live; the boiler's own data verifies the repair; the tenant rates it, and the engineer's
profile shows the new scores. Every form is filled and every button pressed in the page.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from cloud.proof_zip import check_bundle
from tests.browser.conftest import ARTIFACTS, PHONE, screenshot
from tests.cloud.stack import PASSWORD, eventually
from tests.cloud.test_service_stack import (
    BEST,
    DEV,
    HISTORY,
    OWNER,
    QUOTES,
    SECOND,
    SUPPORT,
    TENANT,
    WHERE_NOW,
    Rig,
    give_home,
    lock_out,
    resets,
    status_is,
)

pytestmark = pytest.mark.integration

LIVE = 30_000
"""Milliseconds to wait for something that arrives through the live stack."""


COMMAND_STEPS = ["created", "sent", "delivered", "executing", "succeeded"]
WATCH_COMMAND = """() => {
    const box = document.querySelector('#command');
    window.__states = [document.querySelector('#command-state').dataset.state];
    window.__notReloaded = true;
    new MutationObserver(() => {
        const state = document.querySelector('#command-state')?.dataset.state;
        if (state && state !== window.__states.at(-1)) window.__states.push(state);
    }).observe(box, {subtree: true, childList: true, attributes: true});
}"""
"""Records every state the command panel shows, as the live stream swaps it in."""


class Person:
    """One person's browser (own cookies), logged in to the portal."""

    def __init__(self, context: BrowserContext, page: Page, user_id: str) -> None:
        self.context, self.page, self.user_id = context, page, user_id


async def log_in(browser: Browser, base: str, user_id: str, phone: bool = False) -> Person:
    """Open the portal and log in with the keyboard only: type, Tab, type, Enter."""
    context = await browser.new_context(
        base_url=base, viewport=PHONE if phone else {"width": 1280, "height": 900}
    )
    page = await context.new_page()
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/login"))
    await page.focus("#username")
    await page.keyboard.type(user_id)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page).not_to_have_url(re.compile(r"/login"))
    await expect(page.locator("header .who")).to_be_visible()  # their name, not their login
    return Person(context, page, user_id)


async def fits_and_labelled(page: Page) -> None:
    """No sideways scrolling, and every visible form control has a label."""
    await page.wait_for_load_state("load")  # not mid-navigation, with a document to measure
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"{page.url} scrolls sideways by {overflow}px"
    unlabelled = await page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length)
                         && !e.getAttribute('aria-label'))
            .map(e => e.name || e.id)"""
    )
    assert unlabelled == [], f"{page.url}: unlabelled controls {unlabelled}"


async def job_state(page: Page, state: str, timeout: float = LIVE) -> None:
    """Reload `page` until the job shows `state` (the job page is not live itself)."""
    deadline = timeout

    async def shown() -> bool:
        await page.reload()
        return await page.locator("#job-state").get_attribute("data-state") == state

    await eventually(shown, f"job state {state}", timeout=deadline / 1000, every=0.5)


@pytest.mark.timeout(300)
async def test_the_repair_story_in_the_browser(portal_rig: Rig, browser: Browser) -> None:
    stack, sim = portal_rig.stack, portal_rig.sim
    base = f"http://127.0.0.1:{stack.api_port}"
    await give_home(stack)
    await portal_rig.gateway.start()
    await eventually(lambda: status_is(stack, "standby"), "twin online, boiler in standby")

    # The tenant, on a phone, has the boiler page open when it locks out: the banner and
    # the status in words arrive without a reload.
    tom = await log_in(browser, base, TENANT, phone=True)
    await expect(tom.page).to_have_url(re.compile(r"/tenant$"))
    await tom.page.evaluate("window.__notReloaded = true")
    await expect(tom.page.locator("#alarm-banner")).to_have_count(0)
    await lock_out(sim)
    banner = tom.page.locator("#alarm-banner")
    await expect(banner).to_contain_text("locked out", timeout=LIVE)
    await expect(banner).to_contain_text("F28")
    assert await tom.page.evaluate("window.__notReloaded") is True
    await fits_and_labelled(tom.page)
    await screenshot(tom.page, "tenant-main")

    # The tenant asks for a repair.
    await tom.page.click("#request-service")
    await expect(tom.page.locator("#service_type")).to_be_visible()
    await fits_and_labelled(tom.page)
    await tom.page.select_option("#service_type", "repair")
    await tom.page.select_option("#problem", "no_heating")
    await tom.page.fill(
        "textarea[name=description]", "No heating since this morning, display shows F28"
    )
    await tom.page.check("input[name=principle][value=low_carbon]")
    await tom.page.click("form[action='/requests'] button[type=submit]")
    await expect(tom.page.locator("#job-state")).to_have_attribute(
        "data-state", "pending_authorization"
    )
    job_id = tom.page.url.rstrip("/").split("/")[-1].split("?")[0]

    # The landlord sees it waiting on their main page and approves it.
    olivia = await log_in(browser, base, OWNER)
    await expect(olivia.page).to_have_url(re.compile(r"/owner$"))
    await fits_and_labelled(olivia.page)
    await screenshot(olivia.page, "owner-main")
    await olivia.page.click(f"#review-{job_id}")
    await olivia.page.click("#approve-button")
    await expect(olivia.page.locator("#job-state")).to_have_attribute("data-state", "crowdsourcing")

    # The two best engineers by W find the invitation on their page and answer it.
    for engineer_id in (BEST, SECOND):
        person = await log_in(browser, base, engineer_id, phone=True)
        await expect(person.page).to_have_url(re.compile(r"/engineer$"))
        if engineer_id == BEST:
            await fits_and_labelled(person.page)
            await screenshot(person.page, "engineer-main")
        await person.page.click(f"#answer-{job_id}")
        form = person.page.locator(f"form[action='/jobs/{job_id}/respond']")
        await form.locator("input[name=available][value=yes]").check()
        await form.locator("input[name=quote]").fill(str(QUOTES[engineer_id]))
        where = WHERE_NOW[engineer_id]
        if engineer_id == BEST:  # from where the phone is, as the browser tells it
            await expect(person.page.locator("#about-fault")).to_contain_text("F28")
            await fits_and_labelled(person.page)
            await screenshot(person.page, "engineer-invitation")
            await person.context.grant_permissions(["geolocation"])
            await person.context.set_geolocation({"latitude": where.lat, "longitude": where.lon})
            await form.locator("#place-choice").select_option("here")
            await expect(form.locator("#place-status")).to_have_text("Your location now.")
            assert float(await form.locator("#lat").input_value()) == pytest.approx(where.lat)
            assert float(await form.locator("#lon").input_value()) == pytest.approx(where.lon)
        else:  # a place typed in
            await form.locator("#place-choice").select_option("typed")
            await form.locator("input[name=lat]").fill(str(where.lat))
            await form.locator("input[name=lon]").fill(str(where.lon))
        await form.locator("button[type=submit]").click()
        await expect(person.page.locator("#flash")).to_be_visible()
        if engineer_id != BEST:
            await person.context.close()
        else:
            eve = person

    # The landlord chooses the nearest from the low-carbon shortlist.
    await job_state(olivia.page, "shortlisted")
    shortlist = olivia.page.locator("#shortlist")
    await expect(shortlist).to_contain_text(f"£{QUOTES[BEST]:,.2f}")
    await expect(shortlist).to_contain_text(f"£{QUOTES[SECOND]:,.2f}")
    await fits_and_labelled(olivia.page)
    await screenshot(olivia.page, "owner-shortlist")
    await olivia.page.click(f"#choose-{BEST}")
    await expect(olivia.page.locator("#job-state")).to_have_attribute("data-state", "contracted")

    # The engineer's job page: the twin, and a restart button that says why it is disabled.
    await eve.page.goto(f"/jobs/{job_id}")
    await expect(eve.page.locator("#now")).to_contain_text("Locked out")
    restart = eve.page.locator("#restart-button")
    await expect(restart).to_be_disabled()
    await expect(eve.page.locator("#restart-why")).to_contain_text("completed repair first")
    await fits_and_labelled(eve.page)
    await screenshot(eve.page, "engineer-job-before-report")

    # The engineer repairs the boiler and reports it; the button is enabled. The landlord's
    # job page, open all along, follows without a reload.
    await olivia.page.evaluate("window.__notReloaded = true")
    await sim.control("/repair", {"code": "F28"})
    before = await resets(sim)
    form = eve.page.locator(f"form[action='/jobs/{job_id}/complete']")
    await form.locator("textarea[name=cause]").fill("worn ignition electrode")
    await form.locator("textarea[name=actions]").fill("replaced electrode, tested ignition")
    await form.locator("input[name=parts]").fill("ignition electrode")
    await form.locator("button[type=submit]").click()
    await expect(eve.page.locator("#job-state")).to_have_attribute("data-state", "completed")
    await expect(restart).to_be_enabled()
    await expect(eve.page.locator("#restart-why")).to_have_count(0)
    await expect(olivia.page.locator("#job-state")).to_have_attribute(
        "data-state", "completed", timeout=LIVE
    )
    await expect(olivia.page.locator("#thread")).to_contain_text("Repair reported", timeout=LIVE)
    await expect(olivia.page.locator("#progress li.done").last).to_contain_text("Repair reported")
    assert await olivia.page.evaluate("window.__notReloaded === true"), "the page reloaded"

    # The restart, and its progress through every state, live on the same page.
    await restart.click()
    command = eve.page.locator("#command-state")
    await expect(command).to_be_visible()
    await eve.page.evaluate(WATCH_COMMAND)
    await expect(command).to_have_attribute("data-state", "succeeded", timeout=LIVE)
    seen: list[str] = await eve.page.evaluate("window.__states")
    assert seen[-1] == "succeeded", seen
    order = [COMMAND_STEPS.index(state) for state in seen]
    assert order == sorted(order), f"states shown out of order: {seen}"
    assert await eve.page.evaluate("window.__notReloaded") is True
    steps = eve.page.locator("#command-state ol.steps li.done")
    await expect(steps).to_have_count(5)
    assert await resets(sim) == before + 1
    await screenshot(eve.page, "engineer-job-restarted")

    # Live data verifies the repair; the tenant rates it.
    await tom.page.goto(f"/jobs/{job_id}")
    await job_state(tom.page, "verified")
    evaluate = tom.page.locator("#evaluate")
    await evaluate.locator("input[name=cs][value='5']").check()
    await evaluate.locator("input[name=sq][value='4']").check()
    await evaluate.locator("textarea[name=comment]").fill("On time and tidy")
    await fits_and_labelled(tom.page)
    await evaluate.locator("button[type=submit]").click()
    await expect(tom.page.locator("#job-state")).to_have_attribute("data-state", "evaluated")
    html = await tom.page.content()
    assert "evaluation_token" not in html

    # The owner downloads the job's proof with the button; it holds offline.
    await olivia.page.goto(f"/jobs/{job_id}")
    async with olivia.page.expect_download() as waiting:
        await olivia.page.click("#proof-button")
    download = await waiting.value
    assert download.suggested_filename == f"proof-{job_id}.zip"
    saved = ARTIFACTS / f"proof-{job_id}.zip"
    await download.save_as(saved)
    report = check_bundle(saved.read_bytes(), stack.key.key.public_key())
    assert report.ok and report.job == job_id, report.problems
    assert report.checked["signed commands"] >= 1
    await olivia.page.locator("#proof-button").scroll_into_view_if_needed()
    await screenshot(olivia.page, "owner-job-proof")

    # The engineer's profile shows the new scores (eqs. 15-17), to support and to the
    # engineer.
    seeded: dict[str, Any] = HISTORY[BEST]
    n = seeded["evaluated"]
    cs = (seeded["cs_sum"] + 5) / (n + 1)
    sq = (seeded["sq_sum"] + 4) / (n + 1)
    ar = (seeded["accepted"] + 1) / (seeded["invitations"] + 1)
    sue = await log_in(browser, base, SUPPORT)
    await expect(sue.page).to_have_url(re.compile(r"/fleet$"))
    await fits_and_labelled(sue.page)
    await screenshot(sue.page, "support-main")
    for person in (sue, eve):
        await person.page.goto(f"/engineers/{BEST}")
        await expect(person.page.locator("#profile-cs")).to_contain_text(f"{cs:.2f}")
        await expect(person.page.locator("#profile-sq")).to_contain_text(f"{sq:.2f}")
        await expect(person.page.locator("#profile-ar")).to_contain_text(f"{ar * 100:.1f}%")
    await screenshot(sue.page, "support-engineer-profile")
    await sue.page.goto(f"/boilers/{DEV}")
    await expect(sue.page.locator("#thread")).to_contain_text("Service rated")
    await screenshot(sue.page, "support-boiler")


async def test_a_live_value_changes_without_a_reload(portal_rig: Rig, browser: Browser) -> None:
    stack, sim = portal_rig.stack, portal_rig.sim
    base = f"http://127.0.0.1:{stack.api_port}"
    await give_home(stack)
    await portal_rig.gateway.start()
    await eventually(lambda: status_is(stack, "standby"), "twin online, boiler in standby")
    tom = await log_in(browser, base, TENANT)
    await tom.page.goto(f"/boilers/{DEV}")
    status = tom.page.locator("#status-words")
    await expect(status).to_have_attribute("data-status", "standby", timeout=LIVE)
    flow = tom.page.locator("#value-flow_temp")
    first = await flow.get_attribute("data-value")
    await tom.page.evaluate("window.__notReloaded = true")

    # Heating demand: the burner lights and the flow temperature climbs.
    await sim.control("/demand", {"ch": "on"})
    await sim.control("/advance", {"seconds": 600})
    await expect(status).not_to_have_attribute("data-status", "standby", timeout=LIVE)
    await expect(flow).not_to_have_attribute("data-value", first or "", timeout=LIVE)
    assert await tom.page.evaluate("window.__notReloaded") is True
    truth = (await sim.state())["registers"]
    shown = float(await flow.get_attribute("data-value") or "nan")
    assert shown > float(first or 0), (first, shown, truth.get("flow_temp"))

    # An open live page does not hold the cloud's shutdown (Stack.stop fails after 20 s).
    await stack.stop()
