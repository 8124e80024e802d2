"""Predictive maintenance end to end, on the real parts: a simulated boiler on a pty develops
a slow leak -> edge agent -> Mosquitto -> ``boilertwin cloud serve`` (its own process, with
its predictor) -> a warning in the twin, the thread, the API and the portal, before the F22
it forecasts -> a preventive visit booked from it in one step, crowdsourced, done -> the
repair verified only once the pressure has come back, which ends the warning.

Days are short here: the cloud's predictor day is `DAY_S` seconds (``predict_day_s``), and
at the start of each the test moves the simulated boiler on by `SIM_DAY_S` (so its leak,
set at `RATE` of the way to F22 per simulated day, progresses about 10 % a day). The
detector rules are the packaged ones with a shorter history (`short_rules`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cloud.domain import Role
from cloud.models import BoilerDay
from tests.broker import Broker
from tests.cloud.portal_helpers import page_text
from tests.cloud.stack import PASSWORD, Stack, eventually
from tests.edge_agent.harness import Gateway

pytestmark = pytest.mark.integration

DEV = "boiler-0001"
OWNER, SUPPORT, ENGINEER = "olivia", "sue", "eve"
HOME = {"lat": 53.4808, "lon": -2.2426}
DAY_S = 2.5
SIM_DAY_S = 7200.0
RATE = 1.2
"""Share of the way to F22 per simulated day: 10 % per predictor day of `SIM_DAY_S`."""
BASELINE_DAYS = 5
MAX_DAYS = 16


def short_rules(path: Path) -> Path:
    """The packaged detector rules with a 4-day baseline and 3 days of trend (not 10 and 4)."""
    text = (Path(__file__).parents[2] / "cloud/predict/rules.toml").read_text()
    for old, new in (
        ("history_days = 45", "history_days = 20"),
        ("baseline_days = 10", "baseline_days = 4"),
        ("window_days = 21", "window_days = 10"),
        ("min_days = 4", "min_days = 3"),
        ('version = "pm-1"', 'version = "pm-1-short"'),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


class Rig:
    def __init__(self, stack: Stack, gateway: Gateway, sim: Any) -> None:
        self.stack, self.gateway, self.sim = stack, gateway, sim
        self.days = 0

    async def next_day(self) -> None:
        """Wait for the predictor's next day to begin, then live a simulated day's share."""
        now = time.time()
        await asyncio.sleep((now // DAY_S + 1) * DAY_S - now + 0.05)
        await self.sim.control("/advance", {"seconds": SIM_DAY_S})
        self.days += 1


@contextlib.asynccontextmanager
async def open_rig(
    tmp_path: Path, broker: Broker, db_url: str, start_sim: Any, **settings: Any
) -> AsyncIterator[Rig]:
    """Owner, support, an engineer for leaks, and the boiler on short days, with the cloud
    (API, portal, predictor) running."""
    sim = await start_sim(time_scale=60.0)
    await sim.control("/demand", {"ch": "on"})
    stack = Stack(
        tmp_path / "cloud",
        broker,
        db_url,
        predict_day_s=DAY_S,
        predict_grace_s=0.3,
        predict_interval_s=0.5,
        predict_rules_file=str(short_rules(tmp_path / "rules.toml")),
        verify_normal_s=2.0,
        newcomer_slots=0,
        **settings,
    )
    stack.user(OWNER, Role.OWNER)
    stack.user(SUPPORT, Role.SUPPORT)
    stack.engineer(ENGINEER, at=(53.49, -2.25), skills=("gas_safe", "hydraulics"), invitations=2)
    gateway = stack.gateway(tmp_path / "gateway", sim.pty, DEV)
    await stack.start()
    await gateway.start()
    try:
        yield Rig(stack, gateway, sim)
    finally:
        if gateway.process is not None:
            gateway.process.send_signal(signal.SIGCONT)
            await gateway.signal(signal.SIGTERM)
        await gateway.cancel()
        await stack.close()


@pytest.fixture
async def rig(tmp_path: Path, broker: Broker, db_url: str, start_sim: Any) -> AsyncIterator[Rig]:
    async with open_rig(tmp_path, broker, db_url, start_sim) as opened:
        yield opened


async def leak_until_warned(rig: Rig) -> dict[str, Any]:
    """The boiler's home recorded, `BASELINE_DAYS` healthy days, then a leak, a day at a
    time, until the warning comes (the fault must not come first): the warning."""
    stack, sim = rig.stack, rig.sim
    await give_home(stack)
    for _ in range(BASELINE_DAYS):
        await rig.next_day()
    await sim.control("/degrade", {"mode": "leak", "rate": RATE})
    warned: list[dict[str, Any]] = []
    while not warned and rig.days < MAX_DAYS:
        await rig.next_day()
        warned = await warnings(stack)
        state = await sim.state()
        assert state["registers"]["fault_code"] == 0, f"F22 came first on day {rig.days}"
    assert warned, f"no warning after {rig.days} days: {boiler_days(stack)}"
    (warning,) = warned
    return warning


def boiler_days(stack: Stack) -> list[tuple[int, dict[str, Any]]]:
    """What the predictor made of each day (for a failure message)."""
    with stack.sessions() as session:
        rows = session.scalars(select(BoilerDay).order_by(BoilerDay.day))
        return [(row.day, row.features) for row in rows]


async def give_home(stack: Stack) -> None:
    """Support records the owner and where the boiler is (If-Match; readings arriving
    meanwhile change the ETag, so a 412 means: read it again and retry)."""
    body = {"owner": OWNER, "location": HOME, "address": "1 Piccadilly, Manchester"}

    async def patched() -> bool:
        current = await stack.api.get(f"/api/v1/boilers/{DEV}", headers=await stack.login(SUPPORT))
        assert current.status_code == 200, current.text
        headers = {**await stack.login(SUPPORT), "If-Match": current.headers["etag"]}
        answer = await stack.api.patch(f"/api/v1/boilers/{DEV}", json=body, headers=headers)
        assert answer.status_code in (200, 412), answer.text
        return answer.status_code == 200

    await eventually(patched, "the boiler's owner and place recorded", timeout=10)


async def warnings(stack: Stack, *, ended: bool = False) -> list[dict[str, Any]]:
    query = "?include_ended=true" if ended else ""
    found = await stack.get(OWNER, f"/api/v1/boilers/{DEV}/predictions{query}")
    return found["predictions"]  # type: ignore[no-any-return]


async def portal_page(stack: Stack, user_id: str, path: str) -> str:
    """A portal page's visible text, as `user_id` logged in with a browser's form sees it."""
    base = str(stack.api.base_url)
    async with httpx.AsyncClient(base_url=base, timeout=10, follow_redirects=True) as browser:
        login = {"username": user_id, "password": PASSWORD, "next": "/"}
        assert (await browser.post("/login", data=login)).status_code == 200
        page = await browser.get(path)
        assert page.status_code == 200, page.text
        return page_text(page.text)


async def test_a_leak_is_warned_of_before_f22_and_a_preventive_visit_ends_it(rig: Rig) -> None:
    stack, sim = rig.stack, rig.sim
    warning = await leak_until_warned(rig)
    assert (warning["mode"], warning["fault"], warning["state"]) == ("leak", "F22", "active")
    assert warning["model_version"] == "pm-1-short"
    assert warning["days_low"] <= warning["days_to_fault"] <= warning["days_high"]
    assert warning["evidence"]["slope_per_day"] < 0
    assert warning["evidence"]["baseline"] > warning["evidence"]["level"]
    twin = await stack.twin(OWNER, DEV)
    assert [p["id"] for p in twin["predictions"]] == [warning["id"]]
    assert any(a["kind"] == "predicted" and a["open"] for a in twin["alarms"])
    thread = await stack.get(SUPPORT, f"/api/v1/boilers/{DEV}/thread?kind=prediction")
    assert [e["data"]["event"] for e in thread["events"]] == ["raised"]
    fleet = await stack.get(SUPPORT, "/api/v1/fleet/at-risk")
    assert [w["device_id"] for w in fleet["warnings"]] == [DEV]
    page = await portal_page(stack, OWNER, f"/boilers/{DEV}")
    assert "Warnings: faults on the way" in page and "Book a preventive visit" in page
    assert "1 at risk" in await portal_page(stack, SUPPORT, "/fleet")

    # One step from the warning to the crowd; the engineer fixes the leak.
    booked = await stack.post(OWNER, f"/api/v1/predictions/{warning['id']}/jobs")
    assert booked.status_code == 201, booked.text
    job = booked.json()
    assert (job["service_type"], job["problem"], job["state"]) == (
        "preventive",
        "predicted_leak",
        "crowdsourcing",
    )
    assert "hydraulics" in job["analysis"]["skills"]
    answer = {"available": True, "quote": 150.0, "location": {"lat": 53.47, "lon": -2.24}}
    answered = await stack.post(ENGINEER, f"/api/v1/jobs/{job['id']}/response", answer)
    assert answered.status_code == 200, answered.text
    chosen = await stack.post(OWNER, f"/api/v1/jobs/{job['id']}/select", {"engineer_id": ENGINEER})
    assert chosen.status_code == 200, chosen.text
    await sim.control("/repair", {"code": "F22"})  # the leak found, fixed, the circuit refilled
    report = {"cause": "weeping radiator valve", "actions": "replaced, refilled", "parts": []}
    done = await stack.post(ENGINEER, f"/api/v1/jobs/{job['id']}/complete", report)
    assert done.status_code == 200, done.text

    async def verified() -> dict[str, Any] | None:
        body: dict[str, Any] = await stack.get(OWNER, f"/api/v1/jobs/{job['id']}")
        return body if body["state"] in ("verified", "failed_verification") else None

    final = await eventually(verified, "the repair's verification", timeout=40)
    assert final["state"] == "verified", final
    (ended,) = await warnings(stack, ended=True)
    assert (ended["state"], ended["ended_reason"]) == ("cleared", "repair_verified")
    events = (await stack.get(OWNER, f"/api/v1/jobs/{job['id']}/thread"))["events"]
    verification = next(e for e in events if e["kind"] == "verification")
    precursor = verification["data"]["evidence"]["precursor"]
    assert precursor["gone"] is True and precursor["value"] > precursor["limit"]
    assert (await stack.get(SUPPORT, "/api/v1/fleet/at-risk"))["warnings"] == []
