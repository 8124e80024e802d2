"""A whole cloud for integration tests: ``boilertwin cloud serve`` as its own process.

The cloud runs as a real process (so a test can SIGKILL it) on a real database and the test
broker, with its own command key; `Stack.gateway` wires an edge agent to it (registered
device, pinned cloud key). The API is driven with httpx.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from cloud.auth import create_user
from cloud.db import make_engine, session_factory, transaction
from cloud.domain import Role
from cloud.keys import keygen
from cloud.registry import add_device
from cloud.service.engineers import EngineerSpec, upsert_engineer
from tests.broker import CLOUD_PASSWORD, Broker, free_port
from tests.edge_agent.harness import Gateway

PASSWORD = "correct-horse-battery"
"""Password of every user the stack creates."""
CLOUD_KID = "cloud-stack"
REPAIR_SKILLS = ("gas_safe", "boiler_repair", "gas", "ignition")
"""What an F28 repair asks of an engineer (`cloud/service/rules.toml`)."""


async def eventually(
    probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 30.0, every: float = 0.1
) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


class Stack:
    """Database, cloud process and API client for one test."""

    def __init__(self, directory: Path, broker: Broker, db_url: str, **settings: Any) -> None:
        self.directory = directory
        self.broker = broker
        self.db_url = db_url
        directory.mkdir(parents=True, exist_ok=True)
        self.key = keygen(directory / "keys", CLOUD_KID)
        self.api_port = free_port()
        password_file = directory / "cloud.password"
        password_file.write_text(CLOUD_PASSWORD)
        values: dict[str, Any] = {
            "db_url": db_url,
            "broker_host": broker.host,
            "broker_port": broker.port,
            "mqtt_password_file": str(password_file),
            "mqtt_client_id": f"bt-cloud-{uuid.uuid4().hex[:8]}",
            "ingest_group": f"ingest-{uuid.uuid4().hex[:8]}",
            "keys_dir": str(directory / "keys"),
            "api_port": self.api_port,
            "sweep_interval_s": 0.2,
            "portal_secure_cookie": False,  # plain HTTP on loopback, as in `make demo`
        }
        values.update(settings)
        self.config = directory / "cloud.toml"
        self.config.write_text(
            "".join(
                f"{k} = {json.dumps(v) if isinstance(v, str | bool) else v}\n"
                for k, v in values.items()
            )
        )
        self.engine = make_engine(db_url)
        self.sessions = session_factory(self.engine)
        self.process: asyncio.subprocess.Process | None = None
        self.api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.api_port}", timeout=10)
        self._tokens: dict[str, str] = {}

    # -- people and devices ---------------------------------------------------------------------

    def user(self, user_id: str, role: Role) -> None:
        """Create a user with `PASSWORD`."""
        with transaction(self.sessions) as session:
            create_user(session, user_id, PASSWORD, role, now_ms=int(time.time() * 1000))

    def engineer(
        self,
        user_id: str,
        *,
        at: tuple[float, float],
        skills: tuple[str, ...] = REPAIR_SKILLS,
        **history: Any,
    ) -> None:
        """An engineer with `PASSWORD`, a home `at` (lat, lon) and `history` (invitations,
        accepted, evaluated, cs_sum, sq_sum)."""
        spec = EngineerSpec(
            user_id=user_id,
            display_name=user_id.title(),
            gas_safe_number="1234567",
            skills=frozenset(skills),
            languages=frozenset({"en"}),
            training=frozenset(),
            home_lat=at[0],
            home_lon=at[1],
            **history,
        )
        with transaction(self.sessions) as session:
            upsert_engineer(session, spec, now_ms=int(time.time() * 1000), password=PASSWORD)

    def gateway(self, directory: Path, pty: str, device_id: str, **overrides: Any) -> Gateway:
        """An edge agent registered with this cloud and pinning its command key."""
        gateway = Gateway(directory, self.broker, pty, device_id=device_id, **overrides)
        keys_dir = Path(gateway.config["commands"]["cloud_keys_dir"])
        for old in keys_dir.glob("*.pem"):
            old.unlink()
        (keys_dir / f"{CLOUD_KID}.pem").write_bytes(self.key.public_pem)
        with transaction(self.sessions) as session:
            add_device(
                session,
                device_id,
                gateway.key.public_key(),
                now_ms=int(time.time() * 1000),
                model="Condens 7000",
                serial=f"SN-{device_id}",
                install_date="2024-03-01",
            )
        return gateway

    # -- the cloud process ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start ``boilertwin cloud serve`` and wait until /healthz answers."""
        log = open(self.directory / "cloud.log", "ab")  # noqa: SIM115
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import boilertwin; boilertwin.main()",
            "cloud",
            "serve",
            "--config",
            str(self.config),
            "--log-level",
            "DEBUG",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.directory,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        log.close()
        process = self.process

        async def healthy() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"cloud exited {process.returncode}:\n{self.log_text()}")
            try:
                return (await self.api.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(healthy, "the cloud API", timeout=30)

    async def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        await self._signal(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM and wait."""
        await self._signal(signal.SIGTERM)

    async def _signal(self, signum: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)
            try:
                async with asyncio.timeout(20):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
                raise AssertionError(f"cloud ignored {signum!r}:\n{self.log_text()}") from None
        self.process = None

    async def close(self) -> None:
        await self.stop()
        await self.api.aclose()
        self.engine.dispose()

    def log_text(self) -> str:
        path = self.directory / "cloud.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- API ------------------------------------------------------------------------------------

    async def login(self, user_id: str) -> dict[str, str]:
        """Authorization header for `user_id` (token cached)."""
        if user_id not in self._tokens:
            response = await self.api.post(
                "/api/v1/auth/token", data={"username": user_id, "password": PASSWORD}
            )
            assert response.status_code == 200, response.text
            self._tokens[user_id] = response.json()["access_token"]
        return {"Authorization": f"Bearer {self._tokens[user_id]}"}

    async def get(self, user_id: str, path: str) -> Any:
        response = await self.api.get(path, headers=await self.login(user_id))
        assert response.status_code == 200, response.text
        return response.json()

    async def post(
        self, user_id: str, path: str, body: Any = None, **headers: str
    ) -> httpx.Response:
        """POST `body` as JSON as `user_id`; the answer, whatever its status."""
        return await self.api.post(
            path, json=body, headers={**await self.login(user_id), **headers}
        )

    async def twin(self, user_id: str, device_id: str) -> dict[str, Any]:
        return await self.get(user_id, f"/api/v1/boilers/{device_id}")  # type: ignore[no-any-return]

    async def restart(self, user_id: str, device_id: str, **headers: str) -> httpx.Response:
        return await self.api.post(
            f"/api/v1/boilers/{device_id}/commands",
            json={"name": "restart", "reason": "F28 cause repaired, confirmed by phone"},
            headers={**await self.login(user_id), **headers},
        )

    async def command(self, user_id: str, command_id: str) -> dict[str, Any]:
        return await self.get(user_id, f"/api/v1/commands/{command_id}")  # type: ignore[no-any-return]
