"""Commands from the cloud, and the interlocks that keep a remote restart safe.

Order of checks for every command (ARCHITECTURE.md, "Commands"); the first that fails
rejects it with a machine-readable reason and it is never executed:

1. the envelope verifies with a pinned cloud key (else no ack at all: an unauthenticated
   id is not worth acknowledging, only counting);
2. ``dev`` is this device; the clock is trusted; ``exp`` has not passed;
3. the id is not in the persisted ledger (the ledger entry is committed together with the
   ``delivered`` ack, before anything is done, so nothing runs twice even across a crash);
4. for ``restart``: the boiler is in lockout, read live over Modbus just before acting, and
   fewer than `max_resets` resets were written in the last `reset_window_s` (persisted).

Then the reset is logged, ``executing`` is acked, the reset register is written and the
state read back until the boiler leaves lockout or `readback_s` runs out: ``succeeded`` or
``failed`` with the observed state. Every ack goes through the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.clock import Clock, wall_ms
from edge_agent.config import CommandSettings
from edge_agent.errors import CommsError
from edge_agent.outbox import Outbox
from edge_agent.poller import Bus
from edge_agent.store import Store
from protocols.cose import open_command, verify
from protocols.errors import ProtocolError, RemoteProtocolError
from protocols.messages import Ack, AckState, Command, CommandName, RejectReason, Scalar
from protocols.planner import ReadRequest, plan_reads
from protocols.reference import RESET_REQUEST, STATE_POINTS, BoilerStatus
from protocols.registers import RegisterMap
from protocols.wire import decode_payload

log = logging.getLogger(__name__)

READBACK_FIRST_S = 0.02
READBACK_MAX_S = 0.1
"""Read-back after a reset: first after 20 ms, doubling up to 0.1 s, until `readback_s`. The
boiler usually leaves lockout within a poll or two of the reset; a fixed 0.5 s wait was most of
a restart's round trip, and steps growing to 0.5 s could still add a few hundred ms to it.
At 0.1 s a restart costs at most ten reads a second on the bus for a few seconds."""
RESET_POINT = "reset_request"


class CommandLedger:
    """Command ids ever received, and the times resets were written; both persisted."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def seen(self, command_id: str) -> bool:
        """Whether this id was received before."""
        return bool(self._store.query("SELECT 1 FROM ledger WHERE command_id = ?", (command_id,)))

    def record(self, command: Command, now_ms: int) -> None:
        """Remember the id (durable with the next commit: the ``delivered`` ack's)."""
        self._store.execute(
            "INSERT INTO ledger(command_id, received_ms, name) VALUES (?, ?, ?)",
            (command.id, now_ms, command.name.value),
        )

    def resets_since(self, since_ms: int) -> int:
        """Resets written at or after `since_ms`."""
        rows = self._store.query("SELECT count(*) FROM resets WHERE ts_ms >= ?", (since_ms,))
        return int(rows[0][0])

    def record_reset(self, now_ms: int) -> None:
        """Log a reset (durable with the next commit: the ``executing`` ack's)."""
        self._store.execute("INSERT INTO resets(ts_ms) VALUES (?)", (now_ms,))


@dataclass(slots=True)
class CommandFigures:
    """Counters reported in ``health``."""

    received: int = 0
    succeeded: int = 0
    failed: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class Rejected(Exception):
    """An interlock refused the command (internal control flow of `CommandExecutor`)."""

    def __init__(self, reason: RejectReason, observed: Mapping[str, Scalar] | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.observed = dict(observed or {})


class InProgress(Exception):
    """A handler's command goes on elsewhere (an update, in the release it switched to):
    ack ``executing`` with `observed`, and no outcome yet."""

    def __init__(self, observed: Mapping[str, Scalar]) -> None:
        super().__init__("in progress")
        self.observed = dict(observed)


Handler = Callable[[Command], Awaitable[dict[str, Scalar]]]
"""Runs one kind of command: what to ack ``succeeded`` with, or `Rejected`."""


class CommandExecutor:
    """Verifies, checks and runs commands for one device, one at a time."""

    def __init__(
        self,
        *,
        device_id: str,
        cloud_keys: Mapping[str, Ed25519PublicKey],
        bus: Bus,
        register_map: RegisterMap,
        outbox: Outbox,
        ledger: CommandLedger,
        clock: Clock,
        settings: CommandSettings,
        on_observed: Callable[[Mapping[str, Scalar], int], None] = lambda observed, ts: None,
        handlers: Mapping[CommandName, Handler] | None = None,
        on_succeeded: Callable[[Command], None] = lambda command: None,
    ) -> None:
        self.device_id = device_id
        self._handlers = dict(handlers or {})
        """Commands other than ``restart`` this agent runs (``configure``, ...): each returns
        what to ack ``succeeded`` with, or raises `Rejected`."""
        self._on_succeeded = on_succeeded
        """Told after such a command's ``succeeded`` ack is stored (to act on it then)."""
        self._on_observed = on_observed
        """Told what a reset's read-back saw (with its wall ms), before the ``succeeded`` ack:
        telemetry then knows the boiler left lockout, so a relapse is a new lockout event
        even when it comes before the next poll."""
        self._keys = cloud_keys
        """The pinned keys, shared with the agent (a ``pin_keys`` command changes them)."""
        self._bus = bus
        self._map = register_map
        self._outbox = outbox
        self._ledger = ledger
        self._clock = clock
        self._settings = settings
        self.figures = CommandFigures()
        names = {p.name for p in register_map.points}
        self.can_restart = all(n in names for n in (*STATE_POINTS, RESET_POINT))
        self._state_reads: tuple[ReadRequest, ...] = (
            plan_reads(register_map.select(STATE_POINTS), blocks=register_map.blocks)
            if self.can_restart
            else ()
        )

    @property
    def capabilities(self) -> tuple[str, ...]:
        """Command names this agent executes (announced in ``birth``)."""
        names = [CommandName.RESTART.value] if self.can_restart else []
        return (*names, *(name.value for name in self._handlers))

    async def handle(self, envelope: bytes) -> None:
        """Process one envelope received on the ``cmd`` topic; never raises for bad input."""
        self.figures.received += 1
        now = wall_ms(self._clock)
        try:
            command = open_command(envelope, self.device_id, self._keys, now, self._clock.trusted())
        except RemoteProtocolError as exc:
            reason = RejectReason.for_error(exc)
            self._count(reason)
            command_id = self._authenticated_id(envelope)
            log.warning("%s: command %s rejected (%s): %s", self.device_id, command_id, reason, exc)
            if command_id is not None:
                self._ack(command_id, AckState.REJECTED, reason)
            return
        if self._ledger.seen(command.id):
            self._count(RejectReason.DUPLICATE)
            log.warning(
                "%s: command %s already received: not run again", self.device_id, command.id
            )
            self._ack(command.id, AckState.REJECTED, RejectReason.DUPLICATE)
            return
        self._ledger.record(command, now)
        self._ack(command.id, AckState.DELIVERED)  # commits the ledger entry with it
        log.info("%s: command %s %s delivered", self.device_id, command.name, command.id)
        try:
            handler = self._handlers.get(command.name)
            if handler is not None:
                try:
                    observed = await handler(command)
                except InProgress as going:
                    self._ack(command.id, AckState.EXECUTING, observed=going.observed)
                    return
                self.figures.succeeded += 1
                self._ack(command.id, AckState.SUCCEEDED, observed=observed)
                self._on_succeeded(command)
                return
            if command.name is not CommandName.RESTART or not self.can_restart:
                raise Rejected(RejectReason.UNSUPPORTED_COMMAND)
            await self._restart(command)
        except Rejected as rejection:
            self._count(rejection.reason)
            log.warning(
                "%s: command %s rejected: %s %s",
                self.device_id,
                command.id,
                rejection.reason,
                rejection.observed,
            )
            self._ack(command.id, AckState.REJECTED, rejection.reason, rejection.observed)

    def report(
        self,
        command_id: str,
        state: AckState,
        reason: RejectReason | None = None,
        observed: Mapping[str, Scalar] | None = None,
    ) -> None:
        """Ack the outcome of a command an earlier run began (an update, after the switch)."""
        if state is AckState.SUCCEEDED:
            self.figures.succeeded += 1
        elif state is AckState.FAILED:
            self.figures.failed += 1
        self._ack(command_id, state, reason, observed)

    def _authenticated_id(self, envelope: bytes) -> str | None:
        """The id of a command whose signature verifies (rejected for another reason)."""
        try:
            payload = decode_payload(verify(envelope, self._keys).payload)
        except ProtocolError:
            return None
        return payload.id if isinstance(payload, Command) else None

    async def _restart(self, command: Command) -> None:
        observed = await self._observe()
        if observed.get("status") != BoilerStatus.LOCKOUT:
            raise Rejected(RejectReason.NOT_IN_LOCKOUT, observed)
        now = wall_ms(self._clock)
        if not self._clock.trusted():
            raise Rejected(RejectReason.CLOCK_UNTRUSTED, observed)
        if command.exp <= now:
            raise Rejected(RejectReason.EXPIRED, observed)
        window_ms = int(self._settings.reset_window_s * 1000)
        if self._ledger.resets_since(now - window_ms) >= self._settings.max_resets:
            raise Rejected(RejectReason.RATE_LIMITED, observed)
        self._ledger.record_reset(now)
        self._ack(command.id, AckState.EXECUTING, observed=observed)  # commits the reset log
        log.warning("%s: command %s: writing lockout reset", self.device_id, command.id)
        try:
            # never re-sent: a reset whose reply was lost may have been acted on
            await self._bus.write_register(
                self._map.point(RESET_POINT).address, RESET_REQUEST, retries=0
            )
        except CommsError as exc:
            self._fail(command, RejectReason.COMMS_ERROR, {"error": str(exc)})
            return
        deadline = self._clock.monotonic() + self._settings.readback_s
        wait = READBACK_FIRST_S
        while True:
            await self._clock.sleep(min(wait, max(0.0, deadline - self._clock.monotonic())))
            wait = min(wait * 2, READBACK_MAX_S)
            try:
                observed = await self._observe()
            except Rejected:
                observed = {}
            if observed and observed.get("status") != BoilerStatus.LOCKOUT:
                self._on_observed(observed, wall_ms(self._clock))
                self.figures.succeeded += 1
                log.info("%s: command %s succeeded: %s", self.device_id, command.id, observed)
                self._ack(command.id, AckState.SUCCEEDED, observed=observed)
                return
            if self._clock.monotonic() >= deadline:
                self._fail(command, RejectReason.RESET_FAILED, observed)
                return

    def _fail(self, command: Command, reason: RejectReason, observed: Mapping[str, Scalar]) -> None:
        self.figures.failed += 1
        log.error("%s: command %s failed (%s): %s", self.device_id, command.id, reason, observed)
        self._ack(command.id, AckState.FAILED, reason, observed)

    async def _observe(self) -> dict[str, Scalar]:
        """Status and fault code, read live."""
        observed: dict[str, Scalar] = {}
        try:
            for request in self._state_reads:
                raw = await self._bus.read(request)
                for name, value in request.decode(raw, self._map.word_order).items():
                    if isinstance(value, bool | int | float | str):
                        observed[name] = value
        except (CommsError, ProtocolError) as exc:
            raise Rejected(RejectReason.COMMS_ERROR, {"error": str(exc)}) from exc
        return observed

    def _count(self, reason: RejectReason) -> None:
        self.figures.rejected[reason.value] = self.figures.rejected.get(reason.value, 0) + 1

    def _ack(
        self,
        command_id: str,
        state: AckState,
        reason: RejectReason | None = None,
        observed: Mapping[str, Scalar] | None = None,
    ) -> None:
        self._outbox.append(
            Ack(
                dev=self.device_id,
                epoch=0,
                seq=0,
                ts=wall_ms(self._clock),
                sync=self._clock.trusted(),
                command_id=command_id,
                state=state,
                reason=reason,
                observed=dict(observed or {}),
            )
        )
