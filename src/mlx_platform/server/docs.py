"""`/docs` (Swagger UI) and `/redoc` (ReDoc) from assets installed with the package.

FastAPI's own pages load Swagger UI and ReDoc from a CDN: without internet they stay blank.
The `fastapi-offline` wheel ships the very same bundles (and FastAPI's favicon); they are
served here under `/docs-assets/`, and the two pages name nothing else. No auth, like
`/openapi.json`: the pages and the assets hold nothing that the OpenAPI document does not.

Every URL in the pages is relative (`docs-assets/...`, `openapi.json`), so the pages also work
behind a reverse proxy that serves the API under a path prefix (`/api/docs` loads
`/api/docs-assets/...` and `/api/openapi.json`), whether or not it tells the service its
root path.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"

# Added to FastAPI's defaults: show the operation ids (the names a generated client gives the
# calls). The token typed into "Authorize" is not persisted: it would sit in browser storage.
SWAGGER_UI_PARAMETERS: dict[str, Any] = {"displayOperationId": True}


def install_docs(app: FastAPI) -> None:
    """Add `/docs`, `/redoc` and the assets they load. The app must be created with
    `docs_url=None, redoc_url=None` (else FastAPI's CDN pages would answer first)."""
    app.mount(
        ASSETS_PATH, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets"
    )
    assets = ASSETS_PATH.lstrip("/")
    openapi = (app.openapi_url or "/openapi.json").lstrip("/")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )
