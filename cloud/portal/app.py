"""The web portal inside the API application: pages, live streams, static files, and error
pages in HTML where the API answers problems in JSON.

`install_portal` adds it to the app `cloud.api.app.create_app` builds, so the portal runs in
the same process, on the same database, users, tokens and role checks as the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from cloud.api.deps import API_PREFIX
from cloud.errors import CloudError
from cloud.portal.feed import ChangeFeed, source_for
from cloud.portal.pages import PAGE_MODULES
from cloud.portal.render import STATIC, page
from cloud.portal.session import LoginRequired, end_session, visitor_if_any

Handler = Callable[[Request, Exception], Awaitable[Response]]
NOT_PORTAL = (API_PREFIX + "/", "/healthz", "/metrics", "/openapi.json", "/docs", "/redoc")
"""Paths whose errors stay JSON problems."""


def is_portal(request: Request) -> bool:
    """Whether `request` is for a portal page (not the API or an ops endpoint)."""
    return not request.url.path.startswith(NOT_PORTAL)


def install_portal(app: FastAPI) -> None:
    """Mount the portal's pages and static files on `app` (after the API's routes), and the
    change feed its live streams share (`cloud.portal.feed`)."""
    context = app.state.context
    source = source_for(
        context.settings.db_url, context.sessions, context.settings.portal_live_poll_s
    )
    app.state.live_feed = ChangeFeed(source)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in PAGE_MODULES:
        app.include_router(module.router)
    for kind in (CloudError, RequestValidationError, HTTPException, Exception):
        api_handler = cast(Handler, app.exception_handlers[kind])
        app.add_exception_handler(kind, _portal_errors(api_handler))


def _portal_errors(api_handler: Handler) -> Handler:
    """Errors on portal pages as pages; everything else to the API's problem handler."""

    async def handler(request: Request, exc: Exception) -> Response:
        if not is_portal(request):
            return await api_handler(request, exc)
        if isinstance(exc, LoginRequired):
            response = RedirectResponse(f"/login?next={quote(exc.next_url)}", status_code=303)
            end_session(response)
            return response
        if isinstance(exc, CloudError):
            status, title, detail = exc.status, exc.title, exc.detail
        elif isinstance(exc, HTTPException):
            status, title, detail = exc.status_code, "Not found", "There is no such page."
            if exc.status_code != 404:
                title, detail = "Error", str(exc.detail)
        elif isinstance(exc, RequestValidationError):
            status, title, detail = 422, "Not a valid address", "Check the link and try again."
        else:
            await api_handler(request, exc)  # logs it
            status, title, detail = 500, "Something went wrong", "Please try again shortly."
        visitor = visitor_if_any(request)
        return page(request, "error.html", visitor, None, status, title=title, detail=detail)

    return handler
