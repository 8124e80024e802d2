"""The command executor's interlocks on an in-memory controller and virtual time.

The live tests (`test_agent_commands.py`) run them against the simulator on a pty through a
real broker; these drive `CommandExecutor` directly through its seams: the `Bus` (a fake
controller holding the reference map's registers), a real outbox and ledger in a temp dir,
and a `FakeClock`, so a 10-second readback takes no time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from edge_agent.commands import CommandExecutor, CommandLedger
from edge_agent.config import CommandSettings
from edge_agent.errors import CommsError
from edge_agent.outbox import Outbox
from edge_agent.store import Store
from protocols.cose import generate_private_key, open_uplink, seal
from protocols.messages import Ack, AckState, Command, CommandName, RejectReason
from protocols.planner import ReadRequest
from protocols.reference import REFERENCE_MAP, RESET_REQUEST, BoilerStatus, FaultCode
from protocols.registers import Table
from protocols.topics import TopicKind, topic
from tests.clocks import FakeClock

DEV = "boiler-0001"
KID = "cloud-test"


class FakeController:
    """The reference controller's state registers; a reset leaves lockout if `repaired`."""

    def __init__(self, status: BoilerStatus, fault: FaultCode = FaultCode.NONE) -> None:
        self.registers: dict[tuple[Table, int], int] = {}
        self.writes: list[tuple[int, int, int | None]] = []
        self.repaired = True
        self.write_fails = False
        self.set("status", int(status))
        self.set("fault_code", int(fault))

    def set(self, name: str, value: int) -> None:
        point = REFERENCE_MAP.point(name)
        self.registers[(point.table, point.address)] = value

    def get(self, name: str) -> int:
        point = REFERENCE_MAP.point(name)
        return self.registers[(point.table, point.address)]

    async def read(self, request: ReadRequest) -> Sequence[int] | Sequence[bool]:
        return [
            self.registers.get((request.table, request.address + i), 0)
            for i in range(request.count)
        ]

    async def write_register(self, address: int, value: int, *, retries: int | None = None) -> None:
        self.writes.append((address, value, retries))
        if self.write_fails:
            raise CommsError("no answer from the controller")
        if address == REFERENCE_MAP.point("reset_request").address and self.repaired:
            self.set("status", int(BoilerStatus.STANDBY))
            self.set("fault_code", 0)


class Rig:
    def __init__(self, directory: Path, controller: FakeController, **settings: float) -> None:
        self.observed: list[tuple[dict[str, object], int]] = []
        self.clock = FakeClock(step=0.5)
        self.device_key = generate_private_key()
        self.cloud_key = generate_private_key()
        wall = lambda: int(self.clock.wall() * 1000)  # noqa: E731
        self.store = Store(directory / "agent.db", wall_ms=wall, device_id=DEV)
        self.outbox = Outbox.open(
            self.store,
            device_id=DEV,
            seal=lambda message: seal(message, self.device_key),
            max_bytes=1 << 20,
            wall_ms=wall,
            clock_trusted=self.clock.trusted,
        )
        self.controller = controller
        self.executor = CommandExecutor(
            device_id=DEV,
            cloud_keys={KID: self.cloud_key.public_key()},
            bus=controller,
            register_map=REFERENCE_MAP,
            outbox=self.outbox,
            ledger=CommandLedger(self.store),
            clock=self.clock,
            settings=CommandSettings(**settings),  # type: ignore[arg-type]
            on_observed=self._on_observed,
        )

    def _on_observed(self, observed: object, ts: int) -> None:
        assert isinstance(observed, dict)
        acks = len(self.outbox.pending(1000))
        self.observed.append((dict(observed), acks))

    def restart(self, ttl_ms: int = 60_000) -> tuple[str, bytes]:
        now = int(self.clock.wall() * 1000)
        command = Command(
            id=str(uuid.uuid4()),
            dev=DEV,
            name=CommandName.RESTART,
            args={},
            iat=now,
            exp=now + ttl_ms,
        )
        return command.id, seal(command, self.cloud_key, kid=KID)

    def acks(self, command_id: str) -> list[Ack]:
        found = []
        for stored in self.outbox.pending(1000):
            message = open_uplink(
                stored.envelope, topic(DEV, TopicKind.ACK), lambda kid: self.device_key.public_key()
            )
            if isinstance(message, Ack) and message.command_id == command_id:
                found.append(message)
        return found

    def states(self, command_id: str) -> list[AckState]:
        return [ack.state for ack in self.acks(command_id)]

    def resets(self) -> int:
        reset = REFERENCE_MAP.point("reset_request").address
        return sum(1 for address, value, _ in self.controller.writes if address == reset)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, FakeController(BoilerStatus.LOCKOUT, FaultCode.F28))
    yield rig
    rig.store.close()


async def test_restart_in_lockout_resets_once_and_reports_the_boiler_running_again(
    rig: Rig,
) -> None:
    command_id, envelope = rig.restart()
    await rig.executor.handle(envelope)
    assert rig.states(command_id) == [AckState.DELIVERED, AckState.EXECUTING, AckState.SUCCEEDED]
    reset = REFERENCE_MAP.point("reset_request").address
    assert rig.controller.writes == [(reset, RESET_REQUEST, 0)], "written once, never retried"
    executing, succeeded = rig.acks(command_id)[1:]
    assert executing.observed["status"] == BoilerStatus.LOCKOUT
    assert succeeded.observed["status"] == BoilerStatus.STANDBY
    assert rig.executor.figures.succeeded == 1
    assert rig.clock.slept == [0.02], "read back after 20 ms, not after a fixed half second"


async def test_not_in_lockout_is_rejected_without_touching_the_boiler(tmp_path: Path) -> None:
    rig = Rig(tmp_path, FakeController(BoilerStatus.RUNNING))
    command_id, envelope = rig.restart()
    await rig.executor.handle(envelope)
    assert rig.states(command_id) == [AckState.DELIVERED, AckState.REJECTED]
    assert rig.acks(command_id)[-1].reason is RejectReason.NOT_IN_LOCKOUT
    assert rig.controller.writes == []
    rig.store.close()


async def test_the_same_envelope_again_is_a_duplicate_and_runs_nothing(rig: Rig) -> None:
    command_id, envelope = rig.restart()
    await rig.executor.handle(envelope)
    rig.controller.set("status", int(BoilerStatus.LOCKOUT))
    await rig.executor.handle(envelope)
    assert rig.acks(command_id)[-1].reason is RejectReason.DUPLICATE
    assert rig.resets() == 1


async def test_a_reset_that_does_not_take_fails_after_the_readback_window(tmp_path: Path) -> None:
    rig = Rig(tmp_path, FakeController(BoilerStatus.LOCKOUT, FaultCode.F28), readback_s=10.0)
    rig.controller.repaired = False
    started = rig.clock.now
    command_id, envelope = rig.restart()
    await rig.executor.handle(envelope)
    assert rig.states(command_id) == [AckState.DELIVERED, AckState.EXECUTING, AckState.FAILED]
    assert rig.acks(command_id)[-1].reason is RejectReason.RESET_FAILED
    assert rig.clock.now - started >= 10.0, "watched for the whole readback window"
    assert rig.clock.slept[:5] == pytest.approx([0.02, 0.04, 0.08, 0.1, 0.1]), "a short backoff"
    assert max(rig.clock.slept) == 0.1 and sum(rig.clock.slept) == pytest.approx(10.0)
    assert rig.resets() == 1, "never written twice"
    rig.store.close()


async def test_a_write_the_controller_did_not_confirm_fails_and_is_not_resent(rig: Rig) -> None:
    rig.controller.write_fails = True
    command_id, envelope = rig.restart()
    await rig.executor.handle(envelope)
    assert rig.acks(command_id)[-1].state is AckState.FAILED
    assert rig.acks(command_id)[-1].reason is RejectReason.COMMS_ERROR
    assert rig.resets() == 1


async def test_resets_are_rate_limited_per_window_on_the_ledger(tmp_path: Path) -> None:
    rig = Rig(tmp_path, FakeController(BoilerStatus.LOCKOUT), max_resets=2, reset_window_s=900.0)
    outcomes = []
    for _ in range(3):
        rig.controller.set("status", int(BoilerStatus.LOCKOUT))
        command_id, envelope = rig.restart()
        await rig.executor.handle(envelope)
        outcomes.append(rig.acks(command_id)[-1])
    assert [a.state for a in outcomes] == [
        AckState.SUCCEEDED,
        AckState.SUCCEEDED,
        AckState.REJECTED,
    ]
    assert outcomes[-1].reason is RejectReason.RATE_LIMITED
    assert rig.resets() == 2
    await rig.clock.sleep(900.0)  # the window has passed
    command_id, envelope = rig.restart()
    await rig.executor.handle(envelope)
    assert rig.acks(command_id)[-1].state is AckState.SUCCEEDED
    rig.store.close()


async def test_an_untrusted_clock_or_an_expired_command_is_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path, FakeController(BoilerStatus.LOCKOUT))
    command_id, envelope = rig.restart(ttl_ms=1_000)
    await rig.clock.sleep(2.0)
    await rig.executor.handle(envelope)
    assert rig.acks(command_id)[-1].state is AckState.REJECTED
    rig.clock._trusted = False
    command_id, envelope = rig.restart()
    await rig.executor.handle(envelope)
    assert rig.acks(command_id)[-1].reason is RejectReason.CLOCK_UNTRUSTED
    assert rig.resets() == 0
    rig.store.close()


async def test_a_forged_command_is_counted_and_never_acknowledged(rig: Rig) -> None:
    now = int(rig.clock.wall() * 1000)
    command = Command(
        id=str(uuid.uuid4()), dev=DEV, name=CommandName.RESTART, args={}, iat=now, exp=now + 60_000
    )
    await rig.executor.handle(seal(command, generate_private_key(), kid=KID))
    assert rig.acks(command.id) == [], "nobody authenticated: no ack naming its id"
    assert sum(rig.executor.figures.rejected.values()) == 1
    assert rig.resets() == 0


async def test_telemetry_hears_what_the_read_back_saw_before_the_success_ack(rig: Rig) -> None:
    """So a relapse before the next poll is still a new lockout (the gateway knows the boiler
    left lockout: it read it)."""
    command_id, envelope = rig.restart()
    await rig.executor.handle(envelope)
    ((observed, acks_before),) = rig.observed
    assert observed["status"] == BoilerStatus.STANDBY
    assert acks_before == 2, "after delivered and executing, before succeeded"
    assert rig.states(command_id)[-1] is AckState.SUCCEEDED
