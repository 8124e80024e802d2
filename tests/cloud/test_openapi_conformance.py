"""The API keeps the promises of its OpenAPI document, under generated input.

Schemathesis reads ``/openapi.json`` and, for every operation, sends generated requests
(valid and invalid) as an admin and as a tenant, then runs its default checks on each
answer: no 5xx, every status code and header documented, bodies matching their schemas,
invalid input refused with a 4xx, valid input not refused, ``OPTIONS``/``Allow`` honest, and
so on. A bounded number of examples per operation keeps it to a few seconds each.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from cloud.db import make_engine, session_factory
from cloud.domain import Role
from cloud.keys import CommandKey
from cloud.serve import compose
from cloud.settings import CloudSettings
from protocols.cose import generate_private_key
from tests.cloud.api_helpers import World, world_for
from tests.cloud.service_helpers import DEV, engineer, lockout_boiler


@schemathesis.serializer("application/cose")
def _cose(_ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """Claim requests (``POST /api/v1/provisioning/claims``) are raw COSE bytes; generated
    ones are junk the endpoint must refuse with a 4xx."""
    return value if isinstance(value, bytes) else str(value).encode()


EXAMPLES = int(os.environ.get("BT_SCHEMATHESIS_EXAMPLES", "10"))
"""Generated requests per operation, per role and database (more for a deeper run:
``BT_SCHEMATHESIS_EXAMPLES=500 pytest tests/cloud/test_openapi_conformance.py``)."""


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with world_for(db_url, tmp_path) as w:
        lockout_boiler(w)  # owner olivia, tenant tom, a boiler in lockout with its alarm
        engineer(w, "eve")
        w.user("ada", Role.ADMIN)
        yield w


def _document_app() -> Any:
    """An app to read the OpenAPI document from (it never touches its database)."""
    engine = make_engine("sqlite://")
    settings = CloudSettings(db_url="sqlite://")
    key = CommandKey("cloud-schema", generate_private_key())
    return compose(settings, session_factory(engine), key).app


def _config() -> SchemathesisConfig:
    """The default checks, each as shipped but one: a missing ``If-Match`` is answered 428
    Precondition Required, the status RFC 6585 defines for exactly that, which
    Schemathesis's list for a missing required header leaves out."""
    config = SchemathesisConfig()
    missing = config.projects.default.checks.missing_required_header
    missing.expected_statuses = [*missing.expected_statuses, "428"]
    return config


SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", _document_app(), config=_config())
CONFORMANCE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@pytest.fixture
def logins(world: World) -> dict[str, dict[str, str]]:
    """Each role's headers, logged in before any generated request: the fuzzed token
    endpoint soon has this client's address throttled (as it should)."""
    return {user: world.login(user) for user in ("ada", "tom")}


def call(case: schemathesis.Case, world: World, headers: dict[str, str]) -> None:
    """Send `case` to the world's app as `user` and run every default check on the answer."""
    # Half of the time ask about the real boiler, so more than 404s get exercised.
    about_a_boiler = "{device_id}" in case.path and case.path_parameters
    if about_a_boiler and hash(repr(sorted(case.path_parameters.items()))) % 2:
        case.path_parameters["device_id"] = DEV
    if case.method == "PATCH" and case.path_parameters.get("device_id") == DEV:
        positive = case.meta is not None and case.meta.generation.mode.is_positive
        if positive and case.headers and "If-Match" in case.headers:
            # Schemathesis cannot know the twin's version: a valid request sends the ETag.
            current = world.client.get(f"/api/v1/boilers/{DEV}", headers=headers)
            case.headers["If-Match"] = current.headers.get("etag", "")
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    sent = {k: v for k, v in kwargs.items() if k != "cookies"}
    if "data" in sent and isinstance(sent["data"], bytes | str):
        sent["content"] = sent.pop("data")
    response = world.client.request(**sent)
    excluded = []
    if case.path == "/api/v1/provisioning/claims":
        # Any bytes fit the schema of a COSE body, but only a request signed with the key
        # it carries is one: generated "valid" bodies are rightly refused with 400.
        excluded.append(schemathesis.checks.positive_data_acceptance)
    if case.path.endswith("/telemetry") and (case.query or {}).get("points"):
        # Which point names exist depends on the boiler (its register map): a well-formed
        # name the boiler does not have is rightly refused with 422 naming the known ones.
        excluded.append(schemathesis.checks.positive_data_acceptance)
    case.validate_response(response, transport_kwargs=kwargs, excluded_checks=excluded)


@SCHEMA.parametrize()
@CONFORMANCE
def test_as_admin(case: schemathesis.Case, world: World, logins: dict[str, dict[str, str]]) -> None:
    call(case, world, logins["ada"])


@SCHEMA.parametrize()
@CONFORMANCE
def test_as_tenant(
    case: schemathesis.Case, world: World, logins: dict[str, dict[str, str]]
) -> None:
    call(case, world, logins["tom"])


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/notifications?after=9223372036854775808",
        "/api/v1/boilers/{dev}/thread?after=9223372036854775808",
        "/api/v1/boilers?offset=9223372036854775808",
        "/api/v1/boilers/{dev}/telemetry?since=99999999999999999999",
        "/api/v1/boilers/{dev}/telemetry?until=-1",
        "/api/v1/boilers/{dev}/telemetry?step=99999999999d",
    ],
)
def test_integers_past_the_range_are_422_not_500(world: World, path: str) -> None:
    """The requests that gave a 500 to any role, as a tenant."""
    response = world.client.get(path.format(dev=DEV), headers=world.login("tom"))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_marking_a_notification_past_the_range_read_is_422_not_500(world: World) -> None:
    url = "/api/v1/notifications/9223372036854775808/read"
    assert world.client.post(url, headers=world.login("tom")).status_code == 422


def test_options_names_every_method_of_the_path(world: World) -> None:
    for path, allowed in (
        (f"/api/v1/boilers/{DEV}", "GET, PATCH"),
        (f"/api/v1/boilers/{DEV}/commands", "GET, POST"),
        ("/api/v1/jobs", "GET, POST"),
    ):
        response = world.client.options(path, headers=world.login("ada"))
        assert response.status_code == 405 and response.headers["allow"] == allowed
