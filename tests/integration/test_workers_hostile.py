"""Careless and hostile plugins in real worker processes (issue 11, "Workers").

Each test starts a service with the settings it needs (in this process, its plugins in worker
processes; `mlx serve` as another user for the worker-user test) and drives plugins of
`tests/fixtures/plugin_pkgs/mlx_hostile_plugins.py` through the API: what a worker's
environment holds, what happens to the processes a plugin spawns, its memory cap, timeouts
that count the wait for a call slot, workers wedged or burning CPU past a timeout, the result
cap, and what a plugin prints reaching the service log masked and bounded. Waits poll with
deadlines; the upper bounds asserted are the ones the behaviour promises, with slack for a
shared machine.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from cryptography.fernet import Fernet

from tests.conftest import (
    FIXTURE_PLUGINS,
    ROOT,
    LiveServer,
    assert_error,
    free_port,
    holds,
    http_get,
    invoke,
    make_factory,
    poll,
    process_gone,
    register,
    start_inprocess,
)

HOSTILE = "mlx_hostile_plugins.HostilePlugin"
SECRET_SCHEMA = {"password": {"type": "string", "secret": True}}


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """In-process services whose plugins run in worker processes (their own isolation)."""
    yield from make_factory(tmp_path, start_inprocess, isolation="")


def call(client: httpx.Client, plugin_id: str, operation: str, **args: Any) -> Any:
    r = invoke(client, plugin_id, operation, **args)
    assert r.status_code == 200, r.text
    return r.json()["data"]["result"]


def hostile(
    client: httpx.Client,
    name: str,
    *,
    metadata: dict[str, Any] | None = None,
    configuration: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    plugin_id = register(
        client,
        name,
        class_path=HOSTILE,
        metadata=metadata or {},
        configuration_schema=SECRET_SCHEMA,
        **overrides,
    )
    r = client.post(
        f"/v1/plugins/{plugin_id}/activate", json={"configuration": configuration or {}}
    )
    assert r.status_code == 200, r.text
    return plugin_id


def worker_pid(client: httpx.Client, plugin_id: str) -> int:
    return int(call(client, plugin_id, "pid"))


class InBackground(threading.Thread):
    def __init__(self, request: Callable[[], httpx.Response]) -> None:
        super().__init__(daemon=True)
        self.request = request
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.response = self.request()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


# ---------------------------------------------------------------- environment


def test_a_worker_gets_no_service_secret_only_what_the_plugin_declares(
    server_factory: Callable[..., LiveServer],
    unique_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jwt_secret = "jwt-secret-" + "a" * 40
    fernet_key = Fernet.generate_key().decode()
    db_url = f"sqlite:///{tmp_path / 'hostile.db'}"
    # the environment of the service's process (this one: the service runs in-process),
    # settings included, as `mlx serve` would have them
    monkeypatch.setenv("HOSTILE_DECLARED", "declared-value")
    monkeypatch.setenv("HOSTILE_UNDECLARED", "undeclared-value")
    monkeypatch.setenv("MLX_JWT_SECRET", jwt_secret)
    monkeypatch.setenv("MLX_SECRET_KEY", fernet_key)
    monkeypatch.setenv("MLX_DATABASE_URL", db_url)
    server = server_factory(
        seed_builtin_plugins="false",
        jwt_secret=jwt_secret,
        secret_key=fernet_key,
        database_url=db_url,
    )
    with server.client() as client:
        plugin = hostile(
            client,
            unique_name,
            metadata={"environment": ["HOSTILE_DECLARED", "MLX_JWT_SECRET", "MLX_DATABASE_URL"]},
        )
        env = call(client, plugin, "environ")
        ident = call(client, plugin, "identity")

    assert not [k for k in env if k.upper().startswith("MLX_")], sorted(env)
    for secret in (jwt_secret, fernet_key, db_url):
        assert not [k for k, v in env.items() if secret in v], f"{secret[:12]}... reached it"
    assert env.get("HOSTILE_DECLARED") == "declared-value"
    assert "HOSTILE_UNDECLARED" not in env
    assert env.get("PATH") and str(FIXTURE_PLUGINS) in env.get("PYTHONPATH", "")
    # a session and process group of its own
    assert ident["pgid"] == ident["pid"] == ident["sid"]
    assert "declared the service setting MLX_JWT_SECRET" in server.log_text()


# ---------------------------------------------------------------- spawned processes


@pytest.mark.parametrize("force", [False, True], ids=["graceful", "forced"])
def test_processes_a_plugin_spawned_end_with_it(
    server_factory: Callable[..., LiveServer], unique_name: str, force: bool
) -> None:
    server = server_factory(seed_builtin_plugins="false")
    with server.client() as client:
        plugin = hostile(client, unique_name)
        worker = worker_pid(client, plugin)
        children = call(client, plugin, "spawn", count=50, detached=2)
        assert len(children) == 52
        assert all(psutil.pid_exists(pid) for pid in children)

        r = client.post(f"/v1/plugins/{plugin}/deactivate", json={"force": force})
        assert r.status_code == 200, r.text

        def alive() -> list[int]:
            return [pid for pid in [worker, *children] if not process_gone(pid)]

        poll(alive, lambda left: not left, timeout=5, what="the worker and its 52 children ended")


# ---------------------------------------------------------------- memory cap


def test_a_worker_over_its_memory_cap_is_ended_and_the_plugin_says_why(
    server_factory: Callable[..., LiveServer], unique_name: str
) -> None:
    server = server_factory(seed_builtin_plugins="false", max_restarts="0")
    with server.client() as client:
        plugin = hostile(client, unique_name, metadata={"max_memory_mb": 256})
        worker = worker_pid(client, plugin)
        assert call(client, plugin, "allocate", megabytes=16) == 16 * 1024 * 1024

        err = assert_error(
            invoke(client, plugin, "allocate", megabytes=4096), 424, "PLUGIN_EXECUTION_ERROR"
        )
        assert "256 MB" in err["message"] and "memory" in err["message"], err

        poll(lambda: process_gone(worker), bool, timeout=5, what="the worker ended")
        detail = poll(
            lambda: client.get(f"/v1/plugins/{plugin}").json()["data"],
            lambda d: d["status"] == "error",
            timeout=10,
            what="status error",
        )
        text = str(detail)
        assert "256 MB" in text and "memory" in text, detail
        assert detail["health"]["status"] != "healthy", detail["health"]


def test_the_memory_cap_setting_applies_to_plugins_that_set_none(
    server_factory: Callable[..., LiveServer], unique_name: str
) -> None:
    server = server_factory(seed_builtin_plugins="false", worker_max_memory_mb="300")
    with server.client() as client:
        capped = hostile(client, unique_name)
        uncapped = hostile(client, unique_name + "_own", metadata={"max_memory_mb": 0})

        err = assert_error(
            invoke(client, capped, "allocate", megabytes=1024), 424, "PLUGIN_EXECUTION_ERROR"
        )
        assert "300 MB" in err["message"], err
        # metadata max_memory_mb 0: no cap for that plugin
        assert call(client, uncapped, "allocate", megabytes=1024) == 1024 * 1024 * 1024


# ---------------------------------------------------------------- timeouts


def test_an_invocation_never_waits_longer_than_its_timeout_for_a_call_slot(
    server_factory: Callable[..., LiveServer], unique_name: str, tmp_path: Path
) -> None:
    server = server_factory(seed_builtin_plugins="false", calls_per_plugin="1")
    started = tmp_path / "started"
    with server.client() as client, server.client() as other:
        plugin = hostile(client, unique_name)
        busy = InBackground(
            lambda: invoke(other, plugin, "sleep", seconds=6, started_file=str(started))
        )
        busy.start()
        poll(started.exists, bool, timeout=10, what="the first call runs")

        t0 = time.monotonic()
        r = invoke(client, plugin, "pid", timeout=1)
        waited = time.monotonic() - t0

        err = assert_error(r, 504, "OPERATION_TIMEOUT")
        assert waited < 2.5, f"answered after {waited:.2f} s, timeout 1 s"
        assert "did not start" in err["message"], err
        busy.join(30)
        assert busy.response is not None and busy.response.status_code == 200
        # the queued call never ran later either: the slot serves the next call at once
        assert worker_pid(client, plugin) == int(started.read_text())


def test_a_worker_whose_threads_are_all_held_by_timed_out_calls_is_replaced_at_once(
    server_factory: Callable[..., LiveServer], unique_name: str
) -> None:
    server = server_factory(
        seed_builtin_plugins="false",
        calls_per_plugin="64",
        timed_out_call_grace="600",  # only the rule under test may act
        health_interval="0",  # no health rounds either
    )
    with server.client() as client:
        plugin = hostile(client, unique_name)
        worker = worker_pid(client, plugin)

        def hung_call() -> httpx.Response:
            return client.post(
                f"/v1/plugins/{plugin}/invoke",
                json={"operation": "hang", "arguments": {}, "timeout": 3},
                timeout=60,
            )

        calls = [InBackground(hung_call) for _ in range(64)]
        for c in calls:
            c.start()
        for c in calls:
            c.join(60)
        statuses = sorted(c.response.status_code if c.response else 0 for c in calls)
        assert set(statuses) <= {504, 424}, statuses
        timed_out_at = time.monotonic()

        poll(lambda: process_gone(worker), bool, timeout=5, what="the wedged worker was ended")
        new = poll(
            lambda: invoke(client, plugin, "pid", timeout=5),
            lambda r: r.status_code == 200,
            timeout=15,
            what="the plugin answers from a new worker",
        )
        assert new.json()["data"]["result"] != worker
        assert time.monotonic() - timed_out_at < 15
        assert "all 64 threads of the worker are held" in server.log_text()


def test_a_timed_out_call_still_running_after_its_grace_is_stopped(
    server_factory: Callable[..., LiveServer], unique_name: str
) -> None:
    server = server_factory(seed_builtin_plugins="false", timed_out_call_grace="1")
    with server.client() as client:
        plugin = hostile(client, unique_name)
        worker = worker_pid(client, plugin)

        assert_error(
            invoke(client, plugin, "spin", timeout=1, seconds=600), 504, "OPERATION_TIMEOUT"
        )

        # grace 1 s, then SIGTERM (and SIGKILL 2 s later at most)
        poll(lambda: process_gone(worker), bool, timeout=8, what="the spinning worker ended")
        new = poll(
            lambda: invoke(client, plugin, "pid", timeout=5),
            lambda r: r.status_code == 200,
            timeout=15,
            what="the plugin answers from a new worker",
        )
        assert new.json()["data"]["result"] != worker
        assert "was still running 1 s after its timeout" in server.log_text()


def test_a_timed_out_call_that_ends_within_its_grace_keeps_its_worker(
    server_factory: Callable[..., LiveServer], unique_name: str
) -> None:
    server = server_factory(seed_builtin_plugins="false", timed_out_call_grace="3")
    with server.client() as client:
        plugin = hostile(client, unique_name)
        worker = worker_pid(client, plugin)

        assert_error(
            invoke(client, plugin, "sleep", timeout=0.5, seconds=1.5), 504, "OPERATION_TIMEOUT"
        )
        # until past the grace (the check runs 3 s after the timeout): the same worker serves
        holds(
            lambda: (
                worker_pid(client, plugin),
                client.get(f"/v1/plugins/{plugin}").json()["data"]["status"],
            ),
            lambda seen: seen == (worker, "active"),
            seconds=4,
            interval=0.25,
            what="the same worker, active",
        )


# ---------------------------------------------------------------- results


@pytest.mark.parametrize("isolation", ["process", "inprocess"])
def test_a_result_over_the_cap_is_refused_and_the_plugin_keeps_serving(
    server_factory: Callable[..., LiveServer], unique_name: str, isolation: str
) -> None:
    server = server_factory(seed_builtin_plugins="false", max_invoke_result_bytes=str(1 << 20))
    with server.client() as client:
        plugin = hostile(client, unique_name, isolation=isolation)
        first = worker_pid(client, plugin)

        assert len(call(client, plugin, "big_result", megabytes=0.9)) == int(0.9 * (1 << 20))
        err = assert_error(
            invoke(client, plugin, "big_result", megabytes=2), 424, "PLUGIN_EXECUTION_ERROR"
        )

        assert "over the cap of 1048576 bytes" in err["message"], err
        assert err["details"]["max_result_bytes"] == 1 << 20
        assert worker_pid(client, plugin) == first


# ---------------------------------------------------------------- output


def test_what_a_plugin_prints_and_logs_reaches_the_service_log_masked_and_bounded(
    server_factory: Callable[..., LiveServer], unique_name: str
) -> None:
    server = server_factory(seed_builtin_plugins="false")
    password = "pw-hostile-" + "Zq9" * 6
    with server.client() as client:
        plugin = hostile(client, unique_name, configuration={"password": password})
        assert call(client, plugin, "talk", marker="TALK-MARK") is True

        def talk_lines() -> list[str]:
            return [line for line in server.log_text().splitlines() if "TALK-MARK" in line]

        lines = poll(talk_lines, lambda ls: len(ls) >= 4, timeout=10, what="forwarded lines")
        text = "\n".join(lines)
        assert password not in server.log_text()
        assert f"[{plugin}] stdout: TALK-MARK stdout connecting with ********" in text, text
        assert f"[{plugin}] stderr: TALK-MARK stderr connecting with ********" in text, text
        assert f"WARNING mlx_platform.plugin: [{plugin}] log: hostile: TALK-MARK logging" in text
        assert "\x1b" not in text and "\\x1b[2J\\x0dcharacters" in text, text

        service = psutil.Process(server.pid)  # this process, for an in-process service
        rss_before = service.memory_info().rss
        log_before = len(server.log_text())
        assert call(client, plugin, "flood", megabytes=300, lines=20_000, marker="FLOOD") is True
        poll(
            lambda: "FLOOD" in server.log_text() and "lines are dropped" in server.log_text(),
            bool,
            timeout=30,
            what="the flood was forwarded",
        )
        grew = service.memory_info().rss - rss_before
        log_grew = len(server.log_text()) - log_before

    assert grew < 64 << 20, f"service memory grew {grew >> 20} MB"
    assert log_grew < 2 << 20, f"the log grew {log_grew >> 10} KB"
    long_line = next(line for line in server.log_text().splitlines() if "FLOOD long line" in line)
    assert "more bytes cut]" in long_line and len(long_line) < 5000


# ---------------------------------------------------------------- unprivileged user


def _python_for_nobody() -> tuple[str, str] | None:
    """An interpreter the user `nobody` can run, and a PYTHONPATH giving it this project and
    its dependencies; None when there is none here."""
    venv_site = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site = venv_site / "site-packages"
    path = os.pathsep.join([str(site), str(ROOT / "src"), str(FIXTURE_PLUGINS)])
    for candidate in (
        sys.executable,
        f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}",
    ):
        try:  # the way the service starts a worker as that user
            probe = subprocess.run(
                [candidate, "-c", "import mlx_platform.runtime.worker, orjson, psutil"],
                env={"PYTHONPATH": path, "PATH": os.environ.get("PATH", "")},
                user="nobody",
                group=pwd.getpwnam("nobody").pw_gid,
                extra_groups=[],
                cwd="/",
                capture_output=True,
                check=False,
            )
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate, path
    return None


@pytest.mark.process  # `mlx serve` as root, its workers as nobody
@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs a service running as root")
def test_workers_run_as_the_worker_user_and_cannot_read_the_keys(
    tmp_path: Path, unique_name: str
) -> None:
    found = _python_for_nobody()
    if found is None:
        pytest.skip("no Python interpreter here that the user nobody can run")
    python, pythonpath = found
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_")}
    env.update(
        PYTHONPATH=pythonpath,
        MLX_HOME=str(home),
        MLX_WORKER_USER="nobody",
        MLX_SEED_BUILTIN_PLUGINS="false",
    )
    log_path = tmp_path / "server.log"
    proc = subprocess.Popen(
        [
            python,
            "-m",
            "mlx_platform.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        poll(
            lambda: _ready(url, proc),
            bool,
            timeout=60,
            what=f"the service answers ({log_path.read_text(errors='replace')[-2000:]})",
        )
        token = (home / "admin.token").read_text().strip()
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as c:
            plugin = hostile(c, unique_name)
            ident = call(c, plugin, "identity")
            nobody = pwd.getpwnam("nobody")
            assert (ident["uid"], ident["gid"]) == (nobody.pw_uid, nobody.pw_gid)
            for key in ("jwt.secret", "secret.key", "admin.token", "mlx.db"):
                assert (home / key).exists()
                got = call(c, plugin, "read_file", path=str(home / key))
                assert got == {"read": False, "error": "PermissionError"}, (key, got)
            assert call(c, plugin, "environ").get("HOME") == nobody.pw_dir
    finally:
        proc.terminate()
        proc.wait(30)


def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, "the service ended"
    try:
        return http_get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
