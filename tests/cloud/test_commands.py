"""Command lifecycle on a real database: preconditions, idempotency, acks, verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from cloud import thread
from cloud.commands import CommandRequest, CommandService, apply_ack, command_json, mark_sent
from cloud.db import make_engine, session_factory, transaction
from cloud.dispatch import Sweeper
from cloud.domain import Caller, CommandState, Role
from cloud.errors import CommandRefused, Conflict, Forbidden, NotFound, RateLimited
from cloud.keys import keygen
from cloud.models import Command, Device, ThreadEvent, Twin, User
from cloud.registry import add_device
from cloud.settings import CloudSettings
from protocols.cose import generate_private_key, open_command
from protocols.messages import Ack, AckState, CommandName, RejectReason
from protocols.reference import BoilerStatus
from tests.clocks import FakeMsClock as Clock

DEV = "boiler-0001"
SUPPORT = Caller("sue", Role.SUPPORT)
T0 = 1_790_000_000_000


@pytest.fixture
def world(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    clock = Clock()
    settings = CloudSettings(db_url=db_url, command_ttl_s=60, result_timeout_s=30)
    key = keygen(tmp_path / "keys", "cloud-test")
    woken: list[int] = []
    service = CommandService(sessions, key, settings, clock, wake=lambda: woken.append(1))
    with transaction(sessions) as session:
        add_device(session, DEV, generate_private_key().public_key(), now_ms=T0, actor="test")
        twin = session.get(Twin, DEV)
        assert twin is not None
        twin.connection = "online"
        twin.last_seen_ms = T0
        twin.status = int(BoilerStatus.LOCKOUT)
    yield service, sessions, clock, woken, key
    engine.dispose()


def restart(reason: str = "F28 repaired on site", key: str | None = None) -> CommandRequest:
    return CommandRequest(CommandName.RESTART, {}, reason, key)


def ack(command_id: str, state: AckState, seq: int, reason: RejectReason | None = None) -> Ack:
    return Ack(
        dev=DEV,
        epoch=1,
        seq=seq,
        ts=T0 + seq,
        sync=True,
        command_id=command_id,
        state=state,
        reason=reason,
        observed={"status": "running"} if state is AckState.SUCCEEDED else {},
    )


def state_of(sessions, command_id: str) -> str:  # type: ignore[no-untyped-def]
    with sessions() as session:
        row = session.get(Command, command_id)
        assert row is not None
        return row.state


def test_support_restart_is_signed_stored_and_threaded(world) -> None:  # type: ignore[no-untyped-def]
    service, sessions, _clock, woken, key = world
    row, created = service.create(SUPPORT, DEV, restart())
    assert created and row.state == "created" and woken == [1]
    # The stored envelope is what the device will verify with the pinned public key.
    command = open_command(row.envelope, DEV, {key.kid: key.key.public_key()}, T0, True)
    assert command.id == row.id and command.exp == T0 + 60_000 and command.name == "restart"
    with sessions() as session:
        events = thread.page(session, DEV, subject=row.id).events
    assert [e.kind for e in events] == ["command", "command_state"]
    assert events[0].actor == "user:sue" and events[0].data["reason"] == "F28 repaired on site"
    assert command_json(row)["state"] == "created"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"status": int(BoilerStatus.RUNNING)}, "not_in_lockout"),
        ({"connection": "offline"}, "not_online"),
        ({"last_seen_ms": T0 - 3_600_000}, "not_online"),  # stale: says online, silent for 1 h
    ],
)
def test_restart_preconditions(world, change, reason) -> None:  # type: ignore[no-untyped-def]
    service, sessions, *_ = world
    with transaction(sessions) as session:
        twin = session.get(Twin, DEV)
        for name, value in change.items():
            setattr(twin, name, value)
    with pytest.raises(CommandRefused) as error:
        service.create(SUPPORT, DEV, restart())
    assert error.value.reason == reason
    with sessions() as session:
        assert session.scalars(select(Command)).first() is None


def test_roles_and_reason(world) -> None:  # type: ignore[no-untyped-def]
    service, sessions, *_ = world
    with transaction(sessions) as session:
        session.add(User(id="olga", password_hash="x", role="owner", created_ms=T0))
        session.flush()
        session.get(Device, DEV).owner_id = "olga"  # type: ignore[union-attr]
    with pytest.raises(Forbidden):  # the owner sees the boiler but may not restart it
        service.create(Caller("olga", Role.OWNER), DEV, restart())
    with pytest.raises(NotFound):  # no engineer is invited or contracted yet
        service.create(Caller("eve", Role.ENGINEER), DEV, restart())
    with pytest.raises(NotFound):  # a tenant who is not this boiler's does not learn it exists
        service.create(Caller("tom", Role.TENANT), DEV, restart())
    with pytest.raises(Forbidden, match="support must record a reason"):
        service.create(SUPPORT, DEV, restart(reason="  "))
    with pytest.raises(NotFound):
        service.create(SUPPORT, "boiler-9999", restart())
    with pytest.raises(CommandRefused) as error:
        service.create(SUPPORT, DEV, CommandRequest(CommandName.SET_SETPOINT, {"ch": 60}, "x y z"))
    assert error.value.reason == "unsupported_command"


def test_rate_limit_counts_executed_restarts_in_window(world) -> None:  # type: ignore[no-untyped-def]
    service, sessions, clock, *_ = world
    ids = []
    for _ in range(5):
        row, _ = service.create(SUPPORT, DEV, restart())
        ids.append(row.id)
        clock.now += 1000
    with pytest.raises(RateLimited):
        service.create(SUPPORT, DEV, restart())
    # A restart the device rejected was never carried out: it frees its slot.
    with transaction(sessions) as session:
        apply_ack(
            session, ack(ids[0], AckState.REJECTED, 1, RejectReason.NOT_IN_LOCKOUT), clock.now
        )
    service.create(SUPPORT, DEV, restart())
    # And the window slides.
    clock.now += 900_000
    with transaction(sessions) as session:
        session.get(Twin, DEV).last_seen_ms = clock.now  # type: ignore[union-attr]
    service.create(SUPPORT, DEV, restart())


def test_idempotency_key(world) -> None:  # type: ignore[no-untyped-def]
    service, sessions, *_ = world
    first, created = service.create(SUPPORT, DEV, restart(key="k-1"))
    again, created_again = service.create(SUPPORT, DEV, restart(key="k-1"))
    assert created and not created_again and again.id == first.id
    with pytest.raises(Conflict):
        service.create(SUPPORT, DEV, restart(reason="another reason", key="k-1"))
    # A replay still answers after the boiler has left lockout (it is the same command).
    with transaction(sessions) as session:
        session.get(Twin, DEV).status = int(BoilerStatus.RUNNING)  # type: ignore[union-attr]
    assert service.create(SUPPORT, DEV, restart(key="k-1"))[0].id == first.id
    # Keys are per user.
    with transaction(sessions) as session:
        session.get(Twin, DEV).status = int(BoilerStatus.LOCKOUT)  # type: ignore[union-attr]
    other, created_other = service.create(Caller("sam", Role.SUPPORT), DEV, restart(key="k-1"))
    assert created_other and other.id != first.id


def test_acks_move_forward_only(world) -> None:  # type: ignore[no-untyped-def]
    service, sessions, clock, *_ = world
    row, _ = service.create(SUPPORT, DEV, restart())
    with transaction(sessions) as session:
        assert mark_sent(session, row.id, clock.now, 0)
        assert not mark_sent(session, row.id, clock.now, 0)
    outcomes = []
    for seq, state in enumerate(
        [AckState.DELIVERED, AckState.EXECUTING, AckState.DELIVERED, AckState.SUCCEEDED], 1
    ):
        with transaction(sessions) as session:
            outcomes.append(apply_ack(session, ack(row.id, state, seq), clock.now))
    assert outcomes == ["applied", "applied", "stale_ack", "applied"]
    # A resend seen by the device's ledger never overrides the outcome.
    with transaction(sessions) as session:
        dup = ack(row.id, AckState.REJECTED, 9, RejectReason.DUPLICATE)
        assert apply_ack(session, dup, clock.now) == "duplicate_ack"
        late = ack(row.id, AckState.FAILED, 10, RejectReason.RESET_FAILED)
        assert apply_ack(session, late, clock.now) == "stale_ack"
    assert state_of(sessions, row.id) == "succeeded"
    with sessions() as session:
        states = [
            (e.data["from"], e.data["to"], e.actor)
            for e in thread.page(session, DEV, kinds=["command_state"]).events
        ]
        row2 = session.get(Command, row.id)
    assert states == [
        (None, "created", "user:sue"),
        ("created", "sent", "cloud"),
        ("sent", "delivered", f"device:{DEV}"),
        ("delivered", "executing", f"device:{DEV}"),
        ("executing", "succeeded", f"device:{DEV}"),
    ]
    assert row2 is not None and row2.observed == {"status": "running"}


def test_ack_from_another_device_or_for_unknown_command_changes_nothing(world) -> None:  # type: ignore[no-untyped-def]
    service, sessions, clock, *_ = world
    row, _ = service.create(SUPPORT, DEV, restart())
    with transaction(sessions) as session:
        add_device(session, "boiler-0002", generate_private_key().public_key(), now_ms=T0)
    foreign = Ack(
        dev="boiler-0002",
        epoch=1,
        seq=1,
        ts=T0,
        sync=True,
        command_id=row.id,
        state=AckState.SUCCEEDED,
    )
    with transaction(sessions) as session:
        assert apply_ack(session, foreign, clock.now) == "wrong_device"
        unknown = ack("00000000-0000-4000-8000-000000000000", AckState.DELIVERED, 2)
        assert apply_ack(session, unknown, clock.now) == "unknown_command"
    assert state_of(sessions, row.id) == "created"


def test_sweeper_verdicts_and_their_correction(world) -> None:  # type: ignore[no-untyped-def]
    service, sessions, clock, _, _ = world
    settings = service.settings
    sweeper = Sweeper(sessions, settings, clock)
    never, _ = service.create(SUPPORT, DEV, restart())
    silent, _ = service.create(SUPPORT, DEV, restart())
    late, _ = service.create(SUPPORT, DEV, restart())
    with transaction(sessions) as session:
        apply_ack(session, ack(silent.id, AckState.DELIVERED, 1), clock.now)
        apply_ack(session, ack(late.id, AckState.EXECUTING, 2), clock.now)
    clock.now = never.exp_ms - 1
    assert sweeper.sweep_once() == []
    clock.now = never.exp_ms
    assert sweeper.sweep_once() == [(never.id, "expired")]
    clock.now = never.exp_ms + 30_000
    assert sorted(sweeper.sweep_once()) == sorted(
        [(silent.id, "timed_out"), (late.id, "timed_out")]
    )
    assert sweeper.sweep_once() == []
    with transaction(sessions) as session:
        # The device confirms it never ran the expired one: it stays expired.
        confirm = ack(never.id, AckState.REJECTED, 3, RejectReason.EXPIRED)
        assert apply_ack(session, confirm, clock.now) == "applied"
        # A result that arrives after the timeout verdict is the truth and wins.
        assert apply_ack(session, ack(late.id, AckState.SUCCEEDED, 4), clock.now) == "applied"
    assert state_of(sessions, never.id) == "expired"
    assert state_of(sessions, late.id) == "succeeded"
    assert state_of(sessions, silent.id) == "timed_out"
    with sessions() as session:
        correction = session.scalars(
            select(ThreadEvent)
            .where(ThreadEvent.subject == late.id)
            .order_by(ThreadEvent.id.desc())
        ).first()
    assert correction is not None and correction.data["corrects"] == "timed_out"


def test_state_is_shared_by_every_process(world, db_url: str) -> None:  # type: ignore[no-untyped-def]
    service, _, clock, _, key = world
    row, _ = service.create(SUPPORT, DEV, restart(key="same"))
    # A second API process (new engine, new service) sees the same command and key.
    engine = make_engine(db_url)
    other = CommandService(session_factory(engine), key, service.settings, clock)
    assert other.get(row.id).state == CommandState.CREATED
    assert other.create(SUPPORT, DEV, restart(key="same"))[0].id == row.id
    engine.dispose()


def test_an_ack_that_overtakes_the_puback_record_still_shows_the_send(world) -> None:  # type: ignore[no-untyped-def]
    """On a fast link the device's ``delivered`` can be ingested before the dispatcher records
    the broker's PUBACK: the thread still shows created -> sent -> delivered, once each."""
    service, sessions, clock, *_ = world
    row, _ = service.create(SUPPORT, DEV, restart())
    with transaction(sessions) as session:
        assert apply_ack(session, ack(row.id, AckState.DELIVERED, 1), clock.now) == "applied"
    with transaction(sessions) as session:
        assert not mark_sent(session, row.id, clock.now, 0), "already past sent"
    with sessions() as session:
        states = [
            (e.data["from"], e.data["to"], e.actor)
            for e in thread.page(session, DEV, kinds=["command_state"]).events
        ]
        sent_ms = session.get(Command, row.id).sent_ms  # type: ignore[union-attr]
    assert states == [
        (None, "created", "user:sue"),
        ("created", "sent", "cloud"),
        ("sent", "delivered", f"device:{DEV}"),
    ]
    assert sent_ms == clock.now
