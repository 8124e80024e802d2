"""The service platform end to end: a real lockout on the simulated boiler, seen by the cloud,
told to the tenant, repaired by a crowdsourced engineer who restarts the boiler, verified from
live data and rated by the tenant.

Simulated boiler on a pty -> edge agent -> Mosquitto -> ``boilertwin cloud serve`` (its own
process, with its sweepers) -> REST API, on SQLite and on PostgreSQL (``db_url``). The
simulator's own reset counter proves that the engineer's restart reached the boiler once.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import signal
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloud.domain import Role
from cloud.proof_zip import check_bundle
from cloud.service.crowd import Place, haversine_km
from protocols.reference import BoilerStatus
from tests.broker import Broker
from tests.cloud.stack import Stack, eventually
from tests.cloud.test_proof_offline import pycose_verifies_every_envelope
from tests.edge_agent.harness import Gateway

pytestmark = pytest.mark.integration

DEV = "boiler-0001"
HOME = Place(53.4808, -2.2426)
"""The boiler: central Manchester."""
ADDRESS = "1 Piccadilly, Manchester"
OWNER, TENANT, SUPPORT = "olivia", "tom", "sue"
BEST, SECOND, WEAKEST = "eve", "eddie", "edna"
HISTORY: dict[str, dict[str, Any]] = {
    # Best on AR (8/9), CS (4.5) and SQ (4.25): top of the pool on every figure, so W decides.
    BEST: {"invitations": 9, "accepted": 8, "evaluated": 4, "cs_sum": 18.0, "sq_sum": 17.0},
    SECOND: {"invitations": 6, "accepted": 3, "evaluated": 2, "cs_sum": 7.0, "sq_sum": 7.0},
    WEAKEST: {"invitations": 10, "accepted": 2, "evaluated": 5, "cs_sum": 10.0, "sq_sum": 12.0},
}
HOMES = {BEST: (53.49, -2.25), SECOND: (53.42, -2.23), WEAKEST: (53.55, -2.30)}
WHERE_NOW = {BEST: Place(53.47, -2.24), SECOND: Place(53.40, -2.20)}
"""Where the invited engineers answer from: the best one is nearer (low-carbon first)."""
QUOTES = {BEST: 190.0, SECOND: 160.0}
SETTINGS: dict[str, Any] = {
    "verify_normal_s": 2.0,
    "newcomer_slots": 0,  # the paper's mode: only the top by W are invited
    "invite_fraction": 0.1,
    "invite_min": 2,
    "invite_max": 2,
    "q_ar": 0.5,
    "q_cs": 0.2,
    "q_sq": 0.3,
}
TERMINAL = ("succeeded", "failed", "rejected", "timed_out", "expired")
JOB_THREAD = [
    "request",
    "authorization",
    "validation",
    "analysis",
    "crowdsourcing",
    "response",
    "response",
    "shortlist",
    "contract",
    "completion",
    "command",
    *["command_state"] * 5,
    "verification",
    "evaluation",
]
COMMAND_STATES = [
    (None, "created"),
    ("created", "sent"),
    ("sent", "delivered"),
    ("delivered", "executing"),
    ("executing", "succeeded"),
]


class Rig:
    """The cloud, the edge agent and the simulated boiler of one test."""

    def __init__(self, stack: Stack, gateway: Gateway, sim: Any) -> None:
        self.stack, self.gateway, self.sim = stack, gateway, sim


@contextlib.asynccontextmanager
async def open_rig(
    tmp_path: Path, broker: Broker, db_url: str, start_sim: Any, settings: dict[str, Any]
) -> AsyncIterator[Rig]:
    """Owner, tenant, support, three engineers and the boiler, with the cloud running."""
    sim = await start_sim()
    stack = Stack(tmp_path / "cloud", broker, db_url, **settings)
    stack.user(OWNER, Role.OWNER)
    stack.user(TENANT, Role.TENANT)
    stack.user(SUPPORT, Role.SUPPORT)
    for engineer_id, history in HISTORY.items():
        stack.engineer(engineer_id, at=HOMES[engineer_id], **history)
    gateway = stack.gateway(tmp_path / "gateway", sim.pty, DEV)
    await stack.start()
    try:
        yield Rig(stack, gateway, sim)
    finally:
        if gateway.process is not None:
            gateway.process.send_signal(signal.SIGCONT)
            await gateway.signal(signal.SIGTERM)
        await gateway.cancel()
        await stack.close()


@pytest.fixture
async def rig(
    tmp_path: Path,
    broker: Broker,
    db_url: str,
    start_sim: Any,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Rig]:
    """`open_rig` with the test's settings (`SETTINGS`, overridden by a parameter)."""
    settings = SETTINGS | getattr(request, "param", {})
    async with open_rig(tmp_path, broker, db_url, start_sim, settings) as opened:
        yield opened


async def resets(sim: Any) -> int:
    """How many lockout resets the simulated boiler has carried out."""
    return int((await sim.state())["registers"]["reset_count"])


async def status_is(stack: Stack, label: str) -> bool:
    """The twin is online and shows status `label`."""
    twin = await stack.twin(SUPPORT, DEV)
    status = twin["reported"].get("status", {})
    return bool(twin["connectivity"]["state"] == "online" and status.get("label") == label)


async def notification(stack: Stack, user_id: str, kind: str) -> dict[str, Any] | None:
    """The newest notification of `kind` in `user_id`'s feed, if any."""
    items = (await stack.get(user_id, "/api/v1/notifications"))["items"]
    return next((n for n in items if n["kind"] == kind), None)


async def job_in(stack: Stack, job_id: str, state: str) -> dict[str, Any] | None:
    """The job as its owner sees it, if it is in `state`."""
    job: dict[str, Any] = await stack.get(OWNER, f"/api/v1/jobs/{job_id}")
    return job if job["state"] == state else None


async def give_home(stack: Stack) -> None:
    """Support records who owns and lives with the boiler, and where it is (If-Match)."""
    current = await stack.api.get(f"/api/v1/boilers/{DEV}", headers=await stack.login(SUPPORT))
    assert current.status_code == 200, current.text
    body = {
        "owner": OWNER,
        "tenant": TENANT,
        "location": {"lat": HOME.lat, "lon": HOME.lon},
        "address": ADDRESS,
    }
    headers = {**await stack.login(SUPPORT), "If-Match": current.headers["etag"]}
    patched = await stack.api.patch(f"/api/v1/boilers/{DEV}", json=body, headers=headers)
    assert patched.status_code == 200, patched.text
    attributes = patched.json()["attributes"]
    assert (attributes["owner"], attributes["tenant"]) == (OWNER, TENANT)
    assert attributes["location"] == {"lat": HOME.lat, "lon": HOME.lon}


async def lock_out(sim: Any) -> None:
    """F28 (ignition failure) and demand: the boiler tries to ignite and locks out."""
    await sim.control("/fault", {"code": "F28"})
    await sim.control("/demand", {"ch": "on"})
    await sim.control("/advance", {"seconds": 120})
    assert (await sim.state())["status"] == BoilerStatus.LOCKOUT.label


async def locked_out_with_tenant(rig: Rig) -> None:
    """The boiler gets its people and place, comes online and locks out on F28; its twin
    tells the tenant (and the owner)."""
    stack, sim = rig.stack, rig.sim
    await give_home(stack)
    await rig.gateway.start()
    await eventually(lambda: status_is(stack, "standby"), "twin online, boiler in standby")
    await lock_out(sim)
    await eventually(lambda: status_is(stack, "lockout"), "twin in lockout")
    for person in (TENANT, OWNER):
        alarm = await eventually(
            functools.partial(notification, stack, person, "boiler_alarm"),
            f"{person}'s alarm notice",
        )
        assert alarm["device_id"] == DEV
        assert alarm["data"]["kind"] == "lockout" and alarm["data"]["fault"] == "F28"


async def contracted_job(stack: Stack) -> str:
    """The tenant asks for a repair, the owner authorises, live data confirms it, the top two
    by W answer, and the owner contracts the best from the low-carbon shortlist."""
    request = {
        "device_id": DEV,
        "service_type": "repair",
        "problem": "no_heating",
        "description": "No heating since this morning, display shows F28",
        "principle": "low_carbon",
    }
    created = await stack.post(TENANT, "/api/v1/jobs", request, **{"Idempotency-Key": "tom-1"})
    assert created.status_code == 201, created.text
    job_id: str = created.json()["id"]
    assert created.json()["state"] == "pending_authorization"
    asked = await notification(stack, OWNER, "request_to_authorize")
    assert asked is not None and asked["job_id"] == job_id
    approved = await stack.post(
        OWNER, f"/api/v1/jobs/{job_id}/authorize", {"approve": True, "note": "go ahead"}
    )
    assert approved.status_code == 200, approved.text
    job = approved.json()
    assert job["state"] == "crowdsourcing", job
    assert job["validation"]["outcome"] == "matched", job["validation"]
    evidence = job["validation"]["evidence"]
    assert (evidence["connectivity"], evidence["status_label"]) == ("online", "lockout")
    assert evidence["fault_name"] == "F28"
    assert {"gas", "ignition"} <= set(job["analysis"]["skills"])

    # W (eq. 9) invites the top two; the best engineer is best on every figure, so their W
    # is q_ar * AR + q_cs * 1 + q_sq * 1.
    invitations = (await stack.get(OWNER, f"/api/v1/jobs/{job_id}/invitations"))["items"]
    assert [i["engineer_id"] for i in invitations] == [BEST, SECOND]
    assert invitations[0]["performance"] == pytest.approx(0.5 * 8 / 9 + 0.2 + 0.3)
    assert invitations[0]["performance"] > invitations[1]["performance"]
    assert (await stack.get(WEAKEST, "/api/v1/invitations"))["items"] == []
    for engineer_id in (BEST, SECOND):
        mine = (await stack.get(engineer_id, "/api/v1/invitations"))["items"]
        assert [(i["job_id"], i["state"]) for i in mine] == [(job_id, "open")]
        where = WHERE_NOW[engineer_id]
        answer = {
            "available": True,
            "quote": QUOTES[engineer_id],
            "location": {"lat": where.lat, "lon": where.lon},
        }
        answered = await stack.post(engineer_id, f"/api/v1/jobs/{job_id}/response", answer)
        assert answered.status_code == 200, answered.text
        assert answered.json()["state"] == "accepted"

    # Everyone answered: the shortlist, nearest first; the owner chooses the best.
    assert await job_in(stack, job_id, "shortlisted")
    shortlist = await stack.get(OWNER, f"/api/v1/jobs/{job_id}/shortlist")
    assert shortlist["principle"] == "low_carbon"
    candidates = shortlist["candidates"]
    assert [(c["engineer_id"], c["position"], c["rank_pct"]) for c in candidates] == [
        (BEST, 1, 0.0),
        (SECOND, 2, 100.0),
    ]
    for candidate in candidates:
        where = WHERE_NOW[candidate["engineer_id"]]
        assert candidate["distance_km"] == pytest.approx(haversine_km(where, HOME), abs=1e-3)
        assert candidate["quote"] == QUOTES[candidate["engineer_id"]]
    chosen = await stack.post(OWNER, f"/api/v1/jobs/{job_id}/select", {"engineer_id": BEST})
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["state"] == "contracted"
    assert chosen.json()["contract"]["address"] == ADDRESS
    contract = await notification(stack, BEST, "contract")
    assert contract is not None and contract["job_id"] == job_id
    return job_id


async def complete(stack: Stack, job_id: str) -> None:
    """The contracted engineer reports the work done."""
    report = {
        "cause": "ignition electrode worn",
        "actions": "replaced the electrode, tested ignition",
        "parts": ["ignition electrode"],
    }
    completed = await stack.post(BEST, f"/api/v1/jobs/{job_id}/complete", report)
    assert completed.status_code == 200, completed.text
    assert completed.json()["state"] == "completed"


async def restart_outcome(stack: Stack, command_id: str) -> dict[str, Any]:
    """The command once it has a verdict (read as support: engineers lose sight of it)."""

    async def outcome() -> dict[str, Any] | None:
        command = await stack.command(SUPPORT, command_id)
        return command if command["state"] in TERMINAL else None

    done: dict[str, Any] = await eventually(outcome, "the engineer's restart to finish")
    return done


async def test_lockout_to_crowdsourced_repair_to_evaluation(rig: Rig) -> None:
    stack, sim = rig.stack, rig.sim
    await locked_out_with_tenant(rig)
    job_id = await contracted_job(stack)

    # Before the completion report neither the engineer nor the tenant may restart the
    # boiler; other engineers cannot even see it.
    before = await resets(sim)
    early = await stack.restart(BEST, DEV)
    assert early.status_code == 403, early.text
    assert "completed repair first" in early.json()["detail"]
    by_tenant = await stack.restart(TENANT, DEV)
    assert by_tenant.status_code == 403, by_tenant.text
    assert by_tenant.json()["detail"] == "a tenant may not restart this boiler"
    for outsider in (SECOND, WEAKEST):  # not chosen / never invited: cannot see the boiler
        refused = await stack.restart(outsider, DEV)
        assert refused.status_code == 404, (outsider, refused.text)

    # The engineer repairs the boiler, reports it and restarts it: one real reset.
    await sim.control("/repair", {"code": "F28"})
    await complete(stack, job_id)
    assert await resets(sim) == before
    restarted = await stack.restart(BEST, DEV)
    assert restarted.status_code == 202, restarted.text
    command_id = restarted.json()["id"]
    done = await restart_outcome(stack, command_id)
    assert done["state"] == "succeeded", done
    assert done["requested_by"] == BEST
    assert await resets(sim) == before + 1

    # The platform sees the boiler run normally for verify_normal_s: verified; the tenant is
    # asked to rate the service and does.
    verified = await eventually(
        lambda: job_in(stack, job_id, "verified"), "job verified from live data", timeout=30
    )
    assert verified["evaluation_open"] is True
    evaluate = await eventually(lambda: notification(stack, TENANT, "evaluate"), "evaluate notice")
    assert evaluate["job_id"] == job_id
    token = evaluate["data"]["evaluation_token"]
    profile = await stack.get(SUPPORT, f"/api/v1/engineers/{BEST}")
    history = profile["history"]
    n = history["evaluated"]
    cs, sq = history["cs_sum"] / n, history["sq_sum"] / n
    rated = await stack.post(
        TENANT,
        f"/api/v1/jobs/{job_id}/evaluation",
        {"token": token, "cs": 5, "sq": 4, "comment": "on time, tidy"},
    )
    assert rated.status_code == 200, rated.text
    expected_cs, expected_sq = (cs * n + 5) / (n + 1), (sq * n + 4) / (n + 1)  # eqs. 15-16
    assert rated.json()["before"] == {"cs": cs, "sq": sq, "evaluated": n}
    after = rated.json()["after"]
    assert after["evaluated"] == n + 1
    assert (after["cs"], after["sq"]) == (
        pytest.approx(expected_cs),
        pytest.approx(expected_sq),
    )
    again = await stack.post(
        TENANT, f"/api/v1/jobs/{job_id}/evaluation", {"token": token, "cs": 1, "sq": 1}
    )
    assert again.status_code == 409, again.text

    profile = await stack.get(SUPPORT, f"/api/v1/engineers/{BEST}")
    seeded = HISTORY[BEST]
    assert profile["history"] == {
        "invitations": seeded["invitations"] + 1,
        "accepted": seeded["accepted"] + 1,
        "evaluated": n + 1,
        "cs_sum": history["cs_sum"] + 5,
        "sq_sum": history["sq_sum"] + 4,
    }
    ar = (seeded["accepted"] + 1) / (seeded["invitations"] + 1)  # eq. 17
    assert profile["figures"]["ar"] == round(ar, 4)
    assert profile["figures"]["cs"] == round(expected_cs, 3)
    assert profile["figures"]["sq"] == round(expected_sq, 3)

    # The job's thread is the proof, in order, including the restart and its acks.
    thread = (await stack.get(OWNER, f"/api/v1/jobs/{job_id}/thread"))["events"]
    assert [e["kind"] for e in thread] == JOB_THREAD
    request_event = thread[0]["data"]
    assert request_event["twin"]["status_label"] == "lockout"
    assert ("lockout", "F28") in {(a["kind"], a["fault"]) for a in request_event["open_alarms"]}
    assert [e["subject"] for e in thread if e["kind"].startswith("command")] == [command_id] * 6
    states = [(e["data"]["from"], e["data"]["to"]) for e in thread if e["kind"] == "command_state"]
    assert states == COMMAND_STATES
    assert thread[-2]["data"]["outcome"] == "verified"
    assert thread[-1]["data"]["profile"]["after"]["evaluated"] == n + 1

    # ... and the owner exports it as a proof bundle that anyone can check offline.
    await proof_checks_out(stack, job_id, command_id)


async def proof_checks_out(stack: Stack, job_id: str, command_id: str) -> None:
    """The job's bundle holds under the manufacturer's key and pycose, names the restart's
    command and acks, and a flipped byte in it is reported."""
    answer = await stack.api.get(f"/api/v1/jobs/{job_id}/proof", headers=await stack.login(OWNER))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    bundle = answer.content
    report = check_bundle(bundle, stack.key.key.public_key())
    assert report.ok, report.problems
    assert report.checked["signed commands"] >= 1 and report.checked["device envelopes"] >= 3
    assert pycose_verifies_every_envelope(bundle) >= 5
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        names = set(archive.namelist())
        events = json.loads(archive.read("thread.json"))
    assert f"commands/{command_id}.cose" in names
    shown = [e for e in events if not e.get("redacted")]
    assert {"request", "contract", "command", "verification"} <= {e["kind"] for e in shown}
    assert any(e["kind"] == "command_state" and e["data"]["to"] == "succeeded" for e in shown)
    flipped = bytearray(bundle)
    flipped[len(bundle) // 3] ^= 0x10
    assert not check_bundle(bytes(flipped), stack.key.key.public_key()).ok
    for outsider in (SECOND, WEAKEST):
        refused = await stack.api.get(
            f"/api/v1/jobs/{job_id}/proof", headers=await stack.login(outsider)
        )
        assert refused.status_code in (403, 404), (outsider, refused.status_code)


# Only the relapse can decide: the boiler would have to run normally for far longer than this.
@pytest.mark.parametrize("rig", [{"verify_normal_s": 600.0}], indirect=True)
async def test_repair_that_does_not_hold_fails_verification(rig: Rig) -> None:
    stack, sim = rig.stack, rig.sim
    await locked_out_with_tenant(rig)
    job_id = await contracted_job(stack)
    before = await resets(sim)
    # The engineer reports a repair, but the ignition fault is still there.
    await complete(stack, job_id)
    restarted = await stack.restart(BEST, DEV)
    assert restarted.status_code == 202, restarted.text
    await restart_outcome(stack, restarted.json()["id"])
    assert await resets(sim) == before + 1
    await sim.control("/advance", {"seconds": 120})
    assert (await sim.state())["status"] == BoilerStatus.LOCKOUT.label

    failed = await eventually(
        lambda: job_in(stack, job_id, "failed_verification"), "job failed verification"
    )
    assert failed["closed_reason"] == "locked out again after the repair"
    assert failed["evaluation_open"] is False
    for person in (TENANT, OWNER, BEST):
        told = await notification(stack, person, "failed_verification")
        assert told is not None and told["job_id"] == job_id, person
    assert await notification(stack, TENANT, "evaluate") is None
    # The engineer's chance to restart ended with the verdict: the job is closed, and with it
    # their sight of the boiler.
    again = await stack.restart(BEST, DEV)
    assert again.status_code == 404, again.text
    # Answering the invitation counted (eq. 17); without an evaluation CS and SQ stand still.
    profile = await stack.get(SUPPORT, f"/api/v1/engineers/{BEST}")
    seeded = HISTORY[BEST]
    assert profile["history"] == {**seeded, "invitations": 10, "accepted": 9}
    thread = (await stack.get(OWNER, f"/api/v1/jobs/{job_id}/thread"))["events"]
    verdict = thread[-1]
    assert verdict["kind"] == "verification", [e["kind"] for e in thread]
    assert verdict["data"]["outcome"] == "failed"
    assert verdict["data"]["evidence"]["lockout"]["fault"] == "F28"
