"""`/docs` and `/redoc` work with no internet: every script, stylesheet and icon they load
comes from the service itself, also behind a reverse proxy that adds a path prefix; and the
OpenAPI document has an example for every request body and every success answer.

`MLX_TEST_BROWSER=1` also renders both pages in headless Chromium (Debian's `chromium`) with
every host but the service unresolvable, and checks that the operations appear.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import jsonschema
import pytest

from mlx_platform import wire
from tests.conftest import LiveServer, assert_error, free_port

PAGES = ("/docs", "/redoc")
EXTERNAL_URL = re.compile(r"https?://[^\s'\"<>)]+")
# Swagger UI's page names the OpenAPI document in its script: `url: 'openapi.json'`
SWAGGER_SPEC_URL = re.compile(r"""\burl:\s*['"]([^'"]+)['"]""")


class _References(HTMLParser):
    """Every URL a page makes the browser load: scripts, stylesheets, icons, ReDoc's spec."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []  # (kind, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v for k, v in attrs if v is not None}
        if tag == "script" and "src" in a:
            self.found.append(("script", a["src"]))
        elif tag == "link" and "href" in a:
            rel = a.get("rel", "")
            self.found.append(("stylesheet" if "stylesheet" in rel else "icon", a["href"]))
        elif tag == "redoc" and "spec-url" in a:
            self.found.append(("openapi", a["spec-url"]))
        elif tag in ("img", "iframe") and "src" in a:
            self.found.append((tag, a["src"]))


def references(html: str) -> list[tuple[str, str]]:
    parser = _References()
    parser.feed(html)
    parser.found += [("openapi", url) for url in SWAGGER_SPEC_URL.findall(html)]
    return parser.found


EXPECTED_TYPE = {
    "script": "javascript",
    "stylesheet": "text/css",
    "icon": "image/",
    "openapi": "application/json",
}


def check_page(client: httpx.Client, page_url: str) -> list[tuple[str, str]]:
    """Fetch the page and everything it loads, all with `client`; return what it loads."""
    r = client.get(page_url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    base = str(r.url)
    service = f"{urlsplit(base).scheme}://{urlsplit(base).netloc}"
    outside = [u for u in EXTERNAL_URL.findall(r.text) if not u.startswith(service)]
    assert outside == [], f"{page_url} names URLs outside the service: {outside}"
    refs = references(r.text)
    kinds = {kind for kind, _ in refs}
    assert "script" in kinds and "openapi" in kinds and "icon" in kinds, refs
    for kind, url in refs:
        assert kind in EXPECTED_TYPE, (kind, url)
        target = urljoin(base, url)
        assert target.startswith(service), f"{page_url} loads {url} from outside the service"
        asset = client.get(target)
        assert asset.status_code == 200, f"{url} (from {page_url}): {asset.status_code}"
        assert EXPECTED_TYPE[kind] in asset.headers["content-type"], (url, asset.headers)
        assert asset.content, url
        if kind == "openapi":
            assert "paths" in asset.json()
    return refs


def test_docs_pages_load_nothing_from_outside_the_service(live_server: LiveServer) -> None:
    with live_server.client(token="") as anonymous:  # no token: public
        swagger = check_page(anonymous, "/docs")
        redoc = check_page(anonymous, "/redoc")
    assert {k for k, _ in swagger} >= {"script", "stylesheet", "icon", "openapi"}
    assert {k for k, _ in redoc} >= {"script", "icon", "openapi"}


# ---------------------------------------------------------------- behind a path prefix


class _PrefixProxy(BaseHTTPRequestHandler):
    """A reverse proxy that serves the service under `/api/` only (and strips the prefix, as
    nginx's `location /api/ { proxy_pass http://service/; }` does): a page that loads
    `/docs-assets/...` or `/openapi.json` from the root gets 404s through it."""

    upstream: httpx.Client  # the service's, without a token

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        if not self.path.startswith("/api/"):
            self.send_error(404, "outside the proxied prefix")
            return
        r = self.upstream.get(self.path[len("/api") :], timeout=30)
        self.send_response(r.status_code)
        self.send_header("Content-Type", r.headers.get("content-type", "text/plain"))
        self.send_header("Content-Length", str(len(r.content)))
        self.end_headers()
        self.wfile.write(r.content)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def prefix_proxy(live_server: LiveServer) -> Iterator[str]:
    handler = type("Proxy", (_PrefixProxy,), {"upstream": live_server.anonymous})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_docs_work_behind_a_path_prefix(prefix_proxy: str) -> None:
    with httpx.Client(base_url=prefix_proxy, timeout=30) as client:
        assert client.get("/docs").status_code == 404  # the proxy serves /api/ only
        for page in PAGES:
            for _, url in check_page(client, f"/api{page}"):
                assert urlsplit(urljoin(f"{prefix_proxy}/api{page}", url)).path.startswith(
                    "/api/"
                ), url


def test_a_missing_asset_is_a_404_in_the_envelope(live_server: LiveServer) -> None:
    r = live_server.anonymous.get("/docs-assets/no-such-file.js", timeout=30)
    assert_error(r, 404, "NOT_FOUND")


# ---------------------------------------------------------------- examples


def _has_example(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    """The schema, or the component it names, has an example; for `anyOf`/`oneOf` (an
    optional body is `anyOf: [X, null]`), every branch but null has one."""
    if schema.get("example") is not None or schema.get("examples"):
        return True
    ref = schema.get("$ref")
    if ref:
        return _has_example(components[ref.rsplit("/", 1)[-1]], components)
    for key in ("anyOf", "oneOf"):
        branches = [b for b in schema.get(key, []) if b.get("type") != "null"]
        if branches:
            return all(_has_example(b, components) for b in branches)
    return False


def _media_has_example(media: dict[str, Any], components: dict[str, Any]) -> bool:
    if media.get("example") is not None or media.get("examples"):
        return True
    return _has_example(media.get("schema", {}), components)


@pytest.fixture(scope="module")
def openapi(live_server: LiveServer) -> dict[str, Any]:
    r = live_server.anonymous.get("/openapi.json", timeout=30)
    assert r.status_code == 200
    document: dict[str, Any] = r.json()
    return document


def _operations(openapi: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in openapi["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield f"{method.upper()} {path}", op


def test_every_request_body_and_success_answer_has_an_example(openapi: dict[str, Any]) -> None:
    components = openapi["components"]["schemas"]
    missing = []
    counted = 0
    for name, op in _operations(openapi):
        media_types = [
            (f"{name} request body ({mt})", media)
            for mt, media in op.get("requestBody", {}).get("content", {}).items()
        ]
        for status, answer in op["responses"].items():
            if status.startswith("2"):
                media_types += [
                    (f"{name} answer {status} ({mt})", media)
                    for mt, media in answer.get("content", {}).items()
                ]
        for what, media in media_types:
            counted += 1
            if not _media_has_example(media, components):
                missing.append(what)
    assert counted >= 24, counted  # the walk found them all (18 answers, 6 bodies today)
    assert missing == [], "no example for:\n" + "\n".join(missing)


def _examples_with_schemas(openapi: dict[str, Any]) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    for name, schema in openapi["components"]["schemas"].items():
        for i, example in enumerate(schema.get("examples", [])):
            yield f"component {name} example {i}", example, {"$ref": f"#/components/schemas/{name}"}
    for name, op in _operations(openapi):
        for status, answer in op["responses"].items():
            for mt, media in answer.get("content", {}).items():
                schema = media.get("schema", {})
                inline = list(schema.get("examples", [])) if "$ref" not in schema else []
                if "example" in media:
                    inline.append(media["example"])
                if mt == "application/json":
                    for i, example in enumerate(inline):
                        yield f"{name} answer {status} example {i}", example, schema


def test_every_example_is_valid_against_its_schema(openapi: dict[str, Any]) -> None:
    """An example a reader copies is one the service accepts (requests) or could answer."""
    checked = 0
    for what, example, schema in _examples_with_schemas(openapi):
        root = {**schema, "components": openapi["components"]}
        errors = list(jsonschema.Draft202012Validator(root).iter_errors(example))
        assert errors == [], f"{what}: {[e.message for e in errors]}"
        checked += 1
    assert checked >= 30, checked


@pytest.mark.parametrize(
    "model",
    [
        wire.RegisterPluginRequest,
        wire.ActivateRequest,
        wire.DeactivateRequest,
        wire.ConfigurationUpdateRequest,
        wire.ValidateCompositionRequest,
        wire.InvokeRequest,
    ],
    ids=lambda m: m.__name__,
)
def test_request_examples_pass_the_services_own_validation(model: type[wire.RequestModel]) -> None:
    """The pydantic validators (sizes, depth, JSON Schema conversion) run on top of the schema."""
    extra = model.model_config.get("json_schema_extra")
    assert isinstance(extra, dict)
    for example in extra["examples"]:
        model.model_validate(example)


# ---------------------------------------------------------------- a real browser (opt-in)

if os.environ.get("MLX_TEST_BROWSER") == "1":
    CHROMIUM = Path("/usr/bin/chromium")

    def render(url: str, tmp_path: Path) -> str:
        """The DOM of `url` after its scripts ran, in headless Chromium that can resolve no
        host but `docs.test` (the service): a page that needs the internet renders blank."""
        assert CHROMIUM.exists(), "MLX_TEST_BROWSER=1 needs Debian's chromium installed"
        done = subprocess.run(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--host-resolver-rules=MAP docs.test 127.0.0.1, MAP * ~NOTFOUND",
                "--virtual-time-budget=10000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def browser_url(live_server: LiveServer, page: str) -> str:
        # a name other than localhost/127.0.0.1: Swagger UI hides some outside calls (the
        # online validator badge) for local addresses only
        return f"http://docs.test:{urlsplit(live_server.url).port}{page}"

    def outside_loads(dom: str) -> list[str]:
        return [
            url
            for kind, url in references(dom)
            if kind != "openapi" and urlsplit(url).hostname not in (None, "docs.test")
        ]

    # a browser needs a socket: these two run against `mlx serve`
    def test_swagger_ui_renders_every_operation_offline(
        process_live_server: LiveServer, openapi: dict[str, Any], tmp_path: Path
    ) -> None:
        dom = render(browser_url(process_live_server, "/docs"), tmp_path)
        assert "opblock" in dom, dom[:2000]
        shown = set(re.findall(r'opblock-summary-operation-id">([^<]+)<', dom))
        expected = {op["operationId"] for _, op in _operations(openapi)}
        assert expected <= shown, sorted(expected - shown)
        assert outside_loads(dom) == []

    def test_redoc_renders_every_operation_offline(
        process_live_server: LiveServer, openapi: dict[str, Any], tmp_path: Path
    ) -> None:
        dom = render(browser_url(process_live_server, "/redoc"), tmp_path)
        summaries = {op["summary"] for _, op in _operations(openapi)}
        absent = sorted(s for s in summaries if json.dumps(s)[1:-1] not in dom)
        assert absent == [], absent
        assert outside_loads(dom) == []
