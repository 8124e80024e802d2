"""NUL characters never reach the database: each becomes U+FFFD at the door.

PostgreSQL cannot store U+0000 in text (nor ``\\u0000`` in JSON) and answers any query or
insert holding one with an error, which used to surface as a 500 for a path like
``/api/v1/boilers/a%00b``, a login name, or a note. JSON, form fields, paths and query strings
may all carry one, and a well-formed request must not be refused for it, so every NUL in a
request's path, query string, headers and JSON or form body is replaced with U+FFFD, the
Unicode replacement character, before routing: a lookup then finds nothing (404), a note is
stored with a visible mark where the NUL was. Devices' messages are not HTTP: ingest refuses
NUL text as ``malformed`` (`cloud.ingest`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REPLACEMENT = "\ufffd"
_PERCENT_NUL = re.compile(rb"%00")
_PERCENT_REPLACEMENT = b"%EF%BF%BD"
_JSON_NUL = re.compile(rb"\\u0000", re.IGNORECASE)
MAX_BUFFERED = 1024 * 1024
"""Bodies up to this are inspected (the API refuses far smaller ones anyway)."""


def clean(value: Any) -> Any:
    """`value` (parsed JSON) with every NUL in its strings and keys replaced."""
    if isinstance(value, str):
        return value.replace("\x00", REPLACEMENT)
    if isinstance(value, list):
        return [clean(item) for item in value]
    if isinstance(value, dict):
        return {clean(key): clean(item) for key, item in value.items()}
    return value


def _bytes(data: bytes) -> bytes:
    return _PERCENT_NUL.sub(_PERCENT_REPLACEMENT, data).replace(b"\x00", REPLACEMENT.encode())


def _body(data: bytes, content_type: bytes) -> bytes:
    if b"\x00" not in data and not _JSON_NUL.search(data) and b"%00" not in data:
        return data
    if b"json" in content_type:
        try:
            return json.dumps(clean(json.loads(data))).encode()
        except (ValueError, UnicodeDecodeError):
            return data  # not JSON: refused as such, never stored
    if b"x-www-form-urlencoded" in content_type:
        return _bytes(data)
    return data


class NulGuard:
    """ASGI middleware: NUL characters in a request become U+FFFD before anything reads it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        scope["path"] = scope["path"].replace("\x00", REPLACEMENT)
        if "raw_path" in scope and scope["raw_path"] is not None:
            scope["raw_path"] = _bytes(scope["raw_path"])
        scope["query_string"] = _bytes(scope.get("query_string", b""))
        scope["headers"] = [(name, _bytes(value)) for name, value in scope.get("headers", [])]
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        await self.app(scope, _cleaned_body(receive, content_type), send)


def _cleaned_body(receive: Receive, content_type: bytes) -> Receive:
    """`receive` with the body read whole (up to `MAX_BUFFERED`) and cleaned."""
    first = True

    async def cleaned() -> Message:
        nonlocal first
        if not first:
            return await receive()
        first = False
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if not more:
                return {"type": "http.request", "body": _body(body, content_type)}
            if len(body) > MAX_BUFFERED:  # too big to look at: pass it on as it came
                return {"type": "http.request", "body": body, "more_body": True}

    return cleaned
