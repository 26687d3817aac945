"""Per-point latency quantiles and memory of GET /v1/plugins/{id}/metrics (issue 15: the
dashboard charts them over time), from real invocations of known durations and real usage
samples of a worker process."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mlx_platform.wire import MINUTE_SERIES_SKETCH_LIMIT
from tests.conftest import InProcessServer, LiveServer, invoke, register

QUANTILES = {
    "p50_execution_time_ms": 0.50,
    "p95_execution_time_ms": 0.95,
    "p99_execution_time_ms": 0.99,
}
MEMORY = ("avg_memory_mb", "peak_memory_mb")
# sleeps of 5, 10, ... 60 ms: the calls take at least these
SLEEPS_MS = [5 * k for k in range(1, 13)]


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def minute_of(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def series(
    client: httpx.Client, pid: str, granularity: str, start: datetime, end: datetime
) -> dict[str, Any]:
    r = client.get(
        f"/v1/plugins/{pid}/metrics",
        params={"granularity": granularity, "start_time": iso(start), "end_time": iso(end)},
    )
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def exact(durations: list[float], q: float) -> float:
    """The lower-rank quantile the API defines (core/sketch.py), of the exact durations."""
    return sorted(durations)[math.floor(q * (len(durations) - 1))]


def room_in_this_minute(seconds: float) -> None:
    """Wait for the next minute unless `seconds` fit in this one (so all calls share a minute,
    an hour and a day: one point in each series)."""
    now = datetime.now(UTC)
    if now.second + now.microsecond / 1e6 + seconds > 58:
        time.sleep(60.5 - now.second - now.microsecond / 1e6)


def timed_calls(client: httpx.Client, pid: str) -> tuple[list[float], datetime]:
    """The sleeps, each call's duration as the service measured it, and their minute."""
    room_in_this_minute(sum(SLEEPS_MS) / 1000 + 3)
    before = datetime.now(UTC)
    durations = []
    for ms in SLEEPS_MS:
        r = invoke(client, pid, "sleep", seconds=ms / 1000)
        assert r.status_code == 200, r.text
        durations.append(float(r.json()["data"]["duration_ms"]))
    assert minute_of(datetime.now(UTC)) == minute_of(before)
    return durations, minute_of(before)


def assert_quantiles(point: dict[str, Any], durations: list[float]) -> None:
    for name, q in QUANTILES.items():
        assert point[name] == pytest.approx(exact(durations, q), rel=0.01, abs=0.002), name
    # the known durations: half the calls slept at least the median sleep
    assert point["p50_execution_time_ms"] >= exact(SLEEPS_MS, 0.5)
    assert point["p99_execution_time_ms"] >= exact(SLEEPS_MS, 0.99)


def ranges(minute: datetime) -> dict[str, tuple[str, datetime, datetime]]:
    """Ranges around the calls' minute, each read by another path of query_metrics."""
    hour = minute.replace(minute=0)
    return {
        # partial hours at both edges: the calls' minute bucket (and its sketch)
        "hour-edges": ("hour", minute - timedelta(minutes=5), minute + timedelta(minutes=2)),
        # whole hours: the hourly roll-up's sketch once flushed
        "hour-whole": ("hour", hour - timedelta(hours=1), hour + timedelta(hours=1)),
        "day": ("day", hour - timedelta(hours=3), hour + timedelta(hours=2)),
        "minute": ("minute", minute - timedelta(minutes=30), minute + timedelta(minutes=1)),
    }


def test_each_point_has_the_quantiles_of_its_calls(live_server: LiveServer, admin) -> None:
    pid = register(admin, "series_quantiles")
    assert admin.post(f"/v1/plugins/{pid}/activate").status_code == 200
    durations, minute = timed_calls(admin, pid)

    for stored in (False, True):  # in this replica's memory, then in the stored buckets
        if stored:
            assert live_server.core.metrics.flush() >= 1
        for label, (granularity, start, end) in ranges(minute).items():
            data = series(admin, pid, granularity, start, end)
            points = data["timeseries"]
            assert len(points) == 1, (label, stored, points)
            (point,) = points
            assert point["execution_count"] == len(SLEEPS_MS), (label, stored)
            assert_quantiles(point, durations)
            # one point holds every call: its quantiles are the range's
            for name in QUANTILES:
                assert point[name] == data["metrics"][name], (label, stored, name)
            # an in-process plugin has no memory of its own: no samples, null, not 0
            assert all(point[k] is None for k in MEMORY), (label, point)


def test_a_minute_series_reads_sketches_up_to_its_limit_only(
    live_server: LiveServer, admin
) -> None:
    pid = register(admin, "series_minute_limit")
    assert admin.post(f"/v1/plugins/{pid}/activate").status_code == 200
    durations, minute = timed_calls(admin, pid)
    end = minute + timedelta(minutes=1)

    for stored in (False, True):
        if stored:
            assert live_server.core.metrics.flush() >= 1
        at_limit = series(
            admin, pid, "minute", end - timedelta(minutes=MINUTE_SERIES_SKETCH_LIMIT), end
        )
        (point,) = at_limit["timeseries"]
        assert_quantiles(point, durations)

        past = series(
            admin, pid, "minute", end - timedelta(minutes=MINUTE_SERIES_SKETCH_LIMIT + 1), end
        )
        (point,) = past["timeseries"]
        assert point["execution_count"] == len(SLEEPS_MS)
        assert all(point[name] is None for name in QUANTILES), point
        # the range's own figures still have them (hourly roll-ups and minute edges)
        assert past["metrics"]["p50_execution_time_ms"] == pytest.approx(
            exact(durations, 0.5), rel=0.01, abs=0.002
        )
        # an hour series of the same range has them per point
        (hourly,) = series(
            admin, pid, "hour", end - timedelta(minutes=MINUTE_SERIES_SKETCH_LIMIT + 1), end
        )["timeseries"]
        assert_quantiles(hourly, durations)


def test_memory_per_point_comes_from_the_workers_usage_samples(
    server_factory: Callable[..., LiveServer],
) -> None:
    srv = server_factory(seed_builtin_plugins="false", isolation="process", usage_interval="0.1")
    assert isinstance(srv, InProcessServer)
    with srv.client() as admin:
        pid = register(admin, "series_memory", isolation="process")
        room_in_this_minute(8)
        minute = minute_of(datetime.now(UTC))
        r = admin.post(f"/v1/plugins/{pid}/activate", json={"configuration": {}})
        assert r.status_code == 200, r.text
        start, end = minute - timedelta(minutes=5), minute + timedelta(minutes=1)
        deadline = time.monotonic() + 5
        while series(admin, pid, "minute", start, end)["metrics"]["resource_usage"]["samples"] < 5:
            assert time.monotonic() < deadline, "no usage samples of the worker"
            time.sleep(0.1)

        # samples and no call: memory figures, null quantiles and rate, zero counts
        data = series(admin, pid, "minute", start, end)
        (point,) = data["timeseries"]
        usage = data["metrics"]["resource_usage"]
        assert point["execution_count"] == 0 and point["success_rate"] is None
        assert all(point[name] is None for name in QUANTILES), point
        assert point["avg_memory_mb"] == usage["avg_memory_mb"]
        assert point["peak_memory_mb"] == usage["peak_memory_mb"]
        # a Python worker process holds megabytes, and its peak is at least its mean
        assert 1 < point["avg_memory_mb"] <= point["peak_memory_mb"]

        assert invoke(admin, pid, "add", a=1, b=2).status_code == 200
        assert minute_of(datetime.now(UTC)) == minute
        srv.core.metrics.flush()
        for granularity in ("minute", "hour", "day"):
            data = series(admin, pid, granularity, start, end)
            (point,) = data["timeseries"]
            usage = data["metrics"]["resource_usage"]
            assert point["execution_count"] == 1
            assert point["p50_execution_time_ms"] is not None
            assert point["avg_memory_mb"] == usage["avg_memory_mb"] > 1
            assert point["peak_memory_mb"] == usage["peak_memory_mb"] >= point["avg_memory_mb"]


def test_openapi_describes_the_point_fields(live_server: LiveServer) -> None:
    r = live_server.anonymous.get("/openapi.json", timeout=60)
    assert r.status_code == 200
    point = r.json()["components"]["schemas"]["TimeseriesPoint"]["properties"]
    for name in (*QUANTILES, *MEMORY):
        assert {t.get("type") for t in point[name]["anyOf"]} == {"number", "null"}, name
        assert "null" in point[name]["description"], name
    for name in QUANTILES:
        assert f"{MINUTE_SERIES_SKETCH_LIMIT} minute buckets" in point[name]["description"]
    # the spec's fields are still there
    assert {"timestamp", "execution_count", "avg_execution_time_ms", "success_rate"} <= set(point)
