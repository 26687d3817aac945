"""Plugins in worker processes of their own (isolation "process"), against an in-process service.

Every test here talks to a real service whose plugins run in real worker processes: crashes,
kills, restarts with backoff, giving up, graceful and forced deactivation, hot and cold
configuration changes, service restart and shutdown, the background health checker, `/metrics`,
and in-process isolation. The service runs in this process (`live_server`, `server_factory`
below: isolation "", each plugin's own); the tests that count the service's child processes or
restart it run it as `mlx serve` (`process_server_factory`), since this process has children
of its own.

Worker process ids are learned from the plugin itself (operation `pid` of
`mlx_test_plugins.WorkerProbePlugin`). Waits poll with generous deadlines; the only upper
bounds asserted are the ones the behaviour promises.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    KeepCalling,
    LiveServer,
    assert_error,
    holds,
    invoke,
    make_factory,
    poll,
    process_gone,
    register,
    start_inprocess,
)

PROBE = "mlx_test_plugins.WorkerProbePlugin"
CRASH_ON_START = "mlx_test_plugins.CrashOnStartPlugin"

# A dead worker is noticed within 2 s (promise); 0.5 s of slack for the HTTP round trips.
DETECTION_LIMIT_S = 2.5

# ---------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """An in-process service whose plugins run in worker processes (their own isolation)."""
    srv = start_inprocess(tmp_path_factory.mktemp("live") / "home", isolation="")
    yield srv
    srv.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """In-process services whose plugins run in worker processes (their own isolation)."""
    yield from make_factory(tmp_path, start_inprocess, isolation="")


# ---------------------------------------------------------------- helpers


def call(client: httpx.Client, plugin_id: str, operation: str, **args: Any) -> Any:
    r = invoke(client, plugin_id, operation, **args)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    return body["data"]["result"]


def worker_pid(client: httpx.Client, plugin_id: str) -> int:
    return int(call(client, plugin_id, "pid"))


def detail(client: httpx.Client, plugin_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/plugins/{plugin_id}")
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def health(client: httpx.Client, plugin_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/plugins/{plugin_id}/health")
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def active_probe(
    client: httpx.Client,
    name: str,
    configuration: dict[str, Any] | None = None,
    *,
    class_path: str = PROBE,
    **overrides: Any,
) -> str:
    """Register a WorkerProbePlugin (or `class_path`) and activate it."""
    plugin_id = register(client, name, class_path=class_path, **overrides)
    r = client.post(
        f"/v1/plugins/{plugin_id}/activate", json={"configuration": configuration or {}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "active"
    return plugin_id


def deactivate(client: httpx.Client, plugin_id: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"/v1/plugins/{plugin_id}/deactivate", json=body)
    assert r.status_code == 200, r.text
    data = dict(r.json()["data"])
    assert data["status"] == "inactive"
    return data


def is_worker_of(pid: int, server: LiveServer) -> bool:
    try:
        return psutil.Process(pid).ppid() == server.pid
    except psutil.NoSuchProcess:
        return False


def wait_gone(pid: int, timeout: float = 5.0) -> None:
    poll(lambda: process_gone(pid), bool, timeout=timeout, what=f"worker process {pid} ended")


def wait_file(path: Path, timeout: float = 10.0) -> None:
    poll(path.exists, bool, timeout=timeout, what=f"{path} written")


class InBackground(threading.Thread):
    """Run one request (or any call) on a thread of its own; `.response` (what it returned)
    or `.error` once joined."""

    def __init__(self, func: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.func = func
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None

    def run(self) -> None:
        try:
            self.response = self.func()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def result(self, timeout: float = 15.0) -> httpx.Response:
        self.join(timeout)
        assert not self.is_alive(), f"the background request did not end within {timeout} s"
        assert self.error is None, repr(self.error)
        assert self.response is not None
        return self.response


def assert_served_throughout(answers: list[tuple[int, Any]], expected_pid: int) -> None:
    assert len(answers) >= 5, answers
    failures = [a for a in answers if a[0] != 200]
    assert not failures, f"the other plugin failed meanwhile: {failures[:3]}"
    pids = {a[1]["data"]["result"] for a in answers}
    assert pids == {expected_pid}, pids


def assert_error_envelope(r: httpx.Response) -> dict[str, Any]:
    """A failure answered with the error envelope: no 500, no trace, the request's id."""
    assert r.status_code >= 400 and r.status_code != 500, r.text
    body = r.json()
    assert body["success"] is False, body
    err = body["error"]
    assert isinstance(err["code"], str) and err["code"]
    assert isinstance(err["message"], str) and err["message"]
    assert err["request_id"] == r.headers["x-request-id"]
    assert "Traceback" not in r.text
    return dict(err)


def worker_children(server: LiveServer) -> list[int]:
    """Live worker processes (`mlx_platform.runtime.worker`) the server started (a server of
    its own process: this one's children include the workers of every in-process server)."""
    assert server.pid != os.getpid(), "worker_children needs a process server"
    found = []
    for child in psutil.Process(server.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "mlx_platform.runtime.worker" in (
                " ".join(child.cmdline())
            ):
                found.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def parse_time(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def restart_server_settings(**extra: str) -> dict[str, str]:
    """A server with no example plugins and a restart delay long enough (1.5 s) to see the
    `error` status by polling before the supervisor brings the plugin back."""
    settings = {
        "seed_builtin_plugins": "false",
        "restart_backoff_base": "1.5",
        "restart_backoff_cap": "1.5",
        "max_restarts": "3",
    }
    settings.update(extra)
    return settings


# ---------------------------------------------------------------- failures stay in the worker


def test_an_operation_that_raises_answers_424_and_the_same_worker_keeps_serving(
    live_server: LiveServer, admin: httpx.Client, unique_name: str
) -> None:
    failing = active_probe(admin, unique_name)
    other = active_probe(admin, unique_name + "_other")
    pid = worker_pid(admin, failing)
    other_pid = worker_pid(admin, other)
    assert pid != live_server.pid
    assert pid != other_pid
    assert is_worker_of(pid, live_server)

    r = invoke(admin, failing, "fail", message="the warehouse is closed")

    err = assert_error(r, 424, "PLUGIN_EXECUTION_ERROR")
    assert "the warehouse is closed" in str(err["message"])
    assert worker_pid(admin, failing) == pid
    assert call(admin, failing, "echo", value={"still": "here"}) == {"still": "here"}
    assert detail(admin, failing)["status"] == "active"
    assert worker_pid(admin, other) == other_pid
    assert call(admin, other, "echo", value=1) == 1


def test_an_operation_that_hangs_times_out_and_the_worker_keeps_serving(
    admin: httpx.Client, unique_name: str
) -> None:
    plugin = active_probe(admin, unique_name)
    pid = worker_pid(admin, plugin)

    r = invoke(admin, plugin, "sleep", timeout=0.5, seconds=30)

    assert_error(r, 504, "OPERATION_TIMEOUT")
    assert worker_pid(admin, plugin) == pid
    assert detail(admin, plugin)["status"] == "active"
    deactivate(admin, plugin, force=True)  # the 30 s sleep is still running in the worker


def test_many_calls_hung_in_one_plugin_do_not_stall_the_service_or_other_plugins(
    server_factory: Callable[..., LiveServer], unique_name: str, tmp_path: Path
) -> None:
    server = server_factory(seed_builtin_plugins="false")
    release = tmp_path / "release"
    started = tmp_path / "started"
    started.mkdir()
    calls = 48
    with server.client() as client:
        stuck = active_probe(client, unique_name)
        other = active_probe(client, unique_name + "_other")
        other_pid = worker_pid(client, other)
        sent = threading.Semaphore(0)

        def hung_call(i: int) -> Callable[[], httpx.Response]:
            def request() -> httpx.Response:
                sent.release()
                return client.post(
                    f"/v1/plugins/{stuck}/invoke",
                    json={
                        "operation": "wait_for_file",
                        "arguments": {"path": str(release), "started_file": str(started / str(i))},
                    },
                    timeout=120,
                )

            return request

        hung = [InBackground(hung_call(i)) for i in range(calls)]
        try:
            for t in hung:
                t.start()
            # Let the calls pile up: every thread has sent its call, and the plugin's 16 call
            # slots are taken (the rest queue). A loaded machine may take seconds for that.
            for _ in range(calls):
                assert sent.acquire(timeout=30), "the calls were not all sent"
            poll(
                lambda: len(list(started.iterdir())),
                lambda n: n >= 16,
                timeout=30,
                what="the stuck calls reached the plugin",
            )

            answers = {}
            for what, request in {
                "GET /healthz": lambda: client.get("/healthz", timeout=5),
                "GET other plugin": lambda: client.get(f"/v1/plugins/{other}", timeout=5),
                "invoke other plugin": lambda: client.post(
                    f"/v1/plugins/{other}/invoke",
                    json={"operation": "pid", "arguments": {}},
                    timeout=5,
                ),
            }.items():
                try:
                    answers[what] = request().status_code
                except httpx.TimeoutException:
                    answers[what] = "no answer within 5 s"
            assert answers == {
                "GET /healthz": 200,
                "GET other plugin": 200,
                "invoke other plugin": 200,
            }, f"{len(list(started.iterdir()))} calls stuck in {stuck}: {answers}"
            assert worker_pid(client, other) == other_pid
        finally:
            release.write_text("go")
            for t in hung:
                t.join(60)


def test_memory_a_plugin_leaks_grows_its_worker_not_the_service(
    live_server: LiveServer, admin: httpx.Client, unique_name: str
) -> None:
    plugin = active_probe(admin, unique_name)
    pid = worker_pid(admin, plugin)
    service = psutil.Process(live_server.pid)  # this process, for an in-process service
    service_before = service.memory_info().rss
    worker_before = psutil.Process(pid).memory_info().rss

    assert call(admin, plugin, "leak", megabytes=120) == 120

    worker_after = psutil.Process(pid).memory_info().rss
    service_after = service.memory_info().rss
    assert worker_after - worker_before >= 100 * 1024 * 1024
    assert service_after - service_before < 60 * 1024 * 1024
    usage = health(admin, plugin)["checks"]["resource_usage"]
    assert usage["scope"] == "worker_process"
    assert usage["memory_usage_mb"] >= 120
    deactivate(admin, plugin, force=True)  # give the memory back


def test_a_worker_that_calls_os_exit_is_marked_error_then_restarted_in_a_new_process(
    server_factory: Callable[..., LiveServer], unique_name: str
) -> None:
    server = server_factory(**restart_server_settings())
    with server.client() as client, server.client() as bystander_client:
        crashing = active_probe(client, unique_name)
        bystander = active_probe(client, unique_name + "_bystander")
        old_pid = worker_pid(client, crashing)
        bystander_pid = worker_pid(client, bystander)
        keep_calling = KeepCalling(bystander_client, bystander)
        keep_calling.start()

        t0 = time.monotonic()
        r = invoke(client, crashing, "exit_now", code=7)

        err = assert_error(r, 424, "PLUGIN_EXECUTION_ERROR")
        assert re.search(r"\b7\b", str(err["message"]).replace(crashing, "")), err
        seen = poll(
            lambda: detail(client, crashing),
            lambda d: d["status"] == "error",
            timeout=DETECTION_LIMIT_S - (time.monotonic() - t0),
            interval=0.02,
            what="status error after os._exit(7)",
        )
        reason = str(seen["status_reason"])
        assert re.search(r"exit\w*.*\b7\b", reason.lower()), reason
        wait_gone(old_pid)

        back = poll(
            lambda: detail(client, crashing),
            lambda d: d["status"] == "active",
            timeout=15,
            what="status active again after the restart",
        )
        assert back["status_reason"] is None
        new_pid = worker_pid(client, crashing)
        assert new_pid != old_pid
        assert is_worker_of(new_pid, server)
        assert call(client, crashing, "echo", value="after restart") == "after restart"

        assert_served_throughout(keep_calling.finish(), bystander_pid)
        assert worker_pid(client, bystander) == bystander_pid


def test_a_worker_killed_from_outside_is_marked_error_then_restarted_in_a_new_process(
    server_factory: Callable[..., LiveServer], unique_name: str
) -> None:
    server = server_factory(**restart_server_settings())
    with server.client() as client, server.client() as bystander_client:
        victim = active_probe(client, unique_name)
        bystander = active_probe(client, unique_name + "_bystander")
        old_pid = worker_pid(client, victim)
        bystander_pid = worker_pid(client, bystander)
        assert is_worker_of(old_pid, server)
        keep_calling = KeepCalling(bystander_client, bystander)
        keep_calling.start()

        t0 = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)

        seen = poll(
            lambda: detail(client, victim),
            lambda d: d["status"] == "error",
            timeout=DETECTION_LIMIT_S - (time.monotonic() - t0),
            interval=0.02,
            what="status error after SIGKILL",
        )
        assert "SIGKILL" in str(seen["status_reason"]), seen["status_reason"]
        assert seen["health"]["status"] == "unhealthy"
        r = invoke(client, victim, "pid")
        assert r.status_code != 500, r.text
        assert_error(r, 409, "INVALID_STATE")

        poll(
            lambda: detail(client, victim)["status"],
            lambda s: s == "active",
            timeout=15,
            what="status active again after the restart",
        )
        new_pid = worker_pid(client, victim)
        assert new_pid != old_pid
        assert is_worker_of(new_pid, server)
        assert process_gone(old_pid)

        assert_served_throughout(keep_calling.finish(), bystander_pid)
        assert worker_pid(client, bystander) == bystander_pid


def test_an_operator_deactivation_during_the_restart_delay_cancels_the_restart(
    process_server_factory: Callable[..., LiveServer], unique_name: str
) -> None:
    server = process_server_factory(**restart_server_settings())
    with server.client() as client:
        plugin = active_probe(client, unique_name)
        pid = worker_pid(client, plugin)
        os.kill(pid, signal.SIGKILL)
        poll(
            lambda: detail(client, plugin)["status"],
            lambda s: s == "error",
            timeout=DETECTION_LIMIT_S,
            interval=0.02,
            what="status error after SIGKILL",
        )

        data = deactivate(client, plugin)

        assert data["pending_operations"] == 0
        # The restart was due 1.5 s after the kill: until well past it, nothing comes back.
        holds(
            lambda: (detail(client, plugin)["status"], worker_children(server)),
            lambda seen: seen == ("inactive", []),
            seconds=3.0,
            what="inactive, no worker",
        )
        assert_error(invoke(client, plugin, "pid"), 409, "INVALID_STATE")


def test_after_max_restarts_the_plugin_stays_in_error_until_an_operator_activates_it(
    process_server_factory: Callable[..., LiveServer], unique_name: str, tmp_path: Path
) -> None:
    server = process_server_factory(
        seed_builtin_plugins="false",
        max_restarts="2",
        restart_backoff_base="0.2",
        restart_backoff_cap="1",
    )
    marker = tmp_path / "crash-on-start"
    start_log = tmp_path / "starts"
    config = {"crash_marker": str(marker), "start_log": str(start_log)}
    with server.client() as client:
        plugin = active_probe(client, unique_name, config, class_path=CRASH_ON_START)
        first_pid = worker_pid(client, plugin)
        assert start_log.read_text().split() == [str(first_pid)]
        marker.write_text("every start fails while this file exists")

        os.kill(first_pid, signal.SIGKILL)

        given_up = poll(
            lambda: detail(client, plugin),
            lambda d: "gave up" in str(d["status_reason"]).lower(),
            timeout=20,
            what="the supervisor gives up",
        )
        assert given_up["status"] == "error"
        # Nothing restarts it any more: still in error until well after the longest backoff.
        holds(
            lambda: detail(client, plugin),
            lambda d: d["status"] == "error" and "gave up" in str(d["status_reason"]).lower(),
            seconds=2.5,
            what="given up, in error",
        )
        starts = start_log.read_text().split()
        assert len(starts) == 1 + 2, f"expected the first start and 2 restarts: {starts}"
        assert len(set(starts)) == 3, "each restart runs in a new worker process"
        assert_error(invoke(client, plugin, "pid"), 409, "INVALID_STATE")
        assert worker_children(server) == []

        marker.unlink()
        r = client.post(f"/v1/plugins/{plugin}/activate", json={})

        assert r.status_code == 200, r.text
        assert r.json()["data"]["status"] == "active"
        assert detail(client, plugin)["status"] == "active"
        new_pid = worker_pid(client, plugin)
        assert str(new_pid) not in starts
        assert is_worker_of(new_pid, server)


# ---------------------------------------------------------------- deactivation


def test_graceful_deactivation_waits_for_the_call_in_flight_calls_stop_and_ends_the_worker(
    admin: httpx.Client, live_server: LiveServer, unique_name: str, tmp_path: Path
) -> None:
    stop_marker = tmp_path / "stopped"
    started = tmp_path / "sleep-started"
    plugin = active_probe(admin, unique_name, {"stop_marker": str(stop_marker)})
    pid = worker_pid(admin, plugin)
    with live_server.client() as other_client:
        in_flight = InBackground(
            lambda: invoke(other_client, plugin, "sleep", seconds=1.5, started_file=str(started))
        )
        in_flight.start()
        wait_file(started)

        data = deactivate(admin, plugin, graceful_shutdown_timeout=5)

        assert data["pending_operations"] == 0
        r = in_flight.result()
    assert r.status_code == 200, r.text
    assert r.json()["data"]["result"] == 1.5
    assert stop_marker.exists()
    assert stop_marker.read_text().strip() == f"stopped {pid}"
    wait_gone(pid)
    assert detail(admin, plugin)["status"] == "inactive"


def test_graceful_deactivation_that_times_out_reports_the_call_left_in_flight(
    admin: httpx.Client, live_server: LiveServer, unique_name: str, tmp_path: Path
) -> None:
    stop_marker = tmp_path / "stopped"
    started = tmp_path / "sleep-started"
    plugin = active_probe(admin, unique_name, {"stop_marker": str(stop_marker)})
    pid = worker_pid(admin, plugin)
    with live_server.client() as other_client:
        in_flight = InBackground(
            lambda: invoke(other_client, plugin, "sleep", seconds=3, started_file=str(started))
        )
        in_flight.start()
        wait_file(started)

        data = deactivate(admin, plugin, graceful_shutdown_timeout=0.2)

        assert data["pending_operations"] == 1
        r = in_flight.result()
    assert_error_envelope(r)
    assert stop_marker.read_text().strip() == f"stopped {pid}"
    wait_gone(pid)


def test_forced_deactivation_answers_at_once_and_kills_the_worker_with_its_call_in_flight(
    admin: httpx.Client, live_server: LiveServer, unique_name: str, tmp_path: Path
) -> None:
    started = tmp_path / "sleep-started"
    plugin = active_probe(admin, unique_name)
    pid = worker_pid(admin, plugin)
    with live_server.client() as other_client:
        in_flight = InBackground(
            lambda: invoke(other_client, plugin, "sleep", seconds=5, started_file=str(started))
        )
        in_flight.start()
        wait_file(started)

        t0 = time.monotonic()
        data = deactivate(admin, plugin, force=True)
        elapsed = time.monotonic() - t0

        assert elapsed < 3.0, f"forced deactivation took {elapsed:.2f} s"
        assert data["pending_operations"] == 1
        r = in_flight.result()
    assert in_flight.finished_at is not None and in_flight.finished_at - t0 < 4.0
    assert_error_envelope(r)
    wait_gone(pid)
    assert detail(admin, plugin)["status"] == "inactive"


def drain_while_a_call_waits(
    sleeper_client: httpx.Client, deactivate_client: httpx.Client, plugin: str, tmp_path: Path
) -> tuple[InBackground, InBackground]:
    """A call in flight until the test writes `tmp_path / "release"` (the drain lasts as long
    as the test needs), then a graceful deactivation (60 s) started behind it."""
    started, release = tmp_path / "call-started", tmp_path / "release"
    in_flight = InBackground(
        lambda: invoke(
            sleeper_client,
            plugin,
            "wait_for_file",
            path=str(release),
            limit=60,
            started_file=str(started),
        )
    )
    in_flight.start()
    wait_file(started)
    deactivation = InBackground(
        lambda: deactivate_client.post(
            f"/v1/plugins/{plugin}/deactivate", json={"graceful_shutdown_timeout": 60}
        )
    )
    deactivation.start()
    return in_flight, deactivation


def test_new_invocations_during_a_graceful_deactivation_are_refused(
    admin: httpx.Client, live_server: LiveServer, unique_name: str, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    plugin = active_probe(admin, unique_name)
    with live_server.client() as sleeper_client, live_server.client() as deactivate_client:
        in_flight, deactivation = drain_while_a_call_waits(
            sleeper_client, deactivate_client, plugin, tmp_path
        )

        # Until the deactivation begins, calls still go through; once it has, they are refused.
        refused = poll(
            lambda: invoke(admin, plugin, "echo", value="late"),
            lambda r: r.status_code != 200,
            timeout=30,
            interval=0.02,
            what="a new invocation refused during the deactivation",
        )
        draining = in_flight.is_alive() and deactivation.is_alive()
        release.write_text("")

        assert draining, "the refusal came only after the deactivation had finished"
        assert_error_envelope(refused)
        done = deactivation.result()
        assert done.status_code == 200, done.text
        assert done.json()["data"]["pending_operations"] == 0
        r = in_flight.result()
    assert r.status_code == 200, r.text
    assert r.json()["data"]["result"] is True


def test_a_call_that_read_the_plugin_before_its_deactivation_never_waits_nor_restarts_it(
    admin: httpx.Client, live_server: LiveServer, unique_name: str, tmp_path: Path
) -> None:
    """The race behind a 60 s hang: a call reads the plugin (active), then a deactivation
    removes its instance and drains it. The call finds no instance; it must be refused at
    once (not wait for the drain's lock), and once the deactivation is over it must not start
    the deactivated plugin again."""
    from mlx_platform.core import lifecycle
    from mlx_platform.errors import InvalidStateError

    core = live_server.core
    release = tmp_path / "release"
    plugin = active_probe(admin, unique_name)
    stale = lifecycle.get_row(core, plugin)  # read while it is active
    with live_server.client() as sleeper_client, live_server.client() as deactivate_client:
        in_flight, deactivation = drain_while_a_call_waits(
            sleeper_client, deactivate_client, plugin, tmp_path
        )
        poll(lambda: core.host.get(plugin), lambda inst: inst is None, what="instance removed")

        caller = InBackground(lambda: lifecycle.call_instance(core, stale))
        caller.start()
        caller.join(10)
        waited, draining = caller.is_alive(), deactivation.is_alive()
        release.write_text("")
        assert not waited, "the call waited for the deactivation's drain"
        assert draining, "the deactivation was over before the call: the race was not made"
        assert isinstance(caller.error, InvalidStateError), (caller.error, caller.response)
        assert "being deactivated" in caller.error.message

        assert deactivation.result().status_code == 200
        assert in_flight.result().status_code == 200

    # After the deactivation, the same stale read is refused as not active, and starts nothing.
    with pytest.raises(InvalidStateError, match="is not active"):
        lifecycle.call_instance(core, stale)
    assert core.host.get(plugin) is None
    assert detail(admin, plugin)["status"] == "inactive"


# ---------------------------------------------------------------- configuration


def test_hot_configuration_change_is_applied_in_the_same_worker(
    admin: httpx.Client, unique_name: str
) -> None:
    schema = {
        "greeting": {"type": "string", "default": "hello"},
        "pool_size": {"type": "integer", "default": 1, "hot_reload": False},
    }
    plugin = active_probe(admin, unique_name, configuration_schema=schema)
    pid = worker_pid(admin, plugin)

    r = admin.patch(
        f"/v1/plugins/{plugin}/configuration", json={"configuration": {"greeting": "hi"}}
    )

    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["configuration_updated"] is True
    assert data["restart_required"] is False
    assert data["restarted"] is False
    assert data["updated_fields"] == ["greeting"]
    assert worker_pid(admin, plugin) == pid
    assert call(admin, plugin, "config_value", key="greeting") == "hi"


def test_cold_configuration_change_restarts_the_worker_only_when_the_request_allows_it(
    admin: httpx.Client, unique_name: str
) -> None:
    schema = {
        "greeting": {"type": "string", "default": "hello"},
        "pool_size": {"type": "integer", "default": 1, "hot_reload": False},
    }
    plugin = active_probe(admin, unique_name, configuration_schema=schema)
    pid = worker_pid(admin, plugin)

    refused = admin.patch(
        f"/v1/plugins/{plugin}/configuration",
        json={"configuration": {"pool_size": 4}, "restart_required": False},
    )

    assert refused.status_code == 200, refused.text
    data = refused.json()["data"]
    assert data["restart_required"] is True
    assert data["restarted"] is False
    assert data["updated_fields"] == ["pool_size"]
    assert worker_pid(admin, plugin) == pid
    assert call(admin, plugin, "config_value", key="pool_size") == 1  # not applied yet

    allowed = admin.patch(
        f"/v1/plugins/{plugin}/configuration",
        json={"configuration": {"pool_size": 5}, "restart_required": True},
    )

    assert allowed.status_code == 200, allowed.text
    data = allowed.json()["data"]
    assert data["restart_required"] is True
    assert data["restarted"] is True
    new_pid = worker_pid(admin, plugin)
    assert new_pid != pid
    assert call(admin, plugin, "config_value", key="pool_size") == 5
    wait_gone(pid)
    assert detail(admin, plugin)["status"] == "active"


# ---------------------------------------------------------------- service restart and shutdown


def test_service_restart_starts_active_plugins_in_new_workers_and_shutdown_stops_them(
    process_server_factory: Callable[..., LiveServer], unique_name: str, tmp_path: Path
) -> None:
    server_factory = process_server_factory  # SIGTERM to `mlx serve`, its children counted
    home = tmp_path / "kept_home"
    first_marker = tmp_path / "stopped-first"
    second_marker = tmp_path / "stopped-second"
    first = server_factory(home=home, seed_builtin_plugins="false")
    with first.client() as client:
        plugin = active_probe(client, unique_name, {"stop_marker": str(first_marker)})
        other = active_probe(client, unique_name + "_other", {"stop_marker": str(second_marker)})
        first_pids = {plugin: worker_pid(client, plugin), other: worker_pid(client, other)}
    assert sorted(worker_children(first)) == sorted(first_pids.values())

    first.stop()

    for pid in first_pids.values():
        wait_gone(pid)
    # stopped gracefully: each plugin's stop() ran in its own worker
    assert first_marker.read_text().strip() == f"stopped {first_pids[plugin]}"
    assert second_marker.read_text().strip() == f"stopped {first_pids[other]}"

    second = server_factory(home=home, seed_builtin_plugins="false")
    with second.client() as client:
        assert detail(client, plugin)["status"] == "active"
        assert detail(client, other)["status"] == "active"
        second_pids = {plugin: worker_pid(client, plugin), other: worker_pid(client, other)}
        assert call(client, plugin, "echo", value="back") == "back"
    assert not set(second_pids.values()) & set(first_pids.values())
    assert sorted(worker_children(second)) == sorted(second_pids.values())

    second.stop()

    for pid in second_pids.values():
        wait_gone(pid)


# ---------------------------------------------------------------- background health


@pytest.mark.parametrize("health_timeout", ["1", "4"], ids=["timeout_1s", "timeout_4s"])
def test_background_health_checks_go_on_for_every_plugin_while_one_hangs(
    server_factory: Callable[..., LiveServer], unique_name: str, health_timeout: str
) -> None:
    """Checks every second; the hung plugin's check gives up after `health_timeout` seconds,
    which must not hold up the other plugins' checks (also when it is longer than the
    interval)."""
    server = server_factory(
        seed_builtin_plugins="false",
        health_interval="1",
        health_timeout=health_timeout,
        health_hang_restart="0",  # keep the hung worker hung (recycling: test_health_hang_restart)
    )
    with server.client() as client:
        healthy = [active_probe(client, f"{unique_name}_ok{i}") for i in range(5)]
        hung = active_probe(client, f"{unique_name}_hung")
        assert call(client, hung, "hang_health", on=True) is True
        hung_at = datetime.now(UTC)
        t_hang = time.monotonic()

        seen = poll(
            lambda: detail(client, hung)["health"],
            lambda h: h["status"] == "unhealthy",
            timeout=10 + float(health_timeout),
            what="the hung plugin reported unhealthy",
        )
        assert seen["message"], seen
        # Two moments, 1 s apart and at least 3 s after the hang began, at which no other
        # plugin's last check may be older than 2.5 s. The promise is about moments, hence
        # these two waits (for no event): checked all along a window instead, the service's
        # rounds show gaps of 2-3 s now and then, on `mlx serve` too (docs/decisions.md,
        # "Test tiers").
        time.sleep(max(0.0, 3.0 - (time.monotonic() - t_hang)))

        for _round in range(2):
            now = datetime.now(UTC)
            for plugin in healthy:
                d = detail(client, plugin)
                assert d["status"] == "active"
                h = d["health"]
                assert h["status"] == "healthy", (plugin, h)
                last = parse_time(h["last_check"])
                assert last > hung_at, (plugin, h, hung_at)
                age = (now - last).total_seconds()
                assert age <= 2.5, f"{plugin}: last health check {age:.2f} s ago"
            assert detail(client, hung)["health"]["status"] == "unhealthy"
            time.sleep(1.0)

        call(client, hung, "hang_health", on=False)


# ---------------------------------------------------------------- /metrics


def test_prometheus_metrics_count_invocations_and_errors_per_plugin(
    live_server: LiveServer, admin: httpx.Client, unique_name: str
) -> None:
    busy = active_probe(admin, unique_name)
    quiet = active_probe(admin, unique_name + "_quiet")
    for i in range(3):
        call(admin, busy, "echo", value=i)
    for _ in range(2):
        assert invoke(admin, busy, "fail").status_code == 424
    call(admin, quiet, "echo", value="once")

    r = live_server.anonymous.get("/metrics", timeout=30)

    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples = [s for fam in text_string_to_metric_families(r.text) for s in fam.samples]

    def value(name: str, **labels: str) -> float | None:
        for s in samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        return None

    calls = "mlx_plugin_invocations_total"
    assert value(calls, plugin_id=busy, outcome="success") == 3
    assert value(calls, plugin_id=busy, outcome="error") == 2
    assert value(calls, plugin_id=quiet, outcome="success") == 1
    assert value(calls, plugin_id=quiet, outcome="error") == 0
    buckets = [
        s
        for s in samples
        if s.name == "mlx_plugin_invocation_duration_seconds_bucket"
        and s.labels.get("plugin_id") == busy
    ]
    assert len(buckets) >= 2
    assert value("mlx_plugin_invocation_duration_seconds_bucket", plugin_id=busy, le="+Inf") == 5
    assert value("mlx_plugin_invocation_duration_seconds_count", plugin_id=busy) == 5
    assert re.search(
        rf'^mlx_plugin_invocation_duration_seconds_bucket{{[^}}]*plugin_id="{busy}"', r.text, re.M
    )
    assert value("mlx_plugin_health", plugin_id=busy, status="healthy") == 1
    assert "mlx_plugin_health{" in r.text


# ---------------------------------------------------------------- in-process isolation


def test_a_plugin_registered_inprocess_runs_in_the_service_process(
    live_server: LiveServer, admin: httpx.Client, unique_name: str
) -> None:
    inproc = active_probe(admin, unique_name, isolation="inprocess")
    isolated = active_probe(admin, unique_name + "_process")

    assert detail(admin, inproc)["isolation"] == "inprocess"
    assert health(admin, inproc)["checks"]["resource_usage"]["scope"] == "service_process"
    assert worker_pid(admin, inproc) == live_server.pid
    assert health(admin, isolated)["checks"]["resource_usage"]["scope"] == "worker_process"
    assert worker_pid(admin, isolated) != live_server.pid


def test_the_isolation_setting_inprocess_overrides_a_plugin_registered_with_process(
    process_server_factory: Callable[..., LiveServer], unique_name: str
) -> None:
    server = process_server_factory(seed_builtin_plugins="false", isolation="inprocess")
    with server.client() as client:
        plugin = active_probe(client, unique_name, isolation="process")

        assert health(client, plugin)["checks"]["resource_usage"]["scope"] == "service_process"
        assert worker_pid(client, plugin) == server.pid
        assert call(client, plugin, "echo", value="inside") == "inside"
        assert worker_children(server) == []
