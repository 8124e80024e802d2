"""The API application: routers under ``/api/v1``, problem answers, health and metrics.

``create_app`` builds the API only, from the parts it is given (the composition root,
`cloud.serve`, builds those and mounts the portal beside it); nothing is global except the
Prometheus registry, which is process-wide by design.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from typing import Annotated

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cloud.api import audit, docs_pages
from cloud.api.audit import AuditTrail
from cloud.api.deps import ApiContext
from cloud.api.metrics import RequestMetrics
from cloud.api.nul import NulGuard
from cloud.api.openapi import install_openapi
from cloud.api.problems import PROBLEM_RESPONSES, install_problem_handlers, problem_response
from cloud.api.routes import (
    auth,
    boilers,
    config,
    exports,
    fleet,
    jobs,
    people,
    predictions,
    provisioning,
    updates,
)
from cloud.api.routes import commands as command_routes
from cloud.commands import CommandService
from cloud.domain import Clock, wall_ms
from cloud.service.platform import ServicePlatform
from cloud.settings import CloudSettings
from cloud.supervisor import Supervisor
from cloud.throttle import Throttle

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
"""No request body here needs more; larger ones are refused with 413."""


def scrape_allowed(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries `token` (bearer, or basic auth password)."""
    scheme, _, credentials = (authorization or "").partition(" ")
    offered = ""
    if scheme.lower() == "bearer":
        offered = credentials.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        offered = decoded.partition(":")[2]
    return bool(offered) and hmac.compare_digest(offered.encode(), token.encode())


def create_app(
    settings: CloudSettings,
    sessions: sessionmaker[Session],
    commands: CommandService,
    platform: ServicePlatform,
    clock: Clock = wall_ms,
    supervisor: Supervisor | None = None,
) -> FastAPI:
    """The REST API over `sessions`, creating commands through `commands` and service jobs
    through `platform`, timed by `clock`. `supervisor` (the process's background loops) is
    reported by ``/healthz``.
    """
    app = FastAPI(
        title="boilertwin cloud",
        version="1",
        description=(
            "Digital twins of gas boilers: live state, history, thread and commands; "
            "the service platform: requests, crowdsourced engineers, contracts, "
            "verified repairs and evaluations."
        ),
        openapi_url="/openapi.json",
        docs_url=None,  # served from vendored files instead (`cloud.api.docs_pages`)
        redoc_url=None,
        max_body_size=MAX_BODY,
    )
    throttle = Throttle.from_settings(sessions, clock, settings)
    app.state.context = ApiContext(settings, sessions, commands, clock, platform, throttle)
    install_problem_handlers(app)
    app.add_middleware(AuditTrail, sessions=sessions, clock=clock)
    app.add_middleware(RequestMetrics)
    app.add_middleware(NulGuard)  # outermost: nothing behind it sees a NUL
    routers = (
        auth,
        boilers,
        command_routes,
        config,
        exports,
        fleet,
        jobs,
        people,
        predictions,
        provisioning,
        updates,
    )
    for router in (module.router for module in routers):
        app.include_router(router)
    app.include_router(audit.router)
    app.include_router(docs_pages.router)
    app.include_router(updates.artifacts)  # no bearer token: gateways fetch these

    rules = platform.config.rules
    install_openapi(app, {t: list(rules.problems(t)) for t in rules.service_types})

    @app.get("/healthz", tags=["ops"], responses={503: PROBLEM_RESPONSES[503]})
    def healthz() -> Response:
        """200 when the database answers (``status`` is ``degraded`` while a background loop
        waits to be restarted after a failure; ``loops`` says which and why), 503 otherwise."""
        try:
            with sessions() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            log.warning("health check: database unreachable: %s", type(exc).__name__)
            return problem_response(503, "Service unavailable", "the database is unreachable")
        loops = supervisor.states() if supervisor is not None else []
        healthy = supervisor is None or supervisor.healthy
        return JSONResponse(
            {
                "status": "ok" if healthy else "degraded",
                "loops": {state.name: state.as_json() for state in loops},
            }
        )

    metrics_token = settings.metrics_token()

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={401: PROBLEM_RESPONSES[401]},
    )
    def metrics(authorization: Annotated[str | None, Header()] = None) -> Response:
        """Prometheus metrics of this process (default registry). With ``metrics_token_file``
        set, only for ``Authorization: Bearer <token>`` or basic auth with it as password."""
        if metrics_token is not None and not scrape_allowed(authorization, metrics_token):
            return problem_response(
                401,
                "Unauthorized",
                "metrics need the scrape token",
                headers={"WWW-Authenticate": 'Bearer, Basic realm="metrics"'},
            )
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
