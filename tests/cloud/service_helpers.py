"""A service-platform world for in-process API tests: people, a boiler in lockout, engineers."""

from __future__ import annotations

from typing import Any

from cloud.domain import Role
from cloud.models import Alarm
from cloud.registry import Location
from cloud.service.engineers import EngineerSpec, upsert_engineer
from protocols.reference import BoilerStatus, FaultCode
from tests.cloud.api_helpers import CHEAP, PASSWORD, T0, World

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
