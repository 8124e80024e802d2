"""Log in (OAuth2 password flow), log out, who am I, and user administration."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from cloud.access import require_role
from cloud.api.deps import (
    API_PREFIX,
    CallerDep,
    ContextDep,
    SessionDep,
    TokenDep,
    client_address,
)
from cloud.api.problems import AUTHENTICATED_RESPONSES, PROBLEM_RESPONSES, Unauthorized
from cloud.api.schemas import TokenOut, UserCreate, UserOut
from cloud.auth import create_user, issue_token, revoke_token
from cloud.domain import Role
from cloud.errors import NotFound
from cloud.models import User

log = logging.getLogger(__name__)

router = APIRouter(prefix=API_PREFIX, tags=["auth"], responses=AUTHENTICATED_RESPONSES)

ADMINS = frozenset({Role.ADMIN})


@router.post(
    "/auth/token",
    response_model=TokenOut,
    responses={
        401: PROBLEM_RESPONSES[401],
        429: PROBLEM_RESPONSES[429] | {"description": "Too many failed logins (Retry-After)"},
    },
)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    response: Response,
) -> TokenOut:
    """Exchange a user name and password for a bearer token (401 problem if they are wrong;
    429 with ``Retry-After`` after too many failures for the account or the address)."""
    address = client_address(request)
    user = ctx.throttle.login(session, form.username, form.password, address, channel="api")
    if user is None:
        log.info("login failed for %r", form.username[:64])
        raise Unauthorized("wrong user name or password")
    ttl_ms = int(ctx.settings.token_ttl_s * 1000)
    issued = issue_token(session, user, now_ms=ctx.clock(), ttl_ms=ttl_ms)
    session.commit()
    log.info("user %s logged in", user.id)
    response.headers["Cache-Control"] = "no-store"
    return TokenOut(access_token=issued.token, expires_in=ttl_ms // 1000, role=issued.role)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(token: TokenDep, caller: CallerDep, session: SessionDep) -> Response:
    """Revoke the token this request carries."""
    revoke_token(session, token)
    session.commit()
    log.info("user %s logged out", caller.user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=UserOut)
def me(caller: CallerDep, session: SessionDep) -> UserOut:
    """The logged-in user."""
    user = session.get(User, caller.user_id)
    if user is None:  # deleted while the token was alive
        raise NotFound(f"no user {caller.user_id}", user_id=caller.user_id)
    return _user_out(user)


@router.post(
    "/users",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses={409: PROBLEM_RESPONSES[409] | {"description": "The user id is taken"}},
)
def add_user(body: UserCreate, caller: CallerDep, session: SessionDep, ctx: ContextDep) -> UserOut:
    """Create a user (admins only); 409 if the id is taken."""
    require_role(caller, ADMINS, "create users")
    user = create_user(
        session, body.id, body.password, body.role, body.display_name, now_ms=ctx.clock()
    )
    session.commit()
    log.info("user %s created by %s", user.id, caller.user_id)
    return _user_out(user)


def _user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id, role=Role(user.role), display_name=user.display_name, disabled=user.disabled
    )
