"""The OpenAPI document, completed with the answers every operation can give.

FastAPI documents what each route declares. Some answers come from the framework or from
layers every route shares, so they are added here for every operation they apply to, rather
than repeated (and forgotten) route by route:

* 400 for any operation with a request body: a body that cannot be parsed at all
  (not JSON, not a form) is refused before validation;
* ``If-Match`` required where an operation takes it (428 without it: RFC 6585);
* 401, 403, 404 and 422 for every operation that needs a bearer token (already added by the
  routers; checked here so a new router cannot forget them);
* the service catalogue (service types and their problems) in a service request's schema.

405 answers carry ``Allow`` with every method the path has (`cloud.api.problems`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from cloud.api.problems import PROBLEM_RESPONSES

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _problem(status: int, description: str) -> dict[str, Any]:
    answer = dict(PROBLEM_RESPONSES[status]) if status in PROBLEM_RESPONSES else {}
    return answer | {"description": description}


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with the shared answers added to each operation (see the module)."""
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                responses.setdefault("400", _problem(400, "The body could not be parsed"))
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "header" and parameter.get("name") == "if-match":
                    # Optimistic concurrency: the route answers 428 itself when it is missing.
                    parameter["required"] = True
                    responses.setdefault("428", _problem(428, "If-Match is missing"))
            if operation.get("security"):
                for status in (401, 403, 404, 422):
                    responses.setdefault(str(status), PROBLEM_RESPONSES[status])
    return document


def with_catalogue(
    document: dict[str, Any], catalogue: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """`document` with a service request's ``service_type`` and ``problem`` limited to the
    catalogue this process runs with (the rules are data: `service_rules_file` replaces
    them), each problem with its own service type."""
    schema = document.get("components", {}).get("schemas", {}).get("JobCreate")
    if schema is None or not catalogue:
        return document
    schema["properties"]["service_type"]["enum"] = sorted(catalogue)
    schema["oneOf"] = [
        {
            "properties": {
                "service_type": {"const": service_type},
                "problem": {"enum": list(problems)},
            }
        }
        for service_type, problems in sorted(catalogue.items())
    ]
    return document


def install_openapi(app: FastAPI, catalogue: Mapping[str, Sequence[str]]) -> None:
    """Serve the completed document at ``/openapi.json`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = with_catalogue(complete(document), catalogue)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
