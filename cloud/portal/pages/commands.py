"""Restart (lockout reset) from the portal, and its progress shown live.

The button is the API's ``POST /boilers/{id}/commands``: the same `CommandService.create`,
so the same rules (role, the contracted engineer's window, online, in lockout, the rate
limit). A page shows the button enabled only when `CommandService.restart_refusal` finds
nothing against it, and otherwise says why.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.access import visible_command, visible_device
from cloud.api.deps import ContextDep, SessionDep
from cloud.commands import CommandRequest, command_json
from cloud.domain import Caller, CommandState
from cloud.models import Command
from cloud.portal.feed import command_key
from cloud.portal.forms import act
from cloud.portal.live import Snapshot, live_response
from cloud.portal.render import fragment
from cloud.portal.session import PosterDep, VisitorDep, safe_next
from protocols.messages import CommandName

router = APIRouter(include_in_schema=False)

STEPS = (
    CommandState.CREATED,
    CommandState.SENT,
    CommandState.DELIVERED,
    CommandState.EXECUTING,
    CommandState.SUCCEEDED,
)
"""The road of a restart that works; a page marks how far along it a command is."""


@router.post("/boilers/{device_id}/restart")
def restart(
    device_id: str,
    visitor: PosterDep,
    session: SessionDep,
    ctx: ContextDep,
    reason: Annotated[str, Form(max_length=500)] = "",
    back: Annotated[str, Form(max_length=2000)] = "",
    key: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Request a lockout reset; back to the page it came from, which follows its progress.

    ``key`` (a hidden field, fresh on each page) is the idempotency key, so a double click
    or a resent form makes one command, not two.
    """
    caller = visitor.caller
    visible_device(session, caller, device_id)
    session.rollback()
    target = safe_next(back) if back else f"/boilers/{device_id}"
    request = CommandRequest(CommandName.RESTART, {}, reason, key or None)

    def create() -> tuple[str, str]:
        row, created = ctx.commands.create(caller, device_id, request)
        joiner = "&" if "?" in target else "?"
        said = "Restart requested" if created else "That restart was already requested"
        return f"{target}{joiner}command={row.id}#command", f"{said}: follow it below."

    return act(target, create)


RECENT_MS = 3_600_000
"""A page shows the visitor's own latest restart of a boiler for this long."""


def command_on_page(
    session: Session, caller: Caller, device_id: str, wanted: str | None, now_ms: int
) -> dict[str, object] | None:
    """The command a page follows: `wanted` (from ``?command=``) if it is the visitor's on
    this boiler, else the visitor's latest one of the last hour."""
    query = select(Command).where(
        Command.device_id == device_id, Command.requested_by == caller.user_id
    )
    if wanted:
        row = session.scalars(query.where(Command.id == wanted)).first()
    else:
        row = session.scalars(
            query.where(Command.created_ms > now_ms - RECENT_MS)
            .order_by(Command.created_ms.desc(), Command.id)
            .limit(1)
        ).first()
    return command_view(row) if row is not None else None


def command_view(row: Command) -> dict[str, object]:
    """A command for the progress panel: its API form and the steps reached."""
    body = command_json(row)
    state = CommandState(row.state)
    reached = {s.value for s in STEPS[: STEPS.index(state) + 1]} if state in STEPS else set()
    if state.final and state is not CommandState.SUCCEEDED:
        reached = {s.value for s in STEPS if s.value in _states_passed(row)}
    return body | {"steps": [(s.value, s.value in reached) for s in STEPS]}


def _states_passed(row: Command) -> set[str]:
    """States a command that did not succeed got through (from its timestamps)."""
    passed = {CommandState.CREATED.value}
    if row.sent_ms is not None:
        passed.add(CommandState.SENT.value)
    return passed


def new_key() -> str:
    """A fresh idempotency key for a restart form."""
    return f"portal-{uuid.uuid4()}"


@router.get("/commands/{command_id}/live")
def command_live(
    request: Request, command_id: str, visitor: VisitorDep, session: SessionDep, ctx: ContextDep
) -> Response:
    """A command's progress, again on every state change, until it is final (SSE ``command``)."""
    caller = visitor.caller
    visible_command(session, caller, command_id)
    session.close()

    def look() -> Snapshot:
        with ctx.sessions() as live:
            row = visible_command(live, caller, command_id)
            html = fragment(request, "_command.html", command=command_view(row))
            return Snapshot((row.state, row.updated_ms), html, CommandState(row.state).final)

    return live_response(request, "command", command_key(command_id), look)
