"""Command lifecycle: create (with preconditions), advance on device acks, sweep silence.

States (ARCHITECTURE.md, "Commands"):
``created -> sent -> delivered -> executing -> succeeded | failed | rejected``, and the
cloud's verdicts for silence, ``expired`` (not delivered before ``exp``) and ``timed_out``
(delivered, but no result within ``result_timeout_s`` after ``exp``).

Invariants:

* Every state is stored before anything acts on it; the signed envelope is stored with the
  command, so a resend after a crash is byte-identical and the device's ledger dedups it.
* Acks only move a command forward. ``succeeded``, ``failed`` and ``rejected`` are final.
* ``expired`` and ``timed_out`` are verdicts on silence, not facts: a later signed ack from
  the device says what really happened and wins, except that a ``rejected`` ack whose reason
  is ``expired`` confirms ``expired``. A ``rejected``/``duplicate`` ack (the device saw a
  resend of a command it already has) never changes anything.
* Every change is a thread event naming who or what caused it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cloud import key_proof, thread
from cloud.access import can_see
from cloud.db import transaction
from cloud.domain import Caller, Clock, CommandState, Connectivity, Role, wall_ms
from cloud.errors import (
    CloudError,
    CommandRefused,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
)
from cloud.keys import CommandKey
from cloud.models import Command, Device, Twin
from cloud.settings import CloudSettings
from cloud.twin.read import connectivity
from protocols.cose import seal
from protocols.errors import EncodeError
from protocols.messages import Ack, AckState, CommandName, RejectReason, Scalar
from protocols.messages import Command as CommandMessage
from protocols.reference import BoilerStatus, status_label

log = logging.getLogger(__name__)

RESTART_ROLES = frozenset({Role.SUPPORT, Role.ADMIN})
"""Who may restart any boiler (with a recorded reason). The service platform adds engineers."""
MIN_REASON = 3
NOT_EXECUTED = (CommandState.REJECTED.value, CommandState.EXPIRED.value)
"""Restarts that count against nothing: they were never carried out."""
ACK_STATE = {
    AckState.DELIVERED: CommandState.DELIVERED,
    AckState.EXECUTING: CommandState.EXECUTING,
    AckState.SUCCEEDED: CommandState.SUCCEEDED,
    AckState.FAILED: CommandState.FAILED,
    AckState.REJECTED: CommandState.REJECTED,
}


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """What a caller asks for."""

    name: CommandName
    args: Mapping[str, Scalar] = field(default_factory=dict)
    reason: str = ""
    idempotency_key: str | None = None

    def digest(self, device_id: str) -> str:
        """Identifies the request body, to tell a retry from a reused idempotency key."""
        body = {"device": device_id, "name": str(self.name), "args": dict(self.args)}
        body["reason"] = self.reason.strip()
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


RestartRule = Callable[[Session, Caller, Device, int], str | None]
"""Extra rule letting a caller restart a boiler (the service platform's engineer rule):
None allows it, otherwise the reason it is refused."""


class CommandService:
    """Creates commands and reads them back; the dispatcher sends them."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        key: CommandKey,
        settings: CloudSettings,
        clock: Clock = wall_ms,
        wake: Callable[[], None] | None = None,
        restart_rules: Sequence[RestartRule] = (),
    ) -> None:
        self.sessions = sessions
        self.key = key
        self.settings = settings
        self.clock = clock
        self.wake = wake
        self.restart_rules: tuple[RestartRule, ...] = tuple(restart_rules)
        """Rules letting a role outside `RESTART_ROLES` restart a boiler; any one suffices.
        Given at construction by the composition root (`cloud.serve.restart_rules`)."""

    def get(self, command_id: str) -> Command:
        """One command; `NotFound` if there is none."""
        with self.sessions() as session:
            row = session.get(Command, command_id)
        if row is None:
            raise NotFound(f"no command {command_id}", command_id=command_id)
        return row

    def create(
        self, caller: Caller, device_id: str, request: CommandRequest
    ) -> tuple[Command, bool]:
        """Create, sign and store a command; returns it and whether it is new.

        The same idempotency key with the same body returns the stored command (whatever
        state it is in now); with a different body it is a `Conflict`.
        """
        digest = request.digest(device_id)
        try:
            with transaction(self.sessions) as session:
                existing = self._existing(session, caller, request, digest)
                if existing is not None:
                    return existing, False
                row = self._create(session, caller, device_id, request, digest)
        except IntegrityError:
            # Another request with the same key won the race: answer as a retry.
            with self.sessions() as session:
                existing = self._existing(session, caller, request, digest)
            if existing is None:
                raise
            return existing, False
        log.info("command %s %s for %s created by %s", row.id, row.name, device_id, caller.user_id)
        if self.wake is not None:
            self.wake()
        return row, True

    def _existing(
        self, session: Session, caller: Caller, request: CommandRequest, digest: str
    ) -> Command | None:
        if request.idempotency_key is None:
            return None
        row = session.scalars(
            select(Command).where(
                Command.requested_by == caller.user_id,
                Command.idempotency_key == request.idempotency_key,
            )
        ).first()
        if row is not None and row.request_hash != digest:
            raise Conflict(
                "this Idempotency-Key was already used with a different request body",
                idempotency_key=request.idempotency_key,
                command_id=row.id,
            )
        return row

    def _create(
        self,
        session: Session,
        caller: Caller,
        device_id: str,
        request: CommandRequest,
        digest: str,
    ) -> Command:
        now = self.clock()
        device = session.get(Device, device_id)
        if device is None or not can_see(session, caller, device):
            raise NotFound(f"no boiler {device_id}", device_id=device_id)
        if request.name is not CommandName.RESTART:
            raise CommandRefused(
                f"{request.name} is not supported yet", RejectReason.UNSUPPORTED_COMMAND
            )
        if request.args:
            raise InvalidInput("restart takes no arguments", args=dict(request.args))
        if caller.role in RESTART_ROLES and len(request.reason.strip()) < MIN_REASON:
            # A refusal of this caller's request as it stands, not of its form: the same body
            # from the contracted engineer is fine.
            raise Forbidden("support must record a reason for a restart", field="reason")
        twin = self._check_restart(session, caller, device, now, lock=True)
        return issue(
            session,
            self.key,
            device_id,
            request.name,
            dict(request.args),
            now_ms=now,
            ttl_ms=int(self.settings.command_ttl_s * 1000),
            requested_by=caller.user_id,
            actor=caller.actor,
            reason=request.reason.strip(),
            role=caller.role.value,
            evidence={
                "status": twin.status if twin else None,
                "epoch": twin.epoch if twin else None,
            },
            idempotency_key=request.idempotency_key,
            digest=digest,
        )

    def restart_refusal(self, session: Session, caller: Caller, device: Device) -> str | None:
        """Why `caller` could not restart `device` now (None: they could), without creating
        anything: the same checks `create` makes, for a page to enable or explain its button.
        A reason the caller has yet to type is not checked."""
        try:
            self._check_restart(session, caller, device, self.clock(), lock=False)
        except CloudError as refused:
            return refused.detail
        return None

    def _check_restart(
        self, session: Session, caller: Caller, device: Device, now: int, *, lock: bool
    ) -> Twin | None:
        """Every rule a restart must pass but the reason; the twin it was judged on."""
        self._check_restart_allowed(session, caller, device, now)
        if device.revoked:
            raise CommandRefused(f"boiler {device.id} is revoked", "revoked", device_id=device.id)
        query = select(Twin).where(Twin.device_id == device.id)
        twin = session.scalars(query.with_for_update() if lock else query).first()
        self._check_twin(twin, device.id, now)
        self._check_rate(session, device.id, now)
        return twin

    def _check_restart_allowed(
        self, session: Session, caller: Caller, device: Device, now: int
    ) -> None:
        if caller.role in RESTART_ROLES:
            return
        refusals = [rule(session, caller, device, now) for rule in self.restart_rules]
        if None in refusals:
            return
        why = next((r for r in refusals if r), f"{caller.role.article} may not restart this boiler")
        raise Forbidden(why, role=caller.role.value)

    def _check_twin(self, twin: Twin | None, device_id: str, now: int) -> None:
        state = connectivity(twin, now, int(self.settings.stale_after_s * 1000))
        if state is not Connectivity.ONLINE:
            raise CommandRefused(
                f"boiler {device_id} is {state}: a restart needs it online",
                "not_online",
                device_id=device_id,
                connectivity=state.value,
            )
        assert twin is not None  # online implies a twin
        if twin.status != BoilerStatus.LOCKOUT:
            shown = status_label(twin.status) or twin.status
            raise CommandRefused(
                f"boiler {device_id} is not in lockout (status {shown})",
                RejectReason.NOT_IN_LOCKOUT,
                device_id=device_id,
                status=shown,
            )

    def _check_rate(self, session: Session, device_id: str, now: int) -> None:
        since = now - int(self.settings.restart_window_s * 1000)
        recent = session.scalar(
            select(func.count())
            .select_from(Command)
            .where(
                Command.device_id == device_id,
                Command.name == CommandName.RESTART.value,
                Command.created_ms > since,
                Command.state.not_in(NOT_EXECUTED),
            )
        )
        if (recent or 0) >= self.settings.restart_limit:
            raise RateLimited(
                f"{recent} restarts of {device_id} in the last "
                f"{self.settings.restart_window_s:g} s (limit {self.settings.restart_limit})",
                RejectReason.RATE_LIMITED,
                device_id=device_id,
            )


@dataclass(frozen=True, slots=True)
class Issuer:
    """Who issues the commands the cloud sends on its own (configurations, updates, key
    rotations): the signing key, how long they live, and the actor recorded."""

    key: CommandKey
    ttl_ms: int
    actor: str

    @classmethod
    def under(cls, key: CommandKey, settings: CloudSettings, actor: str) -> Issuer:
        """An issuer with the configured command lifetime (``config_command_ttl_s``)."""
        return cls(key, int(settings.config_command_ttl_s * 1000), actor)

    def issue(
        self,
        session: Session,
        device_id: str,
        name: CommandName,
        args: dict[str, Scalar],
        *,
        now_ms: int,
        reason: str,
        role: str,
    ) -> Command:
        """`issue` under this issuer's key, lifetime and name."""
        return issue(
            session,
            self.key,
            device_id,
            name,
            args,
            now_ms=now_ms,
            ttl_ms=self.ttl_ms,
            requested_by=self.actor,
            actor=self.actor,
            reason=reason,
            role=role,
        )


def issue(
    session: Session,
    key: CommandKey,
    device_id: str,
    name: CommandName,
    args: dict[str, Scalar],
    *,
    now_ms: int,
    ttl_ms: int,
    requested_by: str,
    actor: str,
    reason: str,
    role: str,
    evidence: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    digest: str = "",
) -> Command:
    """Sign and store a command in state ``created`` (the dispatcher sends it), with its
    thread events; whoever calls has checked that it may be issued."""
    message = CommandMessage(
        id=str(uuid.uuid4()),
        dev=device_id,
        name=name,
        args=args,
        iat=now_ms,
        exp=now_ms + ttl_ms,
    )
    row = Command(
        id=message.id,
        device_id=device_id,
        name=str(message.name),
        args=dict(message.args),
        state=CommandState.CREATED.value,
        requested_by=requested_by,
        reason=reason,
        idempotency_key=idempotency_key,
        request_hash=digest,
        kid=key.kid,
        envelope=seal(message, key.key, kid=key.kid),
        iat_ms=message.iat,
        exp_ms=message.exp,
        created_ms=now_ms,
        updated_ms=now_ms,
        publish_attempts=0,
        observed={},
    )
    session.add(row)
    session.flush()  # the idempotency key's unique constraint speaks here
    thread.record(
        session,
        device_id=device_id,
        kind=thread.ThreadKind.COMMAND,
        ts_ms=now_ms,
        recorded_ms=now_ms,
        actor=actor,
        subject=row.id,
        data={
            "name": row.name,
            "args": row.args,
            "reason": row.reason,
            "role": role,
            "exp": row.exp_ms,
            "kid": row.kid,
            "evidence": evidence or {},
        },
    )
    _record_state(session, row, None, CommandState.CREATED, now_ms, now_ms, actor, {})
    return row


def _record_state(
    session: Session,
    row: Command,
    old: CommandState | None,
    new: CommandState,
    ts_ms: int,
    now: int,
    actor: str,
    data: dict[str, Any],
) -> None:
    row.state = new.value
    row.updated_ms = now
    thread.record(
        session,
        device_id=row.device_id,
        kind=thread.ThreadKind.COMMAND_STATE,
        ts_ms=ts_ms,
        recorded_ms=now,
        actor=actor,
        subject=row.id,
        data={"from": old.value if old else None, "to": new.value, **data},
    )


def apply_ack(
    session: Session, ack: Ack, now_ms: int, evidence: Mapping[str, Any] | None = None
) -> str:
    """Advance a command on a verified ack, in the ingest transaction; returns the outcome.

    Outcomes: ``applied``, ``unknown_command``, ``wrong_device``, ``duplicate_ack``,
    ``stale_ack`` (nothing changed).
    """
    row = session.scalars(
        select(Command).where(Command.id == ack.command_id).with_for_update()
    ).first()
    if row is None:
        log.warning("%s: ack for unknown command %s", ack.dev, ack.command_id)
        return "unknown_command"
    if row.device_id != ack.dev:
        log.warning("%s: ack for %s's command %s ignored", ack.dev, row.device_id, row.id)
        return "wrong_device"
    if ack.state is AckState.REJECTED and ack.reason is RejectReason.DUPLICATE:
        return "duplicate_ack"
    old = CommandState(row.state)
    new = ACK_STATE[ack.state]
    if old.final:
        return "stale_ack"
    if old is CommandState.EXPIRED and ack.reason is RejectReason.EXPIRED:
        new = CommandState.EXPIRED  # the device confirms the verdict
    elif not old.verdict and new.rank <= old.rank:
        return "stale_ack"
    data: dict[str, Any] = {"seq": ack.seq, "epoch": ack.epoch, **(evidence or {})}
    if ack.reason is not None:
        data["reason"] = ack.reason.value
        row.result_reason = ack.reason.value
    if ack.observed:
        data["observed"] = dict(ack.observed)
        row.observed = dict(ack.observed)
    if old.verdict:
        data["corrects"] = old.value
    if old is CommandState.CREATED and new is not CommandState.CREATED:
        # The device's ack overtook the dispatcher's own record of the broker's PUBACK (a
        # fast link): the command was sent, or the device would not have it. Record that
        # step too, so every command's thread shows the same lifecycle.
        row.sent_ms = now_ms
        _record_state(
            session, row, old, CommandState.SENT, now_ms, now_ms, "cloud", {"inferred": "ack"}
        )
        old = CommandState.SENT
    if new is old:
        # Evidence only: record it, keep the state.
        thread.record(
            session,
            device_id=row.device_id,
            kind=thread.ThreadKind.COMMAND_STATE,
            ts_ms=ack.ts,
            recorded_ms=now_ms,
            actor=f"device:{ack.dev}",
            subject=row.id,
            data={"from": old.value, "to": new.value, "confirms": True, **data},
        )
        return "applied"
    _record_state(session, row, old, new, ack.ts, now_ms, f"device:{ack.dev}", data)
    log.info("%s: command %s %s -> %s", ack.dev, row.id, old, new)
    if row.name == CommandName.ROTATE_KEY.value and new is CommandState.SUCCEEDED:
        key_proof.accept(session, row, dict(ack.observed), now_ms)
    return "applied"


def mark_sent(session: Session, command_id: str, now_ms: int, reason_code: int) -> bool:
    """Record that the broker accepted the command for delivery; False if it moved on."""
    row = session.scalars(select(Command).where(Command.id == command_id).with_for_update()).first()
    if row is None or row.state != CommandState.CREATED.value:
        return False
    row.sent_ms = now_ms
    _record_state(
        session,
        row,
        CommandState.CREATED,
        CommandState.SENT,
        now_ms,
        now_ms,
        "cloud",
        {"puback": reason_code},
    )
    return True


SWEEP_BATCH = 500
"""Most commands one sweep gives a verdict to (the rest wait for the next sweep)."""


def sweep(session: Session, now_ms: int, settings: CloudSettings) -> list[tuple[str, str]]:
    """Give silence its verdict: ``expired`` and ``timed_out``; returns (id, state) changed."""
    waited_s = settings.result_timeout_s
    verdicts = (
        (
            CommandState.CREATED,
            CommandState.SENT,
            now_ms,
            CommandState.EXPIRED,
            {"because": "not delivered before exp"},
        ),
        (
            CommandState.DELIVERED,
            CommandState.EXECUTING,
            now_ms - int(waited_s * 1000),
            CommandState.TIMED_OUT,
            {"because": "no result from the device", "waited_s": waited_s},
        ),
    )
    changed: list[tuple[str, str]] = []
    for first, second, exp_before, verdict, why in verdicts:
        rows = session.scalars(
            select(Command)
            .where(Command.state.in_((first.value, second.value)), Command.exp_ms <= exp_before)
            .with_for_update()
            .limit(SWEEP_BATCH)
        )
        for row in rows:
            data = {**why, "exp": row.exp_ms} if verdict is CommandState.EXPIRED else dict(why)
            old = CommandState(row.state)
            _record_state(session, row, old, verdict, now_ms, now_ms, "cloud", data)
            changed.append((row.id, row.state))
            log.info("command %s %s", row.id, row.state)
    return changed


def command_json(row: Command) -> dict[str, Any]:
    """API form of a command."""
    return {
        "id": row.id,
        "device_id": row.device_id,
        "name": row.name,
        "args": row.args,
        "state": row.state,
        "final": CommandState(row.state).final,
        "requested_by": row.requested_by,
        "reason": row.reason,
        "idempotency_key": row.idempotency_key,
        "kid": row.kid,
        "iat": row.iat_ms,
        "exp": row.exp_ms,
        "created": row.created_ms,
        "updated": row.updated_ms,
        "sent": row.sent_ms,
        "result_reason": row.result_reason,
        "observed": row.observed,
    }


def validate_request(
    name: str, args: Mapping[str, Any], reason: str, key: str | None
) -> CommandRequest:
    """A `CommandRequest` from API input; `InvalidInput` naming what is wrong."""
    try:
        command_name = CommandName(name)
    except ValueError as exc:
        raise InvalidInput(
            f"unknown command {name!r}; known: {', '.join(CommandName)}", field="name"
        ) from exc
    try:
        CommandMessage(
            id=str(uuid.uuid4()), dev="validate", name=command_name, args=dict(args), iat=1, exp=2
        )
    except EncodeError as exc:
        raise InvalidInput(f"invalid args: {exc}", field="args") from exc
    if key is not None and not 1 <= len(key) <= 200:
        raise InvalidInput("Idempotency-Key must be 1-200 characters", field="Idempotency-Key")
    return CommandRequest(command_name, dict(args), reason, key)
