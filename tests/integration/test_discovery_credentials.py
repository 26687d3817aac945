"""A package index (MLX_PLUGIN_INDEX_URL) and a git remote (MLX_PLUGIN_GIT_REPOS) named with
credentials (``http://user:password@host/...``): discovery uses them, and shows them nowhere,
in the answer (locations, messages), the plugin it registers (repository_url), the audit
trail or the service's log: the password shows as the mask, the user name stays.

For real: `mlx serve` with both settings, against one HTTP server on 127.0.0.1 that asks
every request for basic authentication and serves a simple repository (PEP 503) and a git
repository (smart HTTP through `git http-backend`); once with the right credentials, once
with wrong ones (the index and the remote refuse)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from mlx_platform.wire import SECRET_MASK
from tests.conftest import LiveServer, make_factory, start_server
from tests.integration.test_discovery_sources import (
    build_wheel,
    discover,
    git,
    make_repo,
    toml_manifest,
)

USER = "deploy"
INDEX_PASSWORD = "idx-p@ss:w0rd"  # written percent-encoded in the URL
GIT_TOKEN = "ghp-token-0123456789abcdef"
WRONG = "wrong-password-4711"
WHEEL = "mlx_plugin_locked-1.0.0-py3-none-any.whl"


class LockedHost:
    """An HTTP server on 127.0.0.1 that answers only requests with basic authentication of
    USER and INDEX_PASSWORD or GIT_TOKEN (401 otherwise): /simple/ (two mlx-plugin-*
    projects, one of them gone), /files/ (a wheel), /git/repo.git (git http-backend)."""

    def __init__(self, folder: Path) -> None:
        self.wheels = folder / "wheels"
        self.git_root = folder / "git"
        self.requests: Counter[str] = Counter()  # "authorized" / "refused"
        wheel = build_wheel(
            self.wheels,
            "mlx-plugin-locked",
            "1.0.0",
            {"mlx_locked/mlx-plugin.toml": toml_manifest("locked_index_echo")},
        )
        assert wheel.name == WHEEL
        self.sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        work = make_repo(
            folder / "work", {"mlx-plugin.toml": toml_manifest("locked_git_echo", "1.0.0")}
        )
        self.git_root.mkdir()
        git("clone", "-q", "--bare", str(work), str(self.git_root / "repo.git"), cwd=folder)
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                host.handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                host.handle(self, "POST")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str, password: str) -> str:
        return f"http://{USER}:{quote(password, safe='')}@127.0.0.1:{self.port}{path}"

    def handle(self, req: http.server.BaseHTTPRequestHandler, method: str) -> None:
        allowed = {
            "Basic " + base64.b64encode(f"{USER}:{p}".encode()).decode()
            for p in (INDEX_PASSWORD, GIT_TOKEN)
        }
        if req.headers.get("Authorization") not in allowed:
            self.requests["refused"] += 1
            req.send_response(401)
            req.send_header("WWW-Authenticate", 'Basic realm="locked"')
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        self.requests["authorized"] += 1
        path, _, query = req.path.partition("?")
        if path.startswith("/git/"):
            self._git(req, method, path[len("/git") :], query)
            return
        status, body = 404, b"not found"
        if path == "/simple/":
            links = "".join(
                f'<a href="/simple/{n}/">{n}</a>' for n in ("mlx-plugin-locked", "mlx-plugin-gone")
            )
            status, body = 200, f"<html><body>{links}</body></html>".encode()
        elif path == "/simple/mlx-plugin-locked/":
            link = f'<a href="/files/{WHEEL}#sha256={self.sha}">{WHEEL}</a>'
            status, body = 200, f"<html><body>{link}</body></html>".encode()
        elif path == f"/files/{WHEEL}":
            status, body = 200, (self.wheels / WHEEL).read_bytes()
        req.send_response(status)
        req.send_header("Content-Type", "text/html" if path.startswith("/simple") else "")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def _git(
        self, req: http.server.BaseHTTPRequestHandler, method: str, path: str, query: str
    ) -> None:
        """The request through `git http-backend` (CGI): the smart HTTP protocol, which
        shallow clones need."""
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        env = {
            **os.environ,
            "GIT_PROJECT_ROOT": str(self.git_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": method,
            "REMOTE_USER": USER,
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": req.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": req.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": req.headers.get("Git-Protocol", ""),
        }
        out = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60
        ).stdout
        head, _, content = out.partition(b"\r\n\r\n")
        headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
        status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
        req.send_response(status)
        for key, value in headers:
            if key.lower() != "status":
                req.send_header(key, value.strip())
        req.send_header("Content-Length", str(len(content)))
        req.end_headers()
        req.wfile.write(content)


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[LockedHost]:
    host = LockedHost(tmp_path / "locked")
    host.thread.start()
    yield host
    host.httpd.shutdown()
    host.httpd.server_close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """`mlx serve` processes (a fresh redactor, and the service's own log), git reading no
    configuration of this machine's user (no credential helper stores what it is given)."""
    yield from make_factory(
        tmp_path,
        start_server,
        MLX_SEED_BUILTIN_PLUGINS="false",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
    )


def masked(host: LockedHost, path: str) -> str:
    return f"http://{USER}:{SECRET_MASK}@127.0.0.1:{host.port}{path}"


def assert_nowhere(secrets: tuple[str, ...], *texts: str) -> None:
    forms = {f for s in secrets for f in (s, quote(s, safe=""))}
    for text in texts:
        for form in forms:
            assert form not in text, (form, text)


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in data["discovered_plugins"]}


def test_credentials_of_an_index_and_a_git_remote_are_used_and_never_shown(
    serve: Callable[..., LiveServer], locked: LockedHost
) -> None:
    srv = serve(
        MLX_PLUGIN_INDEX_URL=locked.url("/simple/", INDEX_PASSWORD),
        MLX_PLUGIN_GIT_REPOS=locked.url("/git/repo.git", GIT_TOKEN),
    )
    with srv.client() as client:
        r = client.get(
            "/v1/plugins/discover", params={"sources": "pypi,git", "auto_register": "true"}
        )
        data = discover(client, sources="pypi,git")  # the second scan: the git remote's ref
        found = by_name(data)
        # the index was read with its credentials: its plugin and its gone project
        index_plugin = found["locked_index_echo"]
        assert index_plugin["location"] == masked(locked, f"/files/{WHEEL}")
        [gone] = [e for e in data["errors"] if "mlx-plugin-gone" in str(e["location"])]
        assert gone["location"] == masked(locked, "/simple/mlx-plugin-gone/")
        assert "HTTP 404" in gone["message"]
        # the remote was cloned with its token; its plugin registered, its URL kept masked
        git_plugin = by_name(r.json()["data"])["locked_git_echo"]
        assert git_plugin["location"].startswith(masked(locked, "/git/repo.git") + " ("), git_plugin
        assert git_plugin["auto_registered"] is True, r.text
        detail = client.get(f"/v1/plugins/{git_plugin['plugin_id']}")
        assert detail.json()["data"]["repository_url"] == masked(locked, "/git/repo.git")
        audit = client.get("/v1/audit", params={"limit": 100})
        assert audit.status_code == 200 and audit.json()["data"], audit.text
        answers = [r.text, str(data), detail.text, audit.text]
    assert locked.requests["authorized"] >= 4, locked.requests
    log = srv.log_text()
    assert f"git {masked(locked, '/git/repo.git')}: cloned at " in log, log
    assert_nowhere((INDEX_PASSWORD, GIT_TOKEN), *answers, log)


def test_an_index_and_a_git_remote_that_refuse_the_credentials_show_them_masked(
    serve: Callable[..., LiveServer], locked: LockedHost
) -> None:
    srv = serve(
        MLX_PLUGIN_INDEX_URL=locked.url("/simple/", WRONG),
        MLX_PLUGIN_GIT_REPOS=locked.url("/git/repo.git", WRONG + "-token"),
    )
    with srv.client() as client:
        data = discover(client, sources="pypi,git")
    errors = {e["source"]: e for e in data["errors"]}
    assert errors["pypi"]["location"] == masked(locked, "/simple/")
    assert errors["pypi"]["message"] == "package index unreachable or unreadable: HTTP 401"
    assert errors["git"]["location"] == masked(locked, "/git/repo.git")
    assert "git clone failed" in errors["git"]["message"], errors["git"]
    assert locked.requests["refused"] >= 2 and not locked.requests["authorized"]
    log = srv.log_text()
    assert f"git {masked(locked, '/git/repo.git')}: git clone failed" in log, log
    assert_nowhere((WRONG,), str(data), log)


def test_a_token_given_as_the_user_name_of_a_git_remote_is_shown_masked(
    serve: Callable[..., LiveServer], locked: LockedHost
) -> None:
    """`http://<token>@host/repo.git` (how GitHub takes a token): no password, and the user
    name is the credential; the remote refuses it, and it shows nowhere."""
    token = "ghp_" + WRONG.replace("-", "") + "abcdefABCDEF"
    srv = serve(MLX_PLUGIN_GIT_REPOS=f"http://{token}@127.0.0.1:{locked.port}/git/repo.git")
    with srv.client() as client:
        data = discover(client, sources="git")
    errors = {e["source"]: e for e in data["errors"]}
    shown = f"http://{SECRET_MASK}@127.0.0.1:{locked.port}/git/repo.git"
    assert errors["git"]["location"] == shown, errors
    assert locked.requests["refused"] >= 1 and not locked.requests["authorized"]
    log = srv.log_text()
    assert f"git {shown}: git clone failed" in log, log
    assert_nowhere((token,), str(data), log)
