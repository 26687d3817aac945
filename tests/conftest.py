"""The test tiers' shared helpers (docs/decisions.md, "Test tiers (issue 12)").

Two kinds of server, one interface (`LiveServer`: url, home, env, client, token, admin_token,
log_text, stop, pid):

- `InProcessServer` (the fixtures `server_factory`, `live_server`, `admin`): the app of
  `create_app(Settings(...))` in this process, its lifespan entered once, clients whose
  transport calls the ASGI app directly; a real SQLite file (or PostgreSQL database) of its own,
  plugins in-process unless the test asks for another isolation. Starts in tens of milliseconds.
- `ProcessServer` (the fixtures `process_server_factory`, `process_live_server`): `mlx serve`
  in its own process on 127.0.0.1, for the tests where a process is the point (worker
  processes parented by the service, crashes and signals, restarts, replicas, the CLI against a
  URL, the README walk-through, HTTP edges of h11/uvicorn).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_PLUGINS = Path(__file__).resolve().parent / "fixtures" / "plugin_pkgs"


def _with_fixture_plugins(pythonpath: str) -> str:
    parts = [p for p in pythonpath.split(os.pathsep) if p and p != str(FIXTURE_PLUGINS)]
    return os.pathsep.join([str(FIXTURE_PLUGINS), *parts])


# The test plugins importable here (in-process servers load them in this process) and in the
# processes this one starts (an in-process server's workers and class probes inherit it).
if str(FIXTURE_PLUGINS) not in sys.path:
    sys.path.append(str(FIXTURE_PLUGINS))
os.environ["PYTHONPATH"] = _with_fixture_plugins(os.environ.get("PYTHONPATH", ""))

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


# ---------------------------------------------------------------- tiers and scheduling

PROCESS_FIXTURES = frozenset({"process_server_factory", "process_live_server", "process_admin"})

# `make test` distributes whole files (`--dist loadfile`: a module-scoped server starts once)
# in this order: the files that take longest on one worker first, so that none of them starts
# last and holds up the end of the run (measured, `pytest --durations`; the rest follow in
# collection order).
LONGEST_FILES = (
    "tests/integration/test_replicas.py",
    "tests/integration/test_runtime_workers.py",
    "tests/integration/test_metrics_store.py",
    "tests/e2e/test_sdk_client.py",
    "tests/integration/test_workers_hostile.py",
    "tests/integration/test_discovery_sources.py",
    "tests/e2e/test_cli_plugins.py",
    "tests/integration/test_outage.py",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "process: the service (or what the test is about) runs in processes of its own: "
        "`make test-postgres` leaves these out (set by the process_* fixtures, or by hand)",
    )


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the marks set here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.process)
    rank = {path: i for i, path in enumerate(LONGEST_FILES)}

    def file_rank(item: pytest.Item) -> int:
        return rank.get(item.nodeid.split("::", 1)[0], len(rank))

    items.sort(key=file_rank)  # stable: collection order within a file and among the rest


@pytest.fixture(scope="session", autouse=True)
def _postgres_databases() -> Iterator[None]:
    """Drops the databases this session created (one per server home) at its end."""
    yield
    drop_postgres_databases()


def http_client(**options: Any) -> httpx.Client:
    """An httpx client sharing the SDK's one TLS context: by default each new httpx client
    loads the CA bundle (~35 ms of CPU), which polling loops and per-test clients paid by
    the thousand."""
    from mlx_platform.sdk._base import default_tls_context

    return httpx.Client(verify=default_tls_context(), **options)


def http_get(url: str, **options: Any) -> httpx.Response:
    """`httpx.get` without a TLS context of its own (see http_client)."""
    with http_client() as client:
        return client.get(url, **options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of this process without any MLX_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_")}
    env["PYTHONPATH"] = _with_fixture_plugins(env.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def _as_a_fresh_interpreter() -> None:
    """What this process set up and a new interpreter would not have: handlers on the root
    logger (a fresh `mlx` prints WARNING and above to stderr, through logging's last
    resort), modules that read the environment when imported, warning filters."""
    import warnings

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    # Modules that read the environment when imported (rich consoles sized from COLUMNS,
    # typer's help settings), imported again from this environment
    for name in list(sys.modules):
        if name.startswith(("mlx_platform.cli", "typer.rich_utils")):
            del sys.modules[name]
    warnings.resetwarnings()
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning):
        warnings.simplefilter("ignore", category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    warnings.simplefilter("ignore", ResourceWarning)


def forked_mlx(
    args: list[str], env: dict[str, str], stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`mlx ARGS` in a process of its own, forked from this one instead of started afresh.

    The command runs as `mlx` runs it (`cli.main.main()`, its own stdin, stdout and stderr
    file descriptors, this environment, its exit code), without the ~0.3 s of CPU a new
    interpreter spends importing typer, pydantic, httpx and the SDK: ~110 calls made that
    the biggest single cost of the suite. Whether the installed `mlx` starts and imports
    as it should is the business of the tests that exec it (`mlx_cli`, test_version_flag,
    the missing-typer test, the README walk-through) and of bench/bench_cli.py."""
    import importlib
    import tempfile

    with (
        tempfile.TemporaryFile() as fin,
        tempfile.TemporaryFile() as fout,
        tempfile.TemporaryFile() as ferr,
    ):
        fin.write((stdin or "").encode())
        fin.flush()
        fin.seek(0)
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 70
            try:
                os.dup2(fin.fileno(), 0)
                os.dup2(fout.fileno(), 1)
                os.dup2(ferr.fileno(), 2)
                sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
                sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
                os.environ.clear()
                os.environ.update(env)
                _as_a_fresh_interpreter()
                sys.argv = ["mlx", *args]
                try:
                    importlib.import_module("mlx_platform.cli.main").main()
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except BaseException:  # noqa: BLE001 - as an uncaught exception ends `mlx`
                    import traceback

                    traceback.print_exc()
                    code = 1
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except BaseException:  # noqa: BLE001,S110 - ending anyway
                        pass
                os._exit(code)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise subprocess.TimeoutExpired(["mlx", *args], timeout)
            time.sleep(0.002)
        fout.seek(0)
        ferr.seek(0)
        return subprocess.CompletedProcess(
            ["mlx", *args],
            os.waitstatus_to_exitcode(status),
            fout.read().decode("utf-8", errors="replace"),
            ferr.read().decode("utf-8", errors="replace"),
        )


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


@functools.cache
def _explicit_settings_class() -> Any:
    from mlx_platform.settings import Settings

    class ExplicitSettings(Settings):
        """Settings from the values given only, never from this process's MLX_* environment
        (the runner's own variables must not reach a test's server)."""

        @classmethod
        def settings_customise_sources(
            cls, settings_cls: Any, init_settings: Any, **_: Any
        ) -> tuple[Any, ...]:
            return (init_settings,)

    return ExplicitSettings


def _explicit_settings(home: Path, **settings: Any) -> Any:
    return _explicit_settings_class()(home=home, **settings)


def _setting_names(env: dict[str, str]) -> dict[str, str]:
    """{"MLX_JWT_SECRET": v} -> {"jwt_secret": v}"""
    return {k[4:].lower(): v for k, v in env.items() if k.startswith("MLX_") and k != "MLX_HOME"}


class LiveServer:
    """What every test server offers; `InProcessServer` and `ProcessServer` below."""

    url: str
    home: Path
    env: dict[str, str]  # the MLX_* variables of this server: for `mlx` commands on its home
    pid: int  # the process the service runs in (the test process for an in-process server)

    def __init__(self) -> None:
        self.tokens: dict[tuple[str, ...], str] = {}

    @property
    def admin_token(self) -> str:
        return (self.home / "admin.token").read_text().strip()

    def token(self, *scopes: str, subject: str = "tester", ttl: int = 3600) -> str:
        """A token minted with the code of `mlx token create` (server.auth.create_token with
        the secret of this server's settings); tests of the command itself run it."""
        from mlx_platform.server.auth import create_token

        key = (subject, str(ttl), *scopes)
        if key not in self.tokens:
            secret = _explicit_settings(self.home, **_setting_names(self.env)).resolved_jwt_secret
            self.tokens[key] = create_token(secret, subject, list(scopes), ttl)
        return self.tokens[key]

    def client(
        self, token: str | None = None, *, scopes: tuple[str, ...] = ("plugins:admin",)
    ) -> httpx.Client:
        """A client with a token of `scopes` (or `token`; "" for none)."""
        headers = {}
        tok = token if token is not None else self.token(*scopes)
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        return self._client(headers)

    @functools.cached_property
    def anonymous(self) -> httpx.Client:
        """A client without a token (closed when the server stops)."""
        return self.client(token="")

    def _client(self, headers: dict[str, str]) -> httpx.Client:
        raise NotImplementedError

    def _close_anonymous(self) -> None:
        client = self.__dict__.pop("anonymous", None)
        if client is not None:
            client.close()

    def log_text(self) -> str:
        raise NotImplementedError

    def stop(self) -> int:
        raise NotImplementedError


class ProcessServer(LiveServer):
    """`mlx serve` in its own process."""

    def __init__(
        self,
        url: str,
        home: Path,
        env: dict[str, str],
        log_path: Path,
        process: subprocess.Popen[bytes],
        stdout_path: Path,
    ) -> None:
        super().__init__()
        self.url, self.home, self.env = url, home, env
        self.log_path, self.process, self.stdout_path = log_path, process, stdout_path
        self.pid = process.pid

    def _client(self, headers: dict[str, str]) -> httpx.Client:
        return http_client(base_url=self.url, headers=headers, timeout=60)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") + self.stdout_path.read_text(
            errors="replace"
        )

    def stop(self) -> int:
        from mlx_platform.testing.service import terminate

        self._close_anonymous()
        return terminate(self.process)


def start_server(home: Path, **settings: str) -> ProcessServer:
    """`mlx serve` on `home` with these MLX_* variables, ready (its /healthz answers)."""
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

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            return http_get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        poll(ready, bool, timeout=60, what="server ready")
    except AssertionError:
        proc.kill()
        raise RuntimeError(f"server did not become ready:\n{log_path.read_text()}") from None
    return ProcessServer(url, home, env, log_path, proc, stdout_path)


class _PortalTransport(httpx.BaseTransport):
    """A synchronous httpx transport that hands each request to `httpx.ASGITransport` on the
    server's event loop (an anyio blocking portal).

    Why not starlette's TestClient: it ties the lifespan and the event loop to one client
    (entering a client runs the lifespan), while tests hold many clients (tokens of different
    scopes, one per thread) on one started service, and it raises server exceptions into the
    test unless told not to. ASGITransport is httpx's own ASGI transport; this class only makes
    it synchronous and keeps httpx's read timeout: the request runs as a task of the portal and
    the caller waits on its future, so a handler stuck in a worker thread cannot hold the test
    past its timeout (a cancel scope around the call would wait for that thread)."""

    def __init__(self, server: InProcessServer) -> None:
        self.server = server
        # raise_app_exceptions=False: an unhandled error is the 500 a client would get (the
        # service's middleware has already answered it in the envelope and logged it)
        self.asgi = httpx.ASGITransport(app=server.app, raise_app_exceptions=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        portal = self.server.portal
        if portal is None:
            raise httpx.ConnectError("the in-process server is stopped", request=request)
        request.read()  # the body as bytes: a stream both sync and async, as ASGITransport needs

        async def call() -> tuple[int, Any, bytes]:
            response = await self.asgi.handle_async_request(request)
            return response.status_code, response.headers, await response.aread()

        timeout = request.extensions.get("timeout", {}).get("read")
        future = portal.start_task_soon(call)
        try:
            status, headers, content = future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise httpx.ReadTimeout(f"no answer within {timeout} s", request=request) from None
        return httpx.Response(status, headers=headers, content=content, request=request)


class _LogCapture(logging.Handler):
    """This process's log records while a server runs, formatted as the service formats them
    and passed through the same secret redactor (server/logging_setup.py); not those of the
    test's own clients (httpx, the SDK), which a service process's log would not hold."""

    CLIENT_LOGGERS = ("httpx", "httpcore", "mlx_platform.sdk")

    def __init__(self) -> None:
        from mlx_platform.core.secrets import REDACTOR
        from mlx_platform.server.logging_setup import LINE_FORMAT

        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(LINE_FORMAT))
        self.addFilter(REDACTOR)
        self.buffer = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(self.CLIENT_LOGGERS):
            return
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - as logging.Handler.handleError would
            line = f"(unformattable record {record.msg!r})"
        with self.lock:  # type: ignore[union-attr]
            self.buffer.write(line + "\n")

    def text(self) -> str:
        with self.lock:  # type: ignore[union-attr]
            return self.buffer.getvalue()


class InProcessServer(LiveServer):
    """The service's ASGI app in this process, started (lifespan entered) once.

    `url` names no socket: requests go through `client()` (or `transport()` for an httpx
    client of one's own, such as the SDK's `http_client`). Log records are this process's
    while the server runs: with several in-process servers at once, each sees the others'."""

    def __init__(self, home: Path, **settings: str) -> None:
        super().__init__()
        from mlx_platform.cli.main import ensure_admin_token
        from mlx_platform.server.app import create_app

        self.home = home
        self.url = "http://mlx.inprocess"  # no such host: a request past the transport fails
        self.pid = os.getpid()
        if on_postgres() and "database_url" not in settings:
            settings["database_url"] = postgres_url_for(home, 0)
        settings.setdefault("isolation", "inprocess")
        settings.setdefault("port", "0")  # the address it records for itself names no socket
        self.settings = _explicit_settings(home, **settings)
        self.env = clean_env(
            MLX_HOME=str(home), **{f"MLX_{k.upper()}": str(v) for k, v in settings.items()}
        )
        self._log = _LogCapture()
        logging.getLogger().addHandler(self._log)
        self._stack = contextlib.ExitStack()
        self.portal: Any = None
        try:
            ensure_admin_token(self.settings)  # as `mlx serve` does before it serves
            self.app = create_app(self.settings)
            import anyio.from_thread

            self.portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
            # The ASGI lifespan as Starlette's router runs it on `lifespan.startup`
            self._stack.enter_context(
                self.portal.wrap_async_context_manager(self.app.router.lifespan_context(self.app))
            )
        except BaseException:
            self.stop()
            raise

    @property
    def core(self) -> Any:
        """The service's Core (settings, database, host): for tests that look inside."""
        return self.app.state.core

    def transport(self) -> httpx.BaseTransport:
        return _PortalTransport(self)

    def _client(self, headers: dict[str, str]) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers=headers, timeout=60, transport=self.transport()
        )

    def log_text(self) -> str:
        return self._log.text()

    def stop(self) -> int:
        self._close_anonymous()
        try:
            self._stack.close()  # the lifespan's exit (plugins stopped) on the loop, then the loop
        finally:
            self.portal = None
            logging.getLogger().removeHandler(self._log)
        return 0


def make_factory(
    tmp_path: Path, start: Callable[..., LiveServer], **defaults: Any
) -> Iterator[Callable[..., LiveServer]]:
    """A server factory for a fixture: `start(home, **settings)` with `defaults` under the
    settings of each call; every server it made is stopped at the end."""
    started: list[LiveServer] = []

    def make(home: Path | None = None, **settings: Any) -> LiveServer:
        srv = start(home or tmp_path / f"home{len(started)}", **{**defaults, **settings})
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


def start_inprocess(home: Path, **settings: Any) -> InProcessServer:
    """An in-process server on `home` with these settings (names without MLX_, lower case)."""
    return InProcessServer(home, **{k: str(v) for k, v in settings.items()})


def start_process(home: Path, **settings: Any) -> ProcessServer:
    """`mlx serve` on `home` with these settings (names without MLX_, lower case)."""
    return start_server(home, **{f"MLX_{k.upper()}": str(v) for k, v in settings.items()})


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start in-process servers with given settings (names without MLX_, lower case)."""
    yield from make_factory(tmp_path, start_inprocess)


@pytest.fixture
def process_server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start `mlx serve` processes with given settings (names without MLX_, lower case)."""
    yield from make_factory(tmp_path, start_process)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One in-process server per test module, with the example plugins, on a fresh home."""
    srv = start_inprocess(tmp_path_factory.mktemp("live") / "home")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def process_live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One `mlx serve` process per test module, with the example plugins, on a fresh home."""
    srv = start_server(tmp_path_factory.mktemp("live") / "home")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.client() as c:
        yield c


@pytest.fixture(scope="module")
def process_admin(process_live_server: LiveServer) -> Iterator[httpx.Client]:
    with process_live_server.client() as c:
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
            except RuntimeError as exc:  # the client was closed: the test has ended
                self.answers.append((0, repr(exc)))
                return
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
        if parent is None:
            return True
        # this process is the service of every in-process server
        return parent.pid != os.getpid() and "mlx_platform" not in " ".join(parent.cmdline())
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


def holds(
    fetch: Callable[[], T],
    ok: Callable[[T], bool],
    *,
    seconds: float,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Check that `ok(fetch())` stays true for `seconds`: for what must NOT happen within a
    time (a restart that was cancelled, a worker that must be kept), where no event comes to
    wait on. Checked all along the window, not once after a sleep. The last value."""
    t0 = time.monotonic()
    while True:
        value = fetch()
        if not ok(value):
            elapsed = time.monotonic() - t0
            raise AssertionError(f"{what}: no longer true after {elapsed:.2f} s: {value!r}")
        if time.monotonic() - t0 >= seconds:
            return value
        time.sleep(interval)
