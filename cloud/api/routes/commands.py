"""Commands: request one for a boiler (idempotently), follow it, list a boiler's recent ones.

``POST /boilers/{id}/commands`` answers **202 Accepted** with the new command and a
``Location``; replaying the same ``Idempotency-Key`` with the same body answers **200 OK**
with the command as it is now (same ``Location``); the same key with a different body is a
409 problem. Without a key every POST is a new command.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select

from cloud.access import visible_command, visible_device
from cloud.api.deps import API_PREFIX, CallerDep, ContextDep, SessionDep
from cloud.api.problems import AUTHENTICATED_RESPONSES, PROBLEM_RESPONSES
from cloud.api.schemas import CommandBody
from cloud.commands import command_json, validate_request
from cloud.models import Command

router = APIRouter(prefix=API_PREFIX, tags=["commands"], responses=AUTHENTICATED_RESPONSES)

_CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Idempotent replay: the command created earlier with this key"},
    202: {"description": "Command created; it is sent to the boiler asynchronously"},
    409: PROBLEM_RESPONSES[404] | {"description": "Refused, or key reused with another body"},
    429: PROBLEM_RESPONSES[404] | {"description": "Remote-reset limit reached"},
}


def location(command_id: str) -> str:
    """Where a command can be read back."""
    return f"{API_PREFIX}/commands/{command_id}"


@router.post("/boilers/{device_id}/commands", status_code=202, responses=_CREATE_RESPONSES)
def create_command(
    device_id: str,
    body: CommandBody,
    caller: CallerDep,
    session: SessionDep,
    ctx: ContextDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> Response:
    """Request a command (``restart`` = lockout reset) with the reason for it."""
    visible_device(session, caller, device_id)
    session.rollback()  # the service writes in its own transaction; hold no snapshot open
    request = validate_request(body.name, body.args, body.reason, idempotency_key)
    row, created = ctx.commands.create(caller, device_id, request)
    return JSONResponse(
        command_json(row),
        status_code=202 if created else 200,
        headers={"Location": location(row.id)},
    )


@router.get("/boilers/{device_id}/commands")
def list_commands(
    device_id: str,
    caller: CallerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """The boiler's most recent commands, newest first."""
    device = visible_device(session, caller, device_id)
    rows = session.scalars(
        select(Command)
        .where(Command.device_id == device.id)
        .order_by(Command.created_ms.desc(), Command.id)
        .limit(limit)
    )
    return {"items": [command_json(row) for row in rows]}


@router.get("/commands/{command_id}")
def get_command(
    command_id: str, caller: CallerDep, session: SessionDep, ctx: ContextDep
) -> dict[str, Any]:
    """One command, if the caller may see its boiler."""
    return command_json(visible_command(session, caller, command_id))
