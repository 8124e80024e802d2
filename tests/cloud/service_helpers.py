"""A service-platform world for in-process API tests: people, a boiler in lockout, engineers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from httpx import Response

from cloud.domain import Role
from cloud.models import Alarm
from cloud.registry import Location
from cloud.service.crowd import EARTH_RADIUS_KM
from cloud.service.engineers import EngineerSpec, upsert_engineer
from protocols.reference import BoilerStatus, FaultCode
from tests.cloud.api_helpers import CHEAP, PASSWORD, T0, World, problem

DEV = "boiler-m1"
HOME = (53.4808, -2.2426)
"""The boiler: central Manchester."""
REPAIR = {"device_id": DEV, "service_type": "repair", "problem": "no_heating"}


def engineer(
    world: World,
    user_id: str,
    *,
    skills: tuple[str, ...] = ("gas_safe", "boiler_repair", "gas", "ignition"),
    at: tuple[float, float] = (53.49, -2.25),
    **history: Any,
) -> str:
    """An engineer with a login and a profile; `history` sets invitations, accepted, ..."""
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
    with world.db() as session:
        upsert_engineer(session, spec, now_ms=world.clock(), password=PASSWORD, hasher=CHEAP)
    return user_id


def lockout_boiler(world: World, *, outdoor: float = 2.0) -> None:
    """Owner olivia, tenant tom, the boiler online and locked out on F28 (with its episode)."""
    world.user("olivia", Role.OWNER)
    world.user("tom", Role.TENANT)
    world.boiler(
        DEV,
        owner="olivia",
        tenant="tom",
        location=Location(*HOME),
        address="1 Piccadilly, Manchester",
        install_date="2020-03-01",
    )
    online_lockout(world)
    world.value(DEV, "outdoor_temp", outdoor, T0)
    world.value(DEV, "ch_pressure", 1.5, T0)
    with world.db() as session:
        session.add(
            Alarm(device_id=DEV, kind="lockout", code=28, name="F28", start_ms=T0 - 60_000, seq=1)
        )
        session.add(
            Alarm(device_id=DEV, kind="fault", code=28, name="F28", start_ms=T0 - 60_000, seq=1)
        )


def online_lockout(world: World) -> None:
    """The twin online, in lockout on F28, heard from now."""
    world.twin(
        DEV,
        connection="online",
        last_seen_ms=world.clock(),
        status=int(BoilerStatus.LOCKOUT),
        fault_code=int(FaultCode.F28),
    )


def running(world: World) -> None:
    """The twin online and running normally, heard from now."""
    world.twin(
        DEV,
        connection="online",
        last_seen_ms=world.clock(),
        status=int(BoilerStatus.RUNNING),
        fault_code=0,
    )


KM_PER_DEGREE = EARTH_RADIUS_KM * math.pi / 180
"""Great-circle kilometres per degree of latitude: along a meridian, distances are by hand."""
FIXED = {"cause": "worn ignition electrode", "actions": "replaced, tested", "parts": ["electrode"]}
"""A completion report."""


def north(km: float) -> dict[str, float]:
    """A location `km` great-circle kilometres due north of the boiler."""
    return {"lat": HOME[0] + km / KM_PER_DEGREE, "lon": HOME[1]}


def blocked(world: World) -> None:
    """The twin online in a blocking error (abnormal, but no lockout episode), heard from now."""
    world.twin(
        DEV,
        connection="online",
        last_seen_ms=world.clock(),
        status=int(BoilerStatus.BLOCKING_ERROR),
        fault_code=0,
    )


@dataclass
class Portal:
    """The service API as the test's people use it: one login per person, paths under /api/v1."""

    world: World
    logins: dict[str, dict[str, str]] = field(default_factory=dict)

    def auth(self, user_id: str) -> dict[str, str]:
        """Authorization headers of `user_id` (logged in once)."""
        if user_id not in self.logins:
            self.logins[user_id] = self.world.login(user_id)
        return self.logins[user_id]

    def get(self, user_id: str, path: str, **params: Any) -> Response:
        """GET /api/v1`path` as `user_id`."""
        response: Response = self.world.client.get(
            f"/api/v1{path}", params=params, headers=self.auth(user_id)
        )
        return response

    def post(
        self, user_id: str, path: str, body: dict[str, Any] | None = None, **headers: str
    ) -> Response:
        """POST /api/v1`path` as `user_id`, with a JSON body."""
        response: Response = self.world.client.post(
            f"/api/v1{path}", json=body or {}, headers=self.auth(user_id) | headers
        )
        return response

    def put(self, user_id: str, path: str, body: dict[str, Any]) -> Response:
        """PUT /api/v1`path` as `user_id`, with a JSON body."""
        response: Response = self.world.client.put(
            f"/api/v1{path}", json=body, headers=self.auth(user_id)
        )
        return response

    def refused(self, response: Response, status: int) -> str:
        """The problem detail (the reason) of a refused request with `status`."""
        detail: str = problem(response, status)["detail"]
        assert detail
        return detail

    def job(self, user_id: str, job_id: str) -> dict[str, Any]:
        """A job as `user_id` sees it."""
        response = self.get(user_id, f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def state(self, job_id: str) -> str:
        """A job's state (as the owner sees it)."""
        return str(self.job("olivia", job_id)["state"])

    def raise_job(self, user_id: str, **body: Any) -> dict[str, Any]:
        """`user_id` raises a request (`REPAIR` unless `body` says otherwise): the new job."""
        response = self.post(user_id, "/jobs", REPAIR | body)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        return job

    def crowdsourced(self, **body: Any) -> str:
        """Tenant tom raises, owner olivia approves: the job id, now crowdsourcing."""
        job = self.raise_job("tom", **body)
        approved = self.post("olivia", f"/jobs/{job['id']}/authorize", {"approve": True})
        assert approved.status_code == 200, approved.text
        assert approved.json()["state"] == "crowdsourcing", approved.json()
        return str(job["id"])

    def answer(
        self, engineer_id: str, job_id: str, quote: float | None = 190.0, km: float = 1.0
    ) -> Response:
        """An available engineer's answer: `quote`, and `km` north of the boiler."""
        body = {"available": True, "quote": quote, "location": north(km)}
        return self.post(engineer_id, f"/jobs/{job_id}/response", body)

    def decline(self, engineer_id: str, job_id: str) -> Response:
        """An invited engineer is not available."""
        return self.post(engineer_id, f"/jobs/{job_id}/response", {"available": False})

    def select(self, engineer_id: str, job_id: str, by: str = "olivia") -> Response:
        """The owner (or `by`) chooses `engineer_id` from the shortlist."""
        return self.post(by, f"/jobs/{job_id}/select", {"engineer_id": engineer_id})

    def contracted(self, engineer_id: str, **body: Any) -> str:
        """A job crowdsourced to `engineer_id` alone, who answers and is chosen: its id."""
        job_id = self.crowdsourced(**body)
        assert self.answer(engineer_id, job_id).status_code == 200
        assert self.state(job_id) == "shortlisted"
        chosen = self.select(engineer_id, job_id)
        assert chosen.status_code == 200, chosen.text
        return job_id

    def complete(self, engineer_id: str, job_id: str) -> Response:
        """`engineer_id` reports the work done."""
        return self.post(engineer_id, f"/jobs/{job_id}/complete", FIXED)

    def restart(self, user_id: str) -> Response:
        """`user_id` asks to restart the boiler."""
        return self.post(user_id, f"/boilers/{DEV}/commands", {"name": "restart"})

    def verify(self, job_id: str) -> None:
        """The boiler runs normally for `verify_normal_s` and the sweeper verifies the job."""
        running(self.world)
        self.world.platform.sweep()
        self.world.clock.now += int(self.world.settings.verify_normal_s * 1000) + 1000
        running(self.world)
        self.world.platform.sweep()
        assert self.state(job_id) == "verified"

    def notifications(self, user_id: str) -> list[dict[str, Any]]:
        """`user_id`'s feed, newest first."""
        response = self.get(user_id, "/notifications", limit=200)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def told(self, user_id: str, kind: str, job_id: str | None = None) -> list[dict[str, Any]]:
        """`user_id`'s notifications of `kind` (about `job_id`, if given)."""
        return [
            n
            for n in self.notifications(user_id)
            if n["kind"] == kind and (job_id is None or n["job_id"] == job_id)
        ]

    def thread(self, job_id: str, user_id: str = "olivia") -> list[dict[str, Any]]:
        """The job's thread events, in order."""
        response = self.get(user_id, f"/jobs/{job_id}/thread")
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def event(self, job_id: str, kind: str) -> dict[str, Any]:
        """The job's last thread event of `kind`."""
        return [e for e in self.thread(job_id) if e["kind"] == kind][-1]

    def invited(self, job_id: str) -> list[str]:
        """Who was invited to the job, by id, as the owner sees it."""
        items = self.get("olivia", f"/jobs/{job_id}/invitations").json()["items"]
        return sorted(i["engineer_id"] for i in items)

    def profile(self, engineer_id: str) -> dict[str, Any]:
        """The engineer's profile, as they see it."""
        response = self.get(engineer_id, f"/engineers/{engineer_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body
