"""The API's interactive documentation, served with no network beyond this cloud: Swagger UI
at ``/docs`` and ReDoc at ``/redoc``, from the vendored builds in the portal's static files
(``cloud/portal/static/vendor``, pinned in its ``VENDOR.md``). FastAPI's own pages load them
from a CDN, which an installation behind a firewall (or a laptop on a train) cannot reach."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

SWAGGER_JS = "/static/vendor/swagger-ui-bundle-5.35.0.js"
SWAGGER_CSS = "/static/vendor/swagger-ui-5.35.0.css"
REDOC_JS = "/static/vendor/redoc-2.5.4.standalone.js"
FAVICON = "/static/favicon.svg"
TITLE = "boilertwin cloud API"

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=TITLE,
        swagger_js_url=SWAGGER_JS,
        swagger_css_url=SWAGGER_CSS,
        swagger_favicon_url=FAVICON,
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from swagger.io
    )


@router.get("/redoc", response_class=HTMLResponse)
def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title=TITLE,
        redoc_js_url=REDOC_JS,
        redoc_favicon_url=FAVICON,
        with_google_fonts=False,
    )
