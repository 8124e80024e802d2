"""The steps both scenarios share, and the lockout scenario: F28 on boiler 1, seen in the
twin; repair; remote restart; back to running."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloud.demo.client import (
    DemoError,
    DemoInfo,
    Http,
    Narrator,
    Reply,
    Transport,
    connectivity,
    describe,
    status_label,
    urllib_transport,
)
from protocols.reference import BoilerStatus

LOCKOUT = BoilerStatus.LOCKOUT.label
OUTCOMES = frozenset({"succeeded", "failed", "rejected", "expired", "timed_out"})
"""Command states the scenario stops at (the last two are cloud verdicts for silence)."""


# -- steps the scenarios share ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long each wait of a scenario may take (seconds, real time)."""

    online: float = 30.0
    lockout: float = 30.0
    command: float = 90.0
    recovery: float = 30.0
    notification: float = 30.0
    """The repair scenario: a notification to appear in someone's feed."""
    verification: float = 120.0
    """The repair scenario: the platform to verify the repair (the demo needs about 15 s)."""


def twin_of(api: Http, device_id: str) -> dict[str, Any]:
    """The boiler's twin as the logged-in user sees it."""
    return dict(api.call("GET", f"/boilers/{device_id}"))


def lock_out(
    api: Http, sim: Http, device_id: str, narrator: Narrator, timeouts: Timeouts
) -> tuple[dict[str, Any], bool]:
    """Unless the boiler is locked out already: F28 on the simulator and a call for heat until
    the controller locks out; then wait for the twin to show it.

    Returns the twin in lockout, and whether the fault was injected now.
    """
    say = narrator.say

    def online() -> dict[str, Any] | None:
        current = twin_of(api, device_id)
        return current if connectivity(current) == "online" and status_label(current) else None

    current = narrator.wait_for(online, f"{device_id} to be online", timeouts.online)
    say(f"twin of {device_id}: {describe(current)}")

    injected = narrator.elapsed()
    inject = status_label(current) != LOCKOUT
    if inject:
        sim.call("POST", "/fault", json_body={"code": "F28"})
        say(f"simulator: F28 injected on {device_id} (no gas: ignition fails)")
        if sim.call("GET", "/state").get("status") not in ("standby", LOCKOUT):
            # A lit burner keeps burning without gas in the model: it must light again.
            sim.call("POST", "/demand", json_body={"ch": "off", "dhw": "off"})
            sim.call("POST", "/advance", json_body={"seconds": 60})
            say("simulator: heat demand off for a simulated minute, so the burner goes out")
        sim.call("POST", "/demand", json_body={"ch": "on", "dhw": "auto"})
        sim.call("POST", "/advance", json_body={"seconds": 120})
        truth = sim.call("GET", "/state")
        say(
            "simulator: heat demand on, 120 simulated seconds later the controller says "
            f"{truth.get('status')}"
        )

    def locked_out() -> dict[str, Any] | None:
        current = twin_of(api, device_id)
        return current if status_label(current) == LOCKOUT else None

    current = narrator.wait_for(locked_out, "the twin to show the lockout", timeouts.lockout)
    say(
        f"twin shows LOCKOUT {narrator.elapsed() - injected:.1f} s after the fault: "
        f"{describe(current)}"
    )
    return current, inject


def ask_restart(api: Http, device_id: str, reason: str) -> Reply:
    """Ask for a remote restart (with a fresh Idempotency-Key); the reply, whatever it is."""
    return api.request(
        "POST",
        f"/boilers/{device_id}/commands",
        json_body={"name": "restart", "reason": reason},
        headers={"Idempotency-Key": f"demo-{uuid.uuid4()}"},
    )


def restart(api: Http, device_id: str, reason: str) -> dict[str, Any]:
    """`ask_restart`: the new command, or `DemoError` saying why it was refused."""
    reply = ask_restart(api, device_id, reason)
    if reply.status not in (200, 202):
        raise DemoError(f"restart of {device_id} refused: {reply.problem()}", status=reply.status)
    return dict(reply.json())


def follow_command(
    api: Http, command: Mapping[str, Any], narrator: Narrator, timeout: float
) -> dict[str, Any]:
    """Narrate every state a command goes through until its outcome (from the boiler's
    thread, which records each change: a poll of the command alone would miss states that
    last milliseconds, such as ``delivered``); returns the command as it ended."""
    say = narrator.say
    sent_at = narrator.elapsed()
    command_id, device_id = str(command["id"]), str(command["device_id"])
    created = int(command.get("created") or 0)
    told: list[str] = []
    after = [0]

    def tell_new_states() -> None:
        while True:
            page = api.call(
                "GET", f"/boilers/{device_id}/thread?kind=command_state&after={after[0]}&limit=500"
            )
            for event in page["events"]:
                after[0] = int(event["id"])
                state = str((event.get("data") or {}).get("to"))
                if event.get("subject") == command_id and state not in told:
                    told.append(state)
                    since = (int(event["ts"]) - created) / 1000 if created else 0.0
                    say(f"  command {state} (+{since:.2f} s)")
            if page.get("next") is None:
                return

    def outcome() -> dict[str, Any] | None:
        now = api.call("GET", f"/commands/{command_id}")
        tell_new_states()
        return dict(now) if now["state"] in OUTCOMES else None

    final = narrator.wait_for(outcome, "the command's outcome", timeout, every=0.1)
    say(
        f"command {final['state'].upper()} after {narrator.elapsed() - sent_at:.1f} s"
        + (f" ({final['result_reason']})" if final.get("result_reason") else "")
        + _observed(final.get("observed"))
    )
    return final


def leave_lockout(api: Http, device_id: str, narrator: Narrator, timeout: float) -> dict[str, Any]:
    """Wait for the twin to show the boiler out of lockout; returns the twin."""

    def recovered() -> dict[str, Any] | None:
        current = twin_of(api, device_id)
        return current if status_label(current) not in (LOCKOUT, None) else None

    current = narrator.wait_for(recovered, "the twin to leave lockout", timeout)
    narrator.say(f"twin of {device_id} out of lockout: {describe(current)}")
    return current


# -- the lockout scenario -----------------------------------------------------------------------


def lockout_scenario(
    info: DemoInfo,
    narrator: Narrator,
    transport: Transport = urllib_transport,
    timeouts: Timeouts = Timeouts(),
) -> bool:
    """F28 on boiler 1, the twin sees the lockout, the cause is repaired, support restarts
    it remotely, the twin sees it running again, and the thread shows the command's life.

    True when the restart succeeded and the twin left lockout.
    """
    say = narrator.say
    boiler = info.boilers[0]
    api = Http(info.api, transport)
    sim = Http(boiler.control, transport)
    user, password = info.user_with_role("support")

    api.login(user, password)
    say(f"logged in to {info.api} as {user} (manufacturer support)")
    lock_out(api, sim, boiler.id, narrator, timeouts)

    sim.call("POST", "/repair", json_body={"code": "F28"})
    say("simulator: F28 cause repaired (gas back); the boiler stays locked out until a reset")

    command = restart(api, boiler.id, "demo: F28 gas supply restored, checked by phone")
    say(
        f"restart requested by {command.get('requested_by') or user}: "
        f"command {command['id']} is {command['state']}"
    )
    final = follow_command(api, command, narrator, timeouts.command)
    succeeded = final["state"] == "succeeded"

    left = False
    if succeeded:
        leave_lockout(api, boiler.id, narrator, timeouts.recovery)
        left = True
        sim.call("POST", "/demand", json_body={"ch": "auto"})
        say("simulator: heat demand back to the thermostat")

    events = api.call("GET", f"/boilers/{boiler.id}/thread?kind=command_state&limit=500")
    mine = [e for e in events["events"] if e.get("subject") == command["id"]]
    say(f"digital thread of command {command['id']}:")
    first = mine[0]["ts"] if mine else 0
    for event in mine:
        data = event.get("data") or {}
        say(
            f"  +{(event['ts'] - first) / 1000:6.2f} s  {data.get('from') or '-':>9} -> "
            f"{data.get('to'):<9}  by {event.get('actor')}"
        )
    return succeeded and left


def _observed(observed: Any) -> str:
    """What the gateway read back from the boiler after acting, in words."""
    if not isinstance(observed, dict) or "status" not in observed:
        return ""
    code = observed["status"]
    status = BoilerStatus(code).label if code in BoilerStatus._value2member_map_ else code
    fault = observed.get("fault_code")
    return f"; the gateway read back: status {status}, " + (
        f"fault F{fault}" if fault else "no fault"
    )
