"""A small HTTP/1.1 endpoint for driving the simulator from tests and the command line.

JSON in, JSON out, one request per connection. Handlers raise `ControlError` (or
`ValueError` for a bad value) to answer with a clear message; the server itself answers 400
for unparseable requests, 404/405 for unknown routes and 413 for oversized bodies. Bound to
loopback by default: it can inject faults into a gas appliance's twin, so it is a test tool,
never something to expose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from http import HTTPStatus
from typing import Any

from hw_sim.errors import SimulatorError

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_HEADER_LINES = 64
READ_TIMEOUT_S = 10.0

Body = Any
Handler = Callable[[Body], Awaitable[Any]]


class ControlError(SimulatorError):
    """An error answered with `status` and a JSON ``{"error": message}`` body."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ControlServer:
    """Routes ``(METHOD, path)`` to async handlers taking the parsed JSON body."""

    def __init__(self, routes: Mapping[tuple[str, str], Handler], host: str, port: int) -> None:
        self.routes = dict(routes)
        self.host = host
        self.port = port

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        """Listen until cancelled; `port` is updated if 0 was asked for."""
        server = await asyncio.start_server(self._client, self.host, self.port)
        async with server:
            self.port = server.sockets[0].getsockname()[1]
            log.info("control endpoint on http://%s:%d/", self.host, self.port)
            if ready is not None:
                ready.set()
            await server.serve_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, payload = await asyncio.wait_for(self._handle(reader), READ_TIMEOUT_S)
        except TimeoutError:
            status, payload = HTTPStatus.REQUEST_TIMEOUT, {"error": "request not received in time"}
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        body = json.dumps(payload, indent=2, sort_keys=True).encode() + b"\n"
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader) -> tuple[HTTPStatus, Any]:
        request_line = (await reader.readline()).decode("latin-1").strip()
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return HTTPStatus.BAD_REQUEST, {"error": f"bad request line {request_line!r}"}
        method, target = parts[0].upper(), parts[1].split("?", 1)[0]
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADER_LINES):
            line = (await reader.readline()).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, {"error": "too many headers"}
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            return HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"}
        if length < 0 or length > MAX_BODY:
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY} bytes"}
        raw = await reader.readexactly(length) if length else b""
        handler = self.routes.get((method, target))
        if handler is None:
            if any(path == target for _, path in self.routes):
                return HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} not allowed on {target}"}
            return HTTPStatus.NOT_FOUND, {
                "error": f"no such endpoint {target}",
                "endpoints": self.index(),
            }
        try:
            body = json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError) as exc:
            return HTTPStatus.BAD_REQUEST, {"error": f"body is not JSON: {exc}"}
        try:
            return HTTPStatus.OK, await handler(body)
        except ControlError as exc:
            return exc.status, {"error": exc.message}
        except (ValueError, TypeError) as exc:
            return HTTPStatus.BAD_REQUEST, {"error": str(exc)}

    def index(self) -> list[str]:
        """Every route, as ``METHOD /path``."""
        return sorted(f"{method} {path}" for method, path in self.routes)


def require_object(
    body: Body, *, allowed: Collection[str], required: Collection[str] = ()
) -> dict[str, Any]:
    """The body as a JSON object with only `allowed` keys and all `required` ones."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ControlError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
    unknown = set(body) - set(allowed)
    if unknown:
        raise ControlError(
            HTTPStatus.BAD_REQUEST, f"unknown fields {sorted(unknown)}; allowed {sorted(allowed)}"
        )
    missing = set(required) - set(body)
    if missing:
        raise ControlError(HTTPStatus.BAD_REQUEST, f"missing fields {sorted(missing)}")
    return body
