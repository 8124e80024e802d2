"""Every error answer is an RFC 9457 problem (``application/problem+json``).

Body: ``type``, ``title``, ``status``, ``detail`` and the error's context as extension
members. Errors the cloud raises on purpose (`CloudError`) get the type
``urn:boilertwin:problem:<kebab-case class name>`` (e.g. ``...:command-refused``) and their
own status; plain HTTP errors and request validation use ``about:blank``. A context key that
would shadow a standard member is moved under ``context``. Unexpected exceptions become a
bare 500 whose body says nothing about the internals; they are logged with the traceback.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from cloud.errors import CloudError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:boilertwin:problem:"
_STANDARD = frozenset({"type", "title", "status", "detail", "instance"})


class Unauthorized(CloudError):
    """No valid credentials: missing, unknown or expired token, or a failed login."""

    status = 401
    title = "Unauthorized"


class Problem(BaseModel):
    """RFC 9457 problem details (the schema OpenAPI shows for error answers)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "content": {PROBLEM_JSON: {"schema": Problem.model_json_schema()}},
        "description": HTTPStatus(code).phrase,
    }
    for code in (400, 401, 403, 404, 409, 412, 422, 428, 429, 503)
}
"""Problem answers by status, for the OpenAPI document."""
AUTHENTICATED_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: PROBLEM_RESPONSES[code] for code in (401, 403, 404, 422)
}
"""Error answers every authenticated route may give."""


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    headers: Mapping[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> JSONResponse:
    """A problem answer; ``WWW-Authenticate: Bearer`` is added to every 401."""
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    moved: dict[str, Any] = {}
    for key, value in (extensions or {}).items():
        (moved if key in _STANDARD else body)[key] = _jsonable(value)
    if moved:
        body["context"] = moved
    all_headers = dict(headers or {})
    if status == 401:
        all_headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(body, status_code=status, headers=all_headers, media_type=PROBLEM_JSON)


def problem_type(error: CloudError) -> str:
    """``urn:boilertwin:problem:not-found`` for `NotFound`, and so on."""
    kebab = re.sub(r"(?<!^)(?=[A-Z])", "-", type(error).__name__).lower()
    return TYPE_PREFIX + kebab


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


async def _cloud_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CloudError)
    return problem_response(
        exc.status,
        exc.title,
        exc.detail,
        type_=problem_type(exc),
        headers=exc.headers(),
        extensions=exc.context,
    )


FORM_ENDPOINTS = ("/api/v1/auth/token",)
"""Routes that take an HTML-form body (OAuth2's password grant), not JSON."""


def hint(request: Request, errors: list[dict[str, Any]]) -> str | None:
    """What the caller most likely got wrong, for the common mistakes."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.url.path in FORM_ENDPOINTS:
        if content_type != "application/x-www-form-urlencoded":
            return (
                "send the credentials form-encoded, not as JSON: Content-Type: "
                "application/x-www-form-urlencoded with username=...&password=... "
                "(OAuth2's password grant)"
            )
        return None
    in_body = any(e["loc"][:1] == ["body"] for e in errors)
    if (
        in_body
        and request.method in ("POST", "PUT", "PATCH")
        and content_type != "application/json"
    ):
        said = f"Content-Type {content_type}" if content_type else "no Content-Type"
        return f"send the body as JSON with Content-Type: application/json (this one had {said})"
    return None


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Never echo the offending input: it may be a password.
    errors = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]
    first = errors[0] if errors else None
    detail = "the request is not valid"
    if first is not None:
        where = ".".join(str(part) for part in first["loc"])
        detail = f"{where}: {first['msg']}" + (
            f" (and {len(errors) - 1} more)" if errors[1:] else ""
        )
    extensions: dict[str, Any] = {"errors": errors}
    advice = hint(request, errors)
    if advice is not None:
        detail = f"{detail}. Hint: {advice}"
        extensions["hint"] = advice
    return problem_response(422, "Invalid request", detail, extensions=extensions)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    try:
        title = HTTPStatus(exc.status_code).phrase
    except ValueError:
        title = "Error"
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names only the first matching route's methods; name them all.
        methods = allowed_methods(request)
        if methods:
            headers["Allow"] = ", ".join(methods)
    return problem_response(exc.status_code, title, detail, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document has for this request's path, sorted."""
    document = request.app.openapi()
    path = request.url.path
    methods: set[str] = set()
    for template, item in document.get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods |= {method.upper() for method in item if method in _METHODS}
    return sorted(methods)


_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        500, "Internal server error", "the server could not answer this request"
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error `app` can raise to a problem answer."""
    app.add_exception_handler(CloudError, _cloud_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
