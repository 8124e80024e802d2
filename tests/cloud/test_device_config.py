"""Configuration layers and versions on a real database: merge order, one new version per
change (none when nothing changes), and stragglers sent the same version again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.commands import Issuer
from cloud.db import make_engine, session_factory, transaction
from cloud.device_config import config_view, resend_stale, set_layer
from cloud.errors import InvalidInput
from cloud.keys import CommandKey
from cloud.lifecycle_models import DeviceConfig
from cloud.models import Command, Twin
from cloud.registry import add_device
from protocols.cose import generate_private_key
from protocols.remote_config import decode

T0 = 1_790_000_000_000
ISSUER = Issuer(CommandKey("cloud-test", generate_private_key()), 60_000, "sue")


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    factory = session_factory(engine)
    with transaction(factory) as session:
        for device_id, model in (("boiler-0001", "A"), ("boiler-0002", "A"), ("boiler-0003", "B")):
            add_device(
                session, device_id, generate_private_key().public_key(), now_ms=T0, model=model
            )
    yield factory
    engine.dispose()


def layer(sessions: sessionmaker[Session], scope: str, target: str, settings: dict) -> list[str]:  # type: ignore[type-arg]
    with transaction(sessions) as session:
        return set_layer(session, scope, target, settings, now_ms=T0, issuer=ISSUER)


def sent(sessions: sessionmaker[Session], device_id: str) -> list[dict]:  # type: ignore[type-arg]
    with sessions() as session:
        rows = session.scalars(
            select(Command).where(Command.device_id == device_id).order_by(Command.created_ms)
        )
        return [{"version": c.args["version"], **decode(c.args["config"])} for c in rows]


def test_layers_merge_fleet_then_model_then_device(sessions: sessionmaker[Session]) -> None:
    assert layer(
        sessions, "fleet", "*", {"report": {"poll_interval_s": 30, "heartbeat_s": 3600}}
    ) == [
        "boiler-0001",
        "boiler-0002",
        "boiler-0003",
    ]
    assert layer(sessions, "model", "A", {"report": {"poll_interval_s": 20}}) == [
        "boiler-0001",
        "boiler-0002",
    ]
    assert layer(sessions, "device", "boiler-0001", {"report": {"deadband": {"flow_temp": 1}}}) == [
        "boiler-0001"
    ]
    assert sent(sessions, "boiler-0001")[-1] == {
        "version": 3,
        "report": {"poll_interval_s": 20.0, "heartbeat_s": 3600.0, "deadband": {"flow_temp": 1.0}},
    }
    assert sent(sessions, "boiler-0003")[-1]["report"]["poll_interval_s"] == 30.0
    # the same layer again changes nothing and sends nothing
    assert layer(sessions, "model", "A", {"report": {"poll_interval_s": 20}}) == []
    # removing the model layer: model A's boilers fall back to the fleet's value
    assert layer(sessions, "model", "A", {}) == ["boiler-0001", "boiler-0002"]
    assert sent(sessions, "boiler-0002")[-1]["report"]["poll_interval_s"] == 30.0


def test_bad_layers_are_refused(sessions: sessionmaker[Session]) -> None:
    for settings in ({"mqtt": {"host": "x"}}, {"report": {"poll_interval_s": "fast"}}, {"x": {}}):
        with pytest.raises(InvalidInput):
            layer(sessions, "fleet", "*", settings)
    with pytest.raises(InvalidInput):
        layer(sessions, "galaxy", "*", {"report": {"poll_interval_s": 1}})


def test_a_straggler_gets_the_same_version_again_once_back_online(
    sessions: sessionmaker[Session],
) -> None:
    layer(sessions, "device", "boiler-0003", {"health": {"interval_s": 600}})
    with transaction(sessions) as session:
        first = session.scalars(select(Command)).one()
        first.state = "expired"
        assert resend_stale(session, T0 + 90_000, ISSUER) == []  # offline: nothing yet
        twin = session.get(Twin, "boiler-0003")
        assert twin is not None
        twin.connection = "online"
    with transaction(sessions) as session:
        assert resend_stale(session, T0 + 100_000, ISSUER) == ["boiler-0003"]
        assert resend_stale(session, T0 + 100_001, ISSUER) == []  # the new one is pending
    versions = [c["version"] for c in sent(sessions, "boiler-0003")]
    assert versions == [1, 1]
    with sessions() as session:
        row = session.get(DeviceConfig, "boiler-0003")
        assert row is not None and row.command_id != first.id
        assert config_view(session, "boiler-0003")["state"] == "pending"
