"""``boilertwin demo``: scripted scenarios against the stack ``make demo`` runs.

The scenario talks to the demo only as an outsider would: the cloud's REST API and the
simulated boilers' control endpoints, over plain HTTP with the standard library, at the
addresses ``deploy/demo/run-demo.sh`` wrote to ``demo.json``. It never imports the simulator
or the edge agent, so what it shows is what a client of the platform would see: a fault on the
boiler reaching the twin, a remote restart going down to the gateway, and the thread that
proves it.

`prepare` is the script's last set-up step (owner and tenant of a boiler, which only the API
sets); `run_scenario` is ``boilertwin demo --scenario ...``. The lockout scenario is here, with
the HTTP client, the narrator and the steps both scenarios share; the repair scenario (the
service platform's whole story) is in `cloud.demo_repair`.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

from cloud.errors import CloudError
from protocols.reference import BoilerStatus

INFO_FILE = "demo.json"
LOCKOUT = BoilerStatus.LOCKOUT.label
OUTCOMES = frozenset({"succeeded", "failed", "rejected", "expired", "timed_out"})
"""Command states the scenario stops at (the last two are cloud verdicts for silence)."""
NOT_RUNNING = "the demo is not running: start it with `make demo`"

T = TypeVar("T")


class Scenario(StrEnum):
    """What ``boilertwin demo --scenario`` can play."""

    LOCKOUT = "lockout"
    """F28 lockout on boiler 1, seen in the twin; repair; remote restart; back to running."""
    REPAIR = "repair"
    """The service story: lockout, the tenant's request, crowdsourced engineers, the
    contract, the repair and the engineer's restart, verification, the tenant's rating
    (`cloud.demo_repair`)."""


class DemoError(CloudError):
    """The demo is not there, or a step did not go as the scenario needs."""


# -- HTTP ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer, whatever its status."""

    status: int
    headers: Mapping[str, str]
    """Names in lower case."""
    body: bytes

    def json(self) -> Any:
        """The body as JSON (None when empty or not JSON)."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def problem(self) -> str:
        """What went wrong, from an RFC 9457 problem body if there is one."""
        body = self.json()
        if not isinstance(body, dict) or "title" not in body:
            return f"HTTP {self.status} {self.body[:200].decode(errors='replace')}".rstrip()
        text = f"HTTP {self.status} {body['title']}"
        if body.get("detail"):
            text += f": {body['detail']}"
        if body.get("reason"):
            text += f" (reason: {body['reason']})"
        return text


class Transport(Protocol):
    """One HTTP exchange; raises `Unreachable` when nothing answers."""

    def __call__(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]
    ) -> Reply: ...


class Unreachable(DemoError):
    """Nothing answered at `url`."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"nothing answers at {url} ({reason})", url=url)
        self.url = url
        self.reason = reason


def urllib_transport(
    method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float = 10.0
) -> Reply:
    """`Transport` over `urllib.request`; 4xx and 5xx are replies, not errors."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, _lower(response.headers.items()), response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, _lower(exc.headers.items()), exc.read())
    except urllib.error.URLError as exc:
        raise Unreachable(url, str(exc.reason)) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(url, str(exc) or type(exc).__name__) from exc


def _lower(items: Any) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in items}


class Http:
    """JSON over a `Transport`, relative to a base URL, with an optional bearer token."""

    def __init__(self, base: str, transport: Transport = urllib_transport) -> None:
        self.base = base.rstrip("/")
        self.transport = transport
        self.token: str | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send one request; the body is `json_body` as JSON or `form` form-encoded."""
        sent = {"Accept": "application/json", **(headers or {})}
        if self.token is not None:
            sent["Authorization"] = f"Bearer {self.token}"
        body: bytes | None = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        elif json_body is not None:
            body = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        return self.transport(method, self.base + path, body, sent)

    def call(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        """`request`, then its JSON body; `DemoError` naming the problem unless `ok`."""
        reply = self.request(method, path, **kwargs)
        if reply.status not in ok:
            raise DemoError(f"{method} {self.base}{path}: {reply.problem()}", status=reply.status)
        return reply.json()

    def login(self, user: str, password: str) -> None:
        """Log in (OAuth2 password form); later requests carry the bearer token."""
        self.token = None
        body = self.call("POST", "/auth/token", form={"username": user, "password": password})
        self.token = str(body["access_token"])


# -- what the demo script wrote -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Boiler:
    """One simulated boiler: its device id and its simulator's control endpoint."""

    id: str
    control: str
    owner: str | None = None
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class DemoInfo:
    """``demo.json``: where everything is, and who may log in."""

    api: str
    boilers: tuple[Boiler, ...]
    passwords: Mapping[str, str]
    roles: Mapping[str, str]

    @property
    def health(self) -> str:
        """The API's health endpoint (outside ``/api/v1``)."""
        return self.api.removesuffix("/").removesuffix("/api/v1") + "/healthz"

    def logins(self, role: str) -> dict[str, str]:
        """User id -> password of every user with `role`, in ``demo.json`` order."""
        return {user: self.passwords[user] for user, r in self.roles.items() if r == role}

    def user_with_role(self, role: str) -> tuple[str, str]:
        """(user id, password) of the first user with `role`."""
        for user, user_role in self.roles.items():
            if user_role == role:
                return user, self.passwords[user]
        raise DemoError(f"{INFO_FILE} has no {role} user", role=role)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DemoInfo:
        """Parse what `run-demo.sh` writes; `DemoError` if something is missing."""
        try:
            boilers = tuple(
                Boiler(b["id"], b["control"], b.get("owner"), b.get("tenant"))
                for b in data["boilers"]
            )
            users = data["users"]
            return cls(
                api=str(data["api"]),
                boilers=boilers,
                passwords={u["id"]: u["password"] for u in users},
                roles={u["id"]: u["role"] for u in users},
            )
        except (KeyError, TypeError) as exc:
            raise DemoError(f"{INFO_FILE} is not what run-demo.sh writes: missing {exc}") from exc

    @classmethod
    def load(cls, directory: Path) -> DemoInfo:
        """Read ``<directory>/demo.json``; a missing file means the demo is not running."""
        path = directory / INFO_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise DemoError(f"{NOT_RUNNING} (no {path})", path=str(path)) from None
        except (OSError, ValueError) as exc:
            raise DemoError(f"cannot read {path}: {exc}", path=str(path)) from exc
        if not isinstance(data, dict):
            raise DemoError(f"{path} is not a JSON object", path=str(path))
        return cls.from_json(data)


# -- narration and waiting ----------------------------------------------------------------------


class Narrator:
    """Prints each step with the time since the scenario began."""

    def __init__(
        self,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.out = out or sys.stdout
        self.clock = clock
        self.sleep = sleep
        self.start = clock()

    def elapsed(self) -> float:
        """Seconds since the start."""
        return self.clock() - self.start

    def say(self, text: str) -> None:
        """One narrated line."""
        print(f"[{self.elapsed():6.1f} s] {text}", file=self.out, flush=True)

    def wait_for(
        self, probe: Callable[[], T | None], what: str, timeout: float, every: float = 0.2
    ) -> T:
        """Call `probe` until it returns something other than None; `DemoError` on timeout."""
        deadline = self.clock() + timeout
        while True:
            value = probe()
            if value is not None:
                return value
            if self.clock() >= deadline:
                raise DemoError(f"gave up after {timeout:.0f} s waiting for {what}", what=what)
            self.sleep(every)


# -- the twin as the API shows it ---------------------------------------------------------------


def status_label(twin: Mapping[str, Any]) -> str | None:
    """The boiler's reported status label (``standby``, ``lockout``...), if it has one."""
    status = twin.get("reported", {}).get("status") or {}
    label = status.get("label")
    return str(label) if label is not None else None


def connectivity(twin: Mapping[str, Any]) -> str:
    """``online``, ``offline``, ``stale`` or ``unknown``."""
    return str(twin.get("connectivity", {}).get("state", "unknown"))


def describe(twin: Mapping[str, Any]) -> str:
    """One line: status, fault, connectivity."""
    fault = twin.get("reported", {}).get("fault_code") or {}
    text = f"status {status_label(twin) or '?'}, {connectivity(twin)}"
    if fault.get("value"):
        text += f", fault {fault.get('name')} ({fault.get('text') or 'no text'})"
    return text


# -- set-up, run by run-demo.sh -----------------------------------------------------------------


def prepare(
    record: Mapping[str, Any], directory: Path, *, timeout: float = 45.0, out: TextIO | None = None
) -> None:
    """Wait until every boiler in `record` is online in the twin, set their owners and
    tenants, then write `record` as ``demo.json``: its appearance means the demo is ready."""
    info = DemoInfo.from_json(record)
    narrator = Narrator(out)
    api = Http(info.api)
    narrator.wait_for(lambda: _healthy(info), "the cloud API", timeout)
    api.login(*info.user_with_role("admin"))

    def all_reporting() -> bool | None:
        page = api.call("GET", "/boilers?connectivity=online&limit=500")
        reporting = {item["id"] for item in page["items"] if item.get("status_label")}
        return True if all(b.id in reporting for b in info.boilers) else None

    narrator.wait_for(all_reporting, "every boiler to report its status", timeout, every=0.5)
    for boiler in info.boilers:
        people = {k: v for k, v in (("owner", boiler.owner), ("tenant", boiler.tenant)) if v}
        if people:
            _patch(api, boiler.id, people)
    narrator.say(f"{len(info.boilers)} boilers online and reporting; owners and tenants set")
    path = directory / INFO_FILE
    partial = path.with_suffix(".json.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle, indent=2)
        handle.write("\n")
    partial.replace(path)


def _healthy(info: DemoInfo) -> bool | None:
    try:
        return True if urllib_transport("GET", info.health, None, {}).status == 200 else None
    except Unreachable:
        return None


def _patch(api: Http, device_id: str, changes: Mapping[str, str], attempts: int = 5) -> None:
    """PATCH with the current ETag, again if ingest moved the twin on in between (412)."""
    for _ in range(attempts):
        current = api.request("GET", f"/boilers/{device_id}")
        if current.status != 200:
            raise DemoError(f"GET boiler {device_id}: {current.problem()}", device_id=device_id)
        reply = api.request(
            "PATCH",
            f"/boilers/{device_id}",
            json_body=dict(changes),
            headers={"If-Match": current.headers.get("etag", "")},
        )
        if reply.status == 200:
            return
        if reply.status != 412:
            raise DemoError(f"PATCH boiler {device_id}: {reply.problem()}", device_id=device_id)
    raise DemoError(f"boiler {device_id} kept changing under PATCH", device_id=device_id)


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
    """Narrate a command's states until its outcome; returns the command as it ended."""
    say = narrator.say
    sent_at = narrator.elapsed()
    seen = [str(command["state"])]

    def outcome() -> dict[str, Any] | None:
        now = api.call("GET", f"/commands/{command['id']}")
        if now["state"] != seen[-1]:
            seen.append(str(now["state"]))
            say(f"  command {now['state']} (+{narrator.elapsed() - sent_at:.1f} s)")
        return dict(now) if now["state"] in OUTCOMES else None

    final = (
        dict(command)
        if command["state"] in OUTCOMES
        else narrator.wait_for(outcome, "the command's outcome", timeout, every=0.1)
    )
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


def player(scenario: Scenario) -> Callable[[DemoInfo, Narrator], bool]:
    """The function that plays `scenario`."""
    if scenario is Scenario.REPAIR:
        # Imported here because cloud.demo_repair is built on this module.
        from cloud.demo_repair import repair_scenario

        return repair_scenario
    return lockout_scenario


def run_scenario(scenario: Scenario, directory: Path, out: TextIO | None = None) -> int:
    """Play `scenario` against the demo described in `directory`; the process exit code."""
    narrator = Narrator(out)
    try:
        info = DemoInfo.load(directory)
        if not info.boilers:
            raise DemoError(f"{directory / INFO_FILE} lists no boilers")
        if _healthy(info) is None:
            raise DemoError(f"{NOT_RUNNING} (nothing answers at {info.health})")
        narrator.say(f"scenario {scenario.value}: demo in {directory}, API {info.api}")
        ok = player(scenario)(info, narrator)
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        if isinstance(exc, Unreachable):
            print(f"demo: {NOT_RUNNING}", file=sys.stderr, flush=True)
        return 1
    narrator.say(
        f"scenario {scenario.value}: " + ("PASSED" if ok else "FAILED (see the lines above)")
    )
    return 0 if ok else 1
