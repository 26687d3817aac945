"""`/ui`: the web dashboard, built from `frontend/` (`make ui`) into `ui_dist/`, shipped with
the package: serving it needs no Node.

The page itself holds nothing secret and needs no token (like `/docs`); every API call it
makes sends the bearer token the user typed, kept in the browser's sessionStorage, never in
a URL. `/ui` answers a redirect to `ui/` (relative), and every URL in the built page is
relative (`./assets/...`, `../v1/...`), so the dashboard also works behind a reverse proxy
that serves the API under a path prefix.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from mlx_platform.server.errors import error_response

UI_DIST = Path(__file__).with_name("ui_dist")

# The page is small and changes with each build; its assets have content hashes in their names.
# Its Content-Security-Policy lets it load and call nothing but this service: scripts and
# styles from its own files only (inline styles allowed: the chart library sets them), images
# from itself or data: URLs, and no framing by another site.
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
        "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def install_ui(app: FastAPI, dist: Path = UI_DIST) -> None:
    """Add `/ui` (a redirect), `/ui/` (the page) and `/ui/assets/...`."""
    index = dist / "index.html"

    @app.get("/ui", include_in_schema=False)
    def ui_redirect() -> Response:
        return RedirectResponse("ui/", status_code=307)

    @app.get("/ui/", include_in_schema=False)
    def ui_page() -> Response:
        if not index.is_file():
            return error_response(
                503,
                "SERVICE_UNAVAILABLE",
                "The dashboard is not built: run `make ui` (needs Node.js and npm)",
                {"missing": str(index)},
            )
        return FileResponse(index, media_type="text/html", headers=_PAGE_HEADERS)

    app.mount(
        "/ui/assets",
        StaticFiles(directory=dist / "assets", check_dir=False),
        name="ui-assets",
    )
