"""Helpers for in-process API tests: a world with a real database, a fixed clock, an app."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from cloud.auth import PasswordHasher, create_user
from cloud.commands import CommandService
from cloud.db import make_engine, session_factory, transaction
from cloud.domain import Role
from cloud.keys import keygen
from cloud.models import Alarm, Device, Sample, Twin, TwinValue, Uplink
from cloud.registry import add_device
from cloud.serve import compose
from cloud.service.platform import ServicePlatform
from cloud.settings import CloudSettings
from protocols.cose import generate_private_key
from tests.clocks import FakeMsClock as Clock

T0 = 1_790_000_000_000
"""A fixed 'now' (2026-09-21T12:53:20Z)."""
HOUR = 3_600_000
DAY = 24 * HOUR
PASSWORD = "correct horse battery"
CHEAP = PasswordHasher(n=1 << 10, r=8, p=1)
"""Tests do not need login to cost 80 ms."""


@dataclass
class World:
    """Everything an API test touches."""

    app: FastAPI
    client: TestClient
    sessions: sessionmaker[Session]
    clock: Clock
    settings: CloudSettings
    commands: CommandService

    @property
    def platform(self) -> ServicePlatform:
        """The app's service platform."""
        platform: ServicePlatform = self.app.state.context.platform
        return platform

    @contextmanager
    def db(self) -> Iterator[Session]:
        """A session in one committed transaction."""
        with transaction(self.sessions) as session:
            yield session

    def user(self, user_id: str, role: Role, password: str = PASSWORD, name: str = "") -> str:
        """Create a user; returns its id."""
        with self.db() as session:
            create_user(session, user_id, password, role, name, now_ms=self.clock(), hasher=CHEAP)
        return user_id

    def login(self, user_id: str, password: str = PASSWORD) -> dict[str, str]:
        """Authorization headers for `user_id`."""
        response = self.client.post(
            "/api/v1/auth/token", data={"username": user_id, "password": password}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def as_new(self, user_id: str, role: Role) -> dict[str, str]:
        """Create a user and log in as them."""
        self.user(user_id, role)
        return self.login(user_id)

    def boiler(
        self,
        device_id: str,
        *,
        owner: str | None = None,
        tenant: str | None = None,
        **attributes: Any,
    ) -> str:
        """Register a boiler (with an empty twin) and set its owner/tenant."""
        with self.db() as session:
            add_device(
                session,
                device_id,
                generate_private_key().public_key(),
                now_ms=self.clock(),
                actor="test",
                **attributes,
            )
            device = session.get(Device, device_id)
            assert device is not None
            device.owner_id = owner
            device.tenant_id = tenant
        return device_id

    def twin(self, device_id: str, **fields: Any) -> None:
        """Set twin columns as ingest would, bumping the version."""
        with self.db() as session:
            twin = session.get(Twin, device_id)
            assert twin is not None
            for name, value in fields.items():
                setattr(twin, name, value)
            twin.version += 1

    def value(self, device_id: str, point: str, num: float, ts: int, quality: str = "good") -> None:
        """Set a latest value."""
        with self.db() as session:
            session.merge(
                TwinValue(
                    device_id=device_id, point=point, ts_ms=ts, num=num, quality=quality, seq=0
                )
            )

    def samples(self, device_id: str, point: str, rows: list[tuple[int, float | str]]) -> None:
        """Insert readings (ts, value); strings are text readings."""
        with self.db() as session:
            for seq, (ts, value) in enumerate(rows):
                is_text = isinstance(value, str)
                session.add(
                    Sample(
                        device_id=device_id,
                        point=point,
                        ts_ms=ts,
                        num=None if is_text else float(value),
                        text=value if isinstance(value, str) else None,
                        quality="good",
                        seq=seq,
                    )
                )

    def alarm(
        self, device_id: str, kind: str, code: int | None, start: int, end: int | None
    ) -> None:
        """Record an alarm episode."""
        with self.db() as session:
            session.add(
                Alarm(
                    device_id=device_id,
                    kind=kind,
                    code=code,
                    name=f"F{code}" if code else None,
                    start_ms=start,
                    end_ms=end,
                    seq=0,
                )
            )

    def uplink(self, device_id: str, seq: int, ts: int) -> None:
        """Record an accepted message (the first one is the boiler's 'first seen')."""
        with self.db() as session:
            session.add(
                Uplink(device_id=device_id, seq=seq, epoch=1, kind="data", ts_ms=ts, received_ms=ts)
            )


def make_world(db_url: str, tmp_path: Path, **settings: Any) -> World:
    """A migrated database, a command service, the app and a test client."""
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    clock = Clock()
    # The test client speaks plain HTTP, as `make demo` does: it would never send a Secure
    # cookie back (tests of the secure default pass portal_secure_cookie=True).
    settings.setdefault("portal_secure_cookie", False)
    cloud_settings = CloudSettings(db_url=db_url, **settings)
    key = keygen(tmp_path / "keys", "cloud-test")
    cloud = compose(cloud_settings, sessions, key, clock)
    client = TestClient(cloud.app, raise_server_exceptions=False)
    return World(cloud.app, client, sessions, clock, cloud_settings, cloud.commands)


@contextmanager
def world_for(db_url: str, tmp_path: Path, **settings: Any) -> Iterator[World]:
    """`make_world`, with the engine disposed afterwards."""
    world = make_world(db_url, tmp_path, **settings)
    try:
        with world.client:
            yield world
    finally:
        bind = world.sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()


def problem(response: Any, status: int) -> dict[str, Any]:
    """The problem body of `response`, after checking its status and media type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"]
    return body
