"""Fixtures that start the real service: `mlx serve` in its own process, on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_PLUGINS = Path(__file__).resolve().parent / "fixtures" / "plugin_pkgs"

# `MLX_TEST_DATABASE=postgres` runs every server on its own PostgreSQL database (DESIGN.md:
# both backends run the same migrations and the same test suite); otherwise SQLite in MLX_HOME.
POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
_pg_databases: dict[Path, str] = {}


def on_postgres() -> bool:
    return os.environ.get("MLX_TEST_DATABASE") == "postgres"


def _pg_admin_connect() -> Any:
    import psycopg

    return psycopg.connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
    )


def postgres_url_for(home: Path, port: int) -> str:
    """The database of the server on `home`: created on first use, the same one when a
    server restarts on that home (so that it finds its state again)."""
    key = home.resolve()
    name = _pg_databases.get(key)
    if name is None:
        digest = hashlib.sha256(f"{key}:{port}:{os.getpid()}".encode()).hexdigest()[:24]
        name = f"mlxt_{digest}"
        with _pg_admin_connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        _pg_databases[key] = name
    return f"{POSTGRES_SERVER}/{name}"


def drop_postgres_databases() -> None:
    if not _pg_databases:
        return
    with _pg_admin_connect() as conn:
        for name in _pg_databases.values():
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _pg_databases.clear()


@pytest.fixture(scope="session", autouse=True)
def _postgres_databases() -> Iterator[None]:
    """Drops the databases this session created (one per server home) at its end."""
    yield
    drop_postgres_databases()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of this process without any MLX_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_")}
    env["PYTHONPATH"] = os.pathsep.join([str(FIXTURE_PLUGINS), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env.update(extra)
    return env


def mlx_cli(
    *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlx_platform.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )


@dataclass
class LiveServer:
    url: str
    home: Path
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes]
    stdout_path: Path
    tokens: dict[tuple[str, ...], str] = field(default_factory=dict)

    @property
    def admin_token(self) -> str:
        return (self.home / "admin.token").read_text().strip()

    def token(self, *scopes: str, subject: str = "tester", ttl: int = 3600) -> str:
        """A token minted the way users mint them: `mlx token create`."""
        key = (subject, str(ttl), *scopes)
        if key not in self.tokens:
            args = ["token", "create", "--subject", subject, "--ttl", str(ttl)]
            for s in scopes:
                args += ["--scope", s]
            self.tokens[key] = mlx_cli(*args, env=self.env).stdout.strip()
        return self.tokens[key]

    def client(
        self, token: str | None = None, *, scopes: tuple[str, ...] = ("plugins:admin",)
    ) -> httpx.Client:
        headers = {}
        tok = token if token is not None else self.token(*scopes)
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") + self.stdout_path.read_text(
            errors="replace"
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(home: Path, **settings: str) -> LiveServer:
    port = free_port()
    if on_postgres() and "MLX_DATABASE_URL" not in settings:
        settings["MLX_DATABASE_URL"] = postgres_url_for(home, port)
    env = clean_env(MLX_HOME=str(home), **settings)
    home.mkdir(parents=True, exist_ok=True)
    log_path = home.parent / f"{home.name}-server-{port}.log"
    stdout_path = home.parent / f"{home.name}-server-{port}.out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlx_platform.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=stdout_path.open("wb"),
        stderr=log_path.open("wb"),
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return LiveServer(url, home, env, log_path, proc, stdout_path)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not become ready:\n{log_path.read_text()}")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start servers with given settings (MLX_* names without the prefix, lower case)."""
    started: list[LiveServer] = []

    def make(home: Path | None = None, **settings: str) -> LiveServer:
        env_settings = {f"MLX_{k.upper()}": str(v) for k, v in settings.items()}
        srv = start_server(home or tmp_path / f"home{len(started)}", **env_settings)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server per test module, with the example plugins, on a fresh MLX_HOME."""
    srv = start_server(tmp_path_factory.mktemp("live") / "home")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.client() as c:
        yield c


_counter = iter(range(1, 1_000_000))


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A plugin name no other test of the module uses."""
    base = "".join(ch if ch.isalnum() else "_" for ch in request.node.name.lower())[:40]
    return f"{base}_{next(_counter)}"


def plugin_body(name: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": name,
        "type": "data_source",
        "version": "1.0.0",
        "description": f"{name} test plugin",
        "class_path": "mlx_test_plugins.EchoPlugin",
        "configuration_schema": {},
        "metadata": {},
    }
    body.update(overrides)
    return body


def register(client: httpx.Client, name: str, **overrides: object) -> str:
    r = client.post("/v1/plugins", json=plugin_body(name, **overrides))
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    """The answer is the spec's error envelope with this status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    err = body["error"]
    assert err["code"] == code, body
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["details"], dict)
    assert err["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return dict(err)


def invoke(
    client: httpx.Client, plugin_id: str, operation: str, timeout: float | None = None, **args: Any
) -> httpx.Response:
    """POST /v1/plugins/{id}/invoke with `args` as the operation's arguments."""
    body: dict[str, Any] = {"operation": operation, "arguments": args}
    if timeout is not None:
        body["timeout"] = timeout
    return client.post(f"/v1/plugins/{plugin_id}/invoke", json=body)


class KeepCalling(threading.Thread):
    """Invoke `pid` on a plugin again and again until stopped; records every answer (status,
    body), or (0, the error) when the request itself failed."""

    def __init__(self, client: httpx.Client, plugin_id: str) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.plugin_id = plugin_id
        self.answers: list[tuple[int, Any]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                r = invoke(self.client, self.plugin_id, "pid")
                self.answers.append((r.status_code, r.json()))
            except httpx.HTTPError as exc:
                self.answers.append((0, repr(exc)))
            self._stop_event.wait(0.05)

    def finish(self) -> list[tuple[int, Any]]:
        self._stop_event.set()
        self.join(30)
        assert not self.is_alive()
        return self.answers


def process_gone(pid: int) -> bool:
    """No process with that id runs any more (a zombie left to a reaper that is not the
    service counts as gone; one the service itself failed to reap does not)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
        parent = proc.parent()
        return parent is None or "mlx_platform" not in " ".join(parent.cmdline())
    except psutil.NoSuchProcess:
        return True


T = TypeVar("T")


def poll_timed(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> tuple[T, float]:
    """Call `fetch` until `done(value)`: (value, seconds it took), or AssertionError naming
    the last value seen."""
    t0 = time.monotonic()
    while True:
        value = fetch()
        if done(value):
            return value, time.monotonic() - t0
        if time.monotonic() - t0 >= timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s; last seen: {value!r}")
        time.sleep(interval)


def poll(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call `fetch` until `done(value)`; the value, or AssertionError naming the last one seen."""
    return poll_timed(fetch, done, timeout=timeout, interval=interval, what=what)[0]
