"""``POST /api/v1/provisioning/claims``: a new gateway joins the fleet with a claim token.

No bearer token: the claim token inside the signed request is the credential, so refusals
are throttled per client address like failed logins (`cloud.throttle`). The request is the
COSE_Sign1 of `protocols.provisioning` (``Content-Type: application/cose``); the answer
tells the gateway its device id, its broker login and the cloud keys to pin.
"""

from __future__ import annotations

import functools
import logging
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from cloud import broker_admin
from cloud.api.deps import API_PREFIX, ContextDep, client_address
from cloud.api.problems import PROBLEM_RESPONSES
from cloud.db import transaction
from cloud.dynsec import DynsecError
from cloud.errors import CloudError, InvalidInput
from cloud.metrics import CLAIMS
from cloud.provisioning import (
    ClaimRefused,
    cloud_public_keys,
    record_broker_login,
    register,
)
from cloud.settings import CloudSettings
from protocols.errors import ProtocolError
from protocols.provisioning import CONTENT_TYPE, MAX_REQUEST_BYTES, open_request

log = logging.getLogger(__name__)

router = APIRouter(prefix=API_PREFIX, tags=["provisioning"])

PASSWORD_BYTES = 24


class BrokerUnavailable(CloudError):
    """The broker's login could not be made; the gateway should ask again later."""

    status = 503
    title = "Broker unavailable"

    def headers(self) -> dict[str, str]:
        """Ask again in a minute."""
        return {"Retry-After": "60"}


_REQUEST_BODY = {
    "required": True,
    "content": {
        CONTENT_TYPE: {
            "schema": {"type": "string", "format": "binary"},
        }
    },
    "description": "COSE_Sign1 of the claim request (see protocols.provisioning), signed "
    "with the gateway's new key under kid = the device id it asks for.",
}


@router.post(
    "/provisioning/claims",
    status_code=201,
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={code: PROBLEM_RESPONSES[code] for code in (400, 403, 409, 422, 429, 503)},
)
async def claim_gateway(request: Request, ctx: ContextDep) -> JSONResponse:
    """Register the gateway that signed this request with a good claim token: the device
    (serial and model from its identity registers), its broker login and ACL; answers its
    device id, broker settings and the cloud keys to pin (201; 200 when the same gateway
    asks again because it lost the first answer)."""
    address = client_address(request)
    await run_in_threadpool(ctx.throttle.check_claims, address)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != CONTENT_TYPE:
        CLAIMS.labels("malformed").inc()
        raise InvalidInput(
            f"send the signed claim request as {CONTENT_TYPE}, not {content_type or 'nothing'}",
            field="body",
        )
    body = await request.body()
    if len(body) > MAX_REQUEST_BYTES:
        CLAIMS.labels("malformed").inc()
        raise InvalidInput(f"a claim request is at most {MAX_REQUEST_BYTES} bytes")
    try:
        claim_request = open_request(body)
    except ProtocolError as exc:
        CLAIMS.labels("bad_request").inc()
        await run_in_threadpool(ctx.throttle.claim_refused, address)
        detail = f"not a valid signed claim request: {exc}"
        raise ClaimRefused("bad_request", detail, status=400) from None
    now = ctx.clock()

    try:
        device_id, again = await run_in_threadpool(
            functools.partial(register, ctx.sessions, claim_request, now_ms=now)
        )
    except ClaimRefused:
        await run_in_threadpool(ctx.throttle.claim_refused, address)
        raise
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    try:
        await _broker_login(ctx.settings, device_id, password)
    except DynsecError as exc:
        CLAIMS.labels("broker_unavailable").inc()
        log.error("%s: claimed, but its broker login failed: %s", device_id, exc)
        raise BrokerUnavailable(
            "registered, but the broker login could not be made yet; ask again later",
            device_id=device_id,
        ) from exc

    def note() -> None:
        with transaction(ctx.sessions) as session:
            record_broker_login(session, device_id, now_ms=ctx.clock(), again=again)

    await run_in_threadpool(note)
    return JSONResponse(
        answer(ctx.settings, device_id, password), status_code=200 if again else 201
    )


async def _broker_login(settings: CloudSettings, device_id: str, password: str) -> None:
    """Give an existing login a new password, or create the login and its role."""
    try:
        await broker_admin.set_password(settings, device_id, password)
    except DynsecError as exc:
        if "Client not found" not in exc.reason:
            raise
        await broker_admin.add_device(settings, device_id, password)


def answer(settings: CloudSettings, device_id: str, password: str) -> dict[str, Any]:
    """What a claimed gateway is told."""
    tls = settings.device_broker_tls
    if tls is None:
        tls = settings.mqtt_ca_file is not None
    return {
        "device_id": device_id,
        "broker": {
            "host": settings.device_broker_host or settings.broker_host,
            "port": settings.device_broker_port or settings.broker_port,
            "tls": tls,
            "username": device_id,
            "password": password,
        },
        "cloud_keys": cloud_public_keys(settings.keys_dir),
    }
