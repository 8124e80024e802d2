"""Log in, log out, and the front door that sends each role to its main page."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cloud.api.deps import ContextDep, SessionDep, client_address
from cloud.auth import caller_for_token, issue_token, revoke_token
from cloud.portal.forms import go
from cloud.portal.render import MAIN_PAGES, page
from cloud.portal.session import (
    SESSION_COOKIE,
    PosterDep,
    check_origin,
    end_session,
    safe_next,
    set_session,
)
from cloud.throttle import LoginThrottled

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


@router.get("/")
def front_door(request: Request, session: SessionDep, ctx: ContextDep) -> Response:
    """The visitor's main page, or the login page."""
    token = request.cookies.get(SESSION_COOKIE)
    caller = caller_for_token(session, token, ctx.clock()) if token else None
    if caller is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(MAIN_PAGES[caller.role], status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> Response:
    """The login form."""
    return page(request, "login.html", None, None, next=safe_next(next), error=None, user="")


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Check the user name and password (as the API's token endpoint does) and start a
    session; the form again, with a message, if they are wrong."""
    check_origin(request)
    address = client_address(request)
    try:
        user = ctx.throttle.login(session, username.strip(), password, address, channel="portal")
    except LoginThrottled as throttled:
        wait = throttled.retry_after_s
        refused = page(
            request,
            "login.html",
            None,
            None,
            429,
            next=safe_next(next),
            error=f"Too many failed attempts. Please wait {wait} seconds and try again.",
            user=username.strip()[:200],
        )
        refused.headers.update(throttled.headers())
        return refused
    if user is None:
        log.info("portal login failed for %r", username[:64])
        return page(
            request,
            "login.html",
            None,
            None,
            401,
            next=safe_next(next),
            error="That user name and password do not match. Please try again.",
            user=username.strip()[:200],
        )
    ttl_ms = int(ctx.settings.token_ttl_s * 1000)
    issued = issue_token(session, user, now_ms=ctx.clock(), ttl_ms=ttl_ms)
    session.commit()
    log.info("user %s logged in to the portal", user.id)
    target = safe_next(next)
    response = go(MAIN_PAGES[issued.role] if target == "/" else target)
    set_session(response, issued.token, ctx.settings.token_ttl_s, ctx.settings.portal_secure_cookie)
    return response


@router.post("/logout")
def logout(request: Request, visitor: PosterDep, session: SessionDep) -> Response:
    """End the session (its token is revoked, as the API's log-out does)."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        revoke_token(session, token)
        session.commit()
    log.info("user %s logged out of the portal", visitor.caller.user_id)
    response = go("/login", "You have logged out.")
    end_session(response)
    return response
