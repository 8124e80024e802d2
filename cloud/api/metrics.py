"""HTTP request metrics (Prometheus), labelled by route template so ids never explode them."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "bt_api_requests",
    "HTTP requests answered by the API, by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "bt_api_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
)

UNMATCHED = "unmatched"
"""Route label of requests no route matched (404s for unknown paths)."""


def route_template(scope: Scope) -> str:
    """``/api/v1/boilers/{device_id}`` rather than the concrete path."""
    route = scope.get("route")
    if isinstance(route, BaseRoute):
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        if isinstance(path, str):
            return path
    return UNMATCHED


class RequestMetrics:
    """ASGI middleware counting every HTTP request once, including ones that raised."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = route_template(scope)
            method = str(scope.get("method", ""))
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - started)
