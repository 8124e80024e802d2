"""Request dependencies: the app's context, a database session, the authenticated caller."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session, sessionmaker

from cloud.api.problems import Unauthorized
from cloud.auth import caller_for_token
from cloud.commands import CommandService, Issuer
from cloud.domain import Caller, Clock
from cloud.rollouts import Publisher
from cloud.service.platform import ServicePlatform
from cloud.settings import CloudSettings
from cloud.throttle import Throttle

API_PREFIX = "/api/v1"
"""Every API route lives under this (routers carry it, so metrics see full templates)."""
TOKEN_URL = f"{API_PREFIX}/auth/token"


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What every request handler may use; built once by `create_app`."""

    settings: CloudSettings
    sessions: sessionmaker[Session]
    commands: CommandService
    clock: Clock
    platform: ServicePlatform
    throttle: Throttle

    def issuer(self, actor: str) -> Issuer:
        """Commands the cloud issues for `actor` (configurations, key rotations)."""
        return Issuer.under(self.commands.key, self.settings, actor)

    def publisher(self, actor: str) -> Publisher:
        """Update and rollback commands for `actor`, with the artifacts' address."""
        return Publisher.under(self.commands.key, self.settings, actor)


def context(request: Request) -> ApiContext:
    """The app's `ApiContext`."""
    return cast(ApiContext, request.app.state.context)


ContextDep = Annotated[ApiContext, Depends(context)]


def db_session(ctx: ContextDep) -> Iterator[Session]:
    """One session per request; handlers that write commit it, anything else is rolled back."""
    with ctx.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(db_session)]

bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL)
TokenDep = Annotated[str, Depends(bearer)]


def current_caller(
    request: Request, token: TokenDep, session: SessionDep, ctx: ContextDep
) -> Caller:
    """The caller the request's bearer token stands for; 401 if none. Left in
    ``request.state.caller`` for the audit log (`cloud.api.audit`)."""
    caller = caller_for_token(session, token, ctx.clock())
    if caller is None:
        raise Unauthorized("the access token is unknown or has expired")
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]


def client_address(request: Request) -> str:
    """The client's address: the connecting peer, or what a trusted proxy says
    (``forwarded_allow_ips``; uvicorn applies it before the request gets here)."""
    return request.client.host if request.client is not None else "unknown"
