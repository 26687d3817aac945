"""Health, metrics and invocation of plugins, against the service's app in-process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import assert_error, register

ECHO_OPERATIONS = {"echo", "add", "config_snapshot", "fail", "leak_secret", "sleep"}


def active_echo(client: httpx.Client, name: str, **overrides: Any) -> str:
    pid = register(client, name, **overrides)
    r = client.post(f"/v1/plugins/{pid}/activate")
    assert r.status_code == 200, r.text
    return pid


def invoke(
    client: httpx.Client, pid: str, operation: str, timeout: float | None = None, **arguments: Any
) -> httpx.Response:
    body: dict[str, Any] = {"operation": operation, "arguments": arguments}
    if timeout is not None:
        body["timeout"] = timeout
    return client.post(f"/v1/plugins/{pid}/invoke", json=body)


def health(client: httpx.Client, pid: str) -> dict[str, Any]:
    r = client.get(f"/v1/plugins/{pid}/health")
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True
    return dict(r.json()["data"])


def metrics(client: httpx.Client, pid: str, **params: str) -> httpx.Response:
    return client.get(f"/v1/plugins/{pid}/metrics", params=params)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- health


def test_health_of_an_active_plugin_reports_every_check_and_its_calls(admin, unique_name) -> None:
    pid = active_echo(admin, unique_name)
    for i in range(3):
        assert invoke(admin, pid, "add", a=i, b=1).status_code == 200
    assert invoke(admin, pid, "fail", message="nope").status_code == 424

    data = health(admin, pid)

    assert data["plugin_id"] == pid
    assert data["status"] == "healthy"
    checks = data["checks"]
    assert checks["connectivity"]["status"] == "pass"
    assert checks["resource_usage"]["memory_usage_mb"] > 0
    assert checks["dependencies"]["status"] == "pass"
    assert checks["dependencies"]["missing_dependencies"] == []
    m = data["metrics"]
    assert m["total_requests"] == 4
    assert m["successful_requests"] == 3
    assert m["failed_requests"] == 1
    assert m["uptime_seconds"] >= 0
    assert m["avg_response_time_ms"] > 0


def test_health_of_an_inactive_plugin_says_inactive(admin, unique_name) -> None:
    pid = active_echo(admin, unique_name)
    assert admin.post(f"/v1/plugins/{pid}/deactivate", json={}).status_code == 200

    data = health(admin, pid)

    assert data["status"] == "inactive"
    assert data["checks"]["connectivity"]["status"] == "skip"


def test_health_of_a_never_activated_plugin_says_inactive(admin, unique_name) -> None:
    pid = register(admin, unique_name)

    assert health(admin, pid)["status"] == "inactive"


def test_health_reports_a_requirement_that_stopped_being_active(admin, unique_name) -> None:
    base = active_echo(admin, f"{unique_name}_base")
    app = active_echo(
        admin, f"{unique_name}_app", metadata={"requires": [f"{unique_name}_base>=1.0"]}
    )
    assert health(admin, app)["checks"]["dependencies"]["status"] == "pass"
    assert admin.post(f"/v1/plugins/{base}/deactivate", json={}).status_code == 200

    data = health(admin, app)

    deps = data["checks"]["dependencies"]
    assert deps["status"] == "fail"
    assert deps["missing_dependencies"] == [f"{unique_name}_base>=1.0"]
    assert data["status"] != "healthy"


def test_health_of_an_unknown_plugin_is_not_found(admin) -> None:
    assert_error(admin.get("/v1/plugins/plugin_absent_001/health"), 404, "PLUGIN_NOT_FOUND")


# ---------------------------------------------------------------- invoke


def test_invoking_an_operation_returns_its_result(admin, unique_name) -> None:
    pid = active_echo(admin, unique_name)

    r = invoke(admin, pid, "add", a=2, b=3.5)

    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["plugin_id"] == pid
    assert data["operation"] == "add"
    assert data["result"] == 5.5
    assert data["duration_ms"] >= 0


def test_invoking_echo_returns_structured_values_unchanged(admin, unique_name) -> None:
    pid = active_echo(admin, unique_name)
    value = {"rows": [1, 2, {"x": None}], "ok": True, "name": "ünïcode"}

    r = invoke(admin, pid, "echo", value=value)

    assert r.status_code == 200, r.text
    assert r.json()["data"]["result"] == value


def test_an_unknown_operation_is_not_found_and_lists_the_available_ones(admin, unique_name) -> None:
    pid = active_echo(admin, unique_name)

    err = assert_error(invoke(admin, pid, "not_an_operation"), 404, "OPERATION_NOT_FOUND")

    available = set(err["details"]["available_operations"])
    assert available == ECHO_OPERATIONS
    assert "not_an_operation" in err["message"]


@pytest.mark.parametrize(
    "arguments",
    [{"a": 1}, {"a": 1, "b": 2, "c": 3}],
    ids=["missing_argument", "unknown_argument"],
)
def test_bad_arguments_are_refused(admin, unique_name, arguments) -> None:
    pid = active_echo(admin, unique_name)

    assert_error(invoke(admin, pid, "add", **arguments), 422, "INVALID_ARGUMENTS")


def test_a_plugin_error_is_reported_with_the_plugins_message(admin, unique_name) -> None:
    pid = active_echo(admin, unique_name)

    err = assert_error(
        invoke(admin, pid, "fail", message="the warehouse is closed"), 424, "PLUGIN_EXECUTION_ERROR"
    )

    assert "the warehouse is closed" in err["message"]
    # The plugin stays usable after one of its operations failed.
    assert invoke(admin, pid, "add", a=1, b=1).json()["data"]["result"] == 2


def test_an_operation_running_past_its_timeout_is_cut_off(admin, unique_name) -> None:
    pid = active_echo(admin, unique_name)

    r = invoke(admin, pid, "sleep", timeout=0.5, seconds=2)

    assert_error(r, 504, "OPERATION_TIMEOUT")


def test_invoking_an_inactive_plugin_is_an_invalid_state(admin, unique_name) -> None:
    pid = active_echo(admin, unique_name)
    assert admin.post(f"/v1/plugins/{pid}/deactivate", json={}).status_code == 200

    assert_error(invoke(admin, pid, "add", a=1, b=2), 409, "INVALID_STATE")


def test_invoking_a_registered_plugin_is_an_invalid_state(admin, unique_name) -> None:
    pid = register(admin, unique_name)

    assert_error(invoke(admin, pid, "add", a=1, b=2), 409, "INVALID_STATE")


def test_invoke_without_an_operation_is_a_validation_error(admin, unique_name) -> None:
    pid = active_echo(admin, unique_name)

    err = assert_error(
        admin.post(f"/v1/plugins/{pid}/invoke", json={"arguments": {}}), 422, "VALIDATION_ERROR"
    )

    assert "operation" in err["details"]


# ---------------------------------------------------------------- metrics


def test_metrics_count_successes_and_failures(admin, unique_name) -> None:
    pid = active_echo(admin, unique_name)
    successes, failures = 3, 2
    for i in range(successes):
        assert invoke(admin, pid, "add", a=i, b=i).status_code == 200
    for _ in range(failures):
        assert invoke(admin, pid, "fail").status_code == 424

    r = metrics(admin, pid, granularity="minute")

    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["plugin_id"] == pid
    assert data["granularity"] == "minute"
    m = data["metrics"]
    assert m["execution_count"] == successes + failures
    assert m["error_count"] == failures
    assert m["success_rate"] == pytest.approx(successes / (successes + failures))
    assert m["avg_execution_time_ms"] > 0
    assert m["p50_execution_time_ms"] <= m["p95_execution_time_ms"] <= m["p99_execution_time_ms"]
    points = data["timeseries"]
    assert points, "no timeseries point for the minute(s) the calls happened in"
    assert sum(p["execution_count"] for p in points) == successes + failures
    assert sum(p["error_count"] for p in points) == failures
    for p in points:
        datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00"))
    start = datetime.fromisoformat(data["time_range"]["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(data["time_range"]["end"].replace("Z", "+00:00"))
    assert timedelta(hours=23) < end - start <= timedelta(hours=24, minutes=1)

    perf = admin.get(f"/v1/plugins/{pid}").json()["data"]["performance_metrics"]
    assert perf["execution_count"] == successes + failures
    assert perf["success_rate"] == pytest.approx(successes / (successes + failures))
    assert perf["error_rate"] == pytest.approx(failures / (successes + failures))


def test_metrics_of_a_plugin_never_called_are_zero(admin, unique_name) -> None:
    pid = register(admin, unique_name)

    r = metrics(admin, pid)

    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["granularity"] == "hour"
    assert data["metrics"]["execution_count"] == 0
    assert data["metrics"]["error_count"] == 0
    assert data["timeseries"] == []
    perf = admin.get(f"/v1/plugins/{pid}").json()["data"]["performance_metrics"]
    assert perf["execution_count"] == 0


def test_metrics_outside_the_requested_range_are_not_counted(admin, unique_name) -> None:
    pid = active_echo(admin, unique_name)
    assert invoke(admin, pid, "add", a=1, b=1).status_code == 200
    now = datetime.now(UTC)

    r = metrics(
        admin,
        pid,
        start_time=iso(now - timedelta(days=3)),
        end_time=iso(now - timedelta(days=2)),
    )

    assert r.status_code == 200, r.text
    assert r.json()["data"]["metrics"]["execution_count"] == 0


def test_metrics_with_an_unreadable_start_time_name_the_parameter(admin, unique_name) -> None:
    pid = register(admin, unique_name)

    err = assert_error(metrics(admin, pid, start_time="yesterday"), 422, "VALIDATION_ERROR")

    assert "start_time" in err["details"]
    assert "start_time" in err["message"]


def test_metrics_with_a_start_after_the_end_are_refused(admin, unique_name) -> None:
    pid = register(admin, unique_name)
    now = datetime.now(UTC)

    err = assert_error(
        metrics(admin, pid, start_time=iso(now), end_time=iso(now - timedelta(hours=1))),
        422,
        "VALIDATION_ERROR",
    )

    assert {"start_time", "end_time"} & set(err["details"])


def test_metrics_with_an_unknown_granularity_are_refused(admin, unique_name) -> None:
    pid = register(admin, unique_name)

    err = assert_error(metrics(admin, pid, granularity="week"), 422, "VALIDATION_ERROR")

    assert "granularity" in err["details"]
    assert "granularity" in err["message"]


def test_metrics_of_an_unknown_plugin_are_not_found(admin) -> None:
    assert_error(metrics(admin, "plugin_absent_001"), 404, "PLUGIN_NOT_FOUND")


def test_reads_write_nothing_and_still_count_calls_not_yet_stored(live_server, admin) -> None:
    """GET of a plugin, of its metrics and of the list answer from the stored rows plus
    what this replica recorded since its last flush: no read opens a write (issue 13), and
    no call is missing or counted twice, before or after the flush."""
    import threading

    from sqlalchemy import event

    pid = active_echo(admin, "reads_write_nothing")
    core = live_server.core
    writes: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # statements of the requests only (run on AnyIO's worker threads or the event
        # loop's): the service's background work (heartbeats, health rounds) writes on
        # threads of its own, named mlx-...
        if threading.current_thread().name.startswith("mlx-"):
            return
        if statement.lstrip().split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}:
            writes.append(statement)

    engines = {core.db.engine, core.db.write_engine}
    # No flush while the test runs (the background one would wait): the calls below are in
    # this replica's memory only when the reads count them.
    with core.metrics._flush_lock:
        for i in range(4):
            assert invoke(admin, pid, "add", a=i, b=1).status_code == 200
        assert invoke(admin, pid, "fail").status_code == 424
        for engine in engines:
            event.listen(engine, "before_cursor_execute", note)
        try:
            perf = admin.get(f"/v1/plugins/{pid}").json()["data"]["performance_metrics"]
            m = metrics(admin, pid, granularity="minute").json()["data"]
            listed = admin.get("/v1/plugins", params={"search": "reads_write_nothing"})
            assert listed.status_code == 200, listed.text
        finally:
            for engine in engines:
                event.remove(engine, "before_cursor_execute", note)
    assert writes == [], writes
    assert perf["execution_count"] == 5 and m["metrics"]["execution_count"] == 5
    assert m["metrics"]["error_count"] == 1
    assert sum(p["execution_count"] for p in m["timeseries"]) == 5

    assert core.metrics.flush() >= 1  # now stored: counted once, not twice
    after = metrics(admin, pid, granularity="minute").json()["data"]
    assert after["metrics"]["execution_count"] == 5
    assert sum(p["execution_count"] for p in after["timeseries"]) == 5
