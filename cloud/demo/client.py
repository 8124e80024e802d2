"""The demo's client side: HTTP, what ``run-demo.sh`` wrote, narration, the twin in words."""

from __future__ import annotations

import http.client
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

INFO_FILE = "demo.json"
NOT_RUNNING = "the demo is not running: start it with `make demo`"

T = TypeVar("T")


class DemoError(Exception):
    """The demo is not there, or a step did not go as the scenario needs; context as
    attributes (not an HTTP problem: the demo is a client of the cloud, not part of it)."""

    def __init__(self, detail: str, **context: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context


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


def healthy(info: DemoInfo) -> bool | None:
    """True when the cloud's health endpoint answers 200, else None (for `Narrator.wait_for`)."""
    try:
        return True if urllib_transport("GET", info.health, None, {}).status == 200 else None
    except Unreachable:
        return None
