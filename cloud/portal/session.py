"""Who is at the browser: the session cookie, the form token against cross-site posts, and
one-shot messages shown on the next page.

The portal's session is an ordinary API token (`cloud.auth.issue_token`), kept in an
HttpOnly, SameSite=Strict cookie, so a portal user is exactly the API's caller: same users,
same expiry, same revocation (a password change ends both). Every form carries a token
derived from the session token (``csrf``); a POST without the right one is refused, as is a
POST whose ``Origin`` names another site.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, unquote, urlsplit

from fastapi import Depends, Request, Response

from cloud.api.deps import ContextDep, SessionDep
from cloud.auth import caller_for_token
from cloud.domain import Caller
from cloud.errors import CloudError, Forbidden

SESSION_COOKIE = "bt_session"
FLASH_COOKIE = "bt_flash"
FLASH_MAX = 300
"""A flash message longer than this is cut (cookies are small)."""


class LoginRequired(CloudError):
    """No valid session: the browser is sent to the login page, then back to `next_url`."""

    status = 401
    title = "Login required"

    def __init__(self, next_url: str) -> None:
        super().__init__("please log in", next_url=next_url)
        self.next_url = next_url


@dataclass(frozen=True, slots=True)
class Visitor:
    """A logged-in portal user: the API caller, and the form token of their session."""

    caller: Caller
    csrf: str


def csrf_for(token: str) -> str:
    """The form token of a session: a one-way function of the session token."""
    return hashlib.sha256(b"bt-portal-csrf\0" + token.encode()).hexdigest()[:32]


def safe_next(target: str | None) -> str:
    """`target` if it is a path on this site, else ``/`` (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return "/"
    return target


def current_visitor(request: Request, session: SessionDep, ctx: ContextDep) -> Visitor:
    """The visitor the session cookie stands for; `LoginRequired` if none is valid."""
    token = request.cookies.get(SESSION_COOKIE)
    caller = caller_for_token(session, token, ctx.clock()) if token else None
    if caller is None or token is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(safe_next(target) if request.method == "GET" else "/")
    request.state.caller = caller  # for the audit log
    return Visitor(caller, csrf_for(token))


VisitorDep = Annotated[Visitor, Depends(current_visitor)]


def visitor_if_any(request: Request) -> Visitor | None:
    """The logged-in visitor of a request that failed (for an error page that keeps the
    navigation); None if there is none or it cannot be told (the error may be the database)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    ctx = request.app.state.context
    try:
        with ctx.sessions() as session:
            caller = caller_for_token(session, token, ctx.clock())
    except Exception:
        return None
    return Visitor(caller, csrf_for(token)) if caller is not None else None


async def posting_visitor(request: Request, visitor: VisitorDep) -> Visitor:
    """`current_visitor` for a form POST: same-site origin and the right form token."""
    check_origin(request)
    form = await request.form()
    sent = form.get("csrf")
    if not isinstance(sent, str) or not hmac.compare_digest(sent, visitor.csrf):
        raise Forbidden("this form has expired; reload the page and try again")
    return visitor


PosterDep = Annotated[Visitor, Depends(posting_visitor)]


def check_origin(request: Request) -> None:
    """Refuse a POST that a page on another site sent (``Origin`` is sent by browsers).

    ``Origin: null`` is refused too: browsers send it from sandboxed frames, ``data:`` and
    ``file:`` pages and after cross-site redirects, none of which is this portal. A request
    without ``Origin`` (not a browser, or a very old one) still needs the form token."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc != host:
        raise Forbidden("cross-site form posts are refused")


def set_session(response: Response, token: str, max_age_s: float, secure: bool) -> None:
    """Keep `token` in the browser for `max_age_s`."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(max_age_s),
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )


def end_session(response: Response) -> None:
    """Forget the session cookie."""
    response.delete_cookie(SESSION_COOKIE, path="/")


def flash(response: Response, message: str, level: str = "info") -> None:
    """Show `message` once, on the next page the browser opens."""
    text = f"{level}:{message[:FLASH_MAX]}"
    response.set_cookie(FLASH_COOKIE, quote(text), httponly=True, samesite="strict", path="/")


def take_flash(request: Request) -> tuple[str, str] | None:
    """The pending one-shot message as (level, text), if any (the caller deletes the cookie)."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    level, _, text = unquote(raw).partition(":")
    if level not in ("info", "error"):
        return None
    return level, text
