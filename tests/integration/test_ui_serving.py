"""`/ui` serves the built dashboard (src/mlx_platform/server/ui_dist) without a token, with
relative URLs only (it works behind a path prefix), and the committed build is the build of
the committed source (`frontend/`: `make ui`). The browser tests are tests/e2e/test_dashboard.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute

from mlx_platform.server.ui import UI_DIST, install_ui
from tests.conftest import ROOT, LiveServer, assert_error
from tests.integration.test_docs_offline import EXTERNAL_URL, references

FRONTEND = ROOT / "frontend"
# as frontend/vite.config.ts lists them
SOURCES = (
    "index.html",
    "package.json",
    "package-lock.json",
    "tsconfig.json",
    "vite.config.ts",
    "src",
)


def source_digest(root: Path) -> str:
    files = sorted(
        p.relative_to(root).as_posix()
        for s in SOURCES
        for p in ([root / s] if (root / s).is_file() else (root / s).rglob("*"))
        if p.is_file()
    )
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f}\n{hashlib.sha256((root / f).read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def test_the_committed_build_is_that_of_the_source() -> None:
    built = (UI_DIST / "source-digest.txt").read_text().strip()
    assert built == source_digest(FRONTEND), (
        "src/mlx_platform/server/ui_dist is older than frontend/: run `make ui` and commit it"
    )


def test_ui_is_served_without_a_token_with_relative_urls_only(live_server: LiveServer) -> None:
    client = live_server.anonymous
    r = client.get("/ui", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "ui/"  # relative: prefix-proof
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert EXTERNAL_URL.findall(page.text) == []
    refs = references(page.text)
    kinds = {kind for kind, _ in refs}
    assert {"script", "stylesheet"} <= kinds, refs
    for _, url in refs:
        assert not urlsplit(url).scheme or url.startswith("data:"), url
        if url.startswith("data:"):
            continue
        assert url.startswith("./"), f"{url}: not relative to the page"
        asset = client.get(urljoin(str(page.url), url))
        assert asset.status_code == 200, url
        assert asset.content, url
    assert_error(client.get("/ui/assets/no-such-file.js"), 404, "NOT_FOUND")


def test_an_unbuilt_dashboard_answers_503_saying_how_to_build_it(tmp_path: Path) -> None:
    app = FastAPI()
    install_ui(app, dist=tmp_path)
    (page,) = [r for r in app.routes if isinstance(r, APIRoute) and r.path == "/ui/"]
    answer = page.endpoint()
    assert answer.status_code == 503
    error = orjson.loads(answer.body)["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE" and "make ui" in error["message"]


def test_the_page_may_load_and_call_nothing_but_the_service(live_server: LiveServer) -> None:
    r = live_server.anonymous.get("/ui/")
    assert r.status_code == 200
    policy = {
        part.split()[0]: part.split()[1:]
        for part in r.headers["content-security-policy"].split(";")
        if part.strip()
    }
    assert policy["default-src"] == ["'self'"] and policy["script-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"] and policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert r.headers["x-content-type-options"] == "nosniff"
