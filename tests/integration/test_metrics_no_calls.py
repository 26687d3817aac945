"""A rate of no calls is null, not 0 (issue 14): the range's success rate, a bucket that holds
memory samples only, and the plugin detail's rates, in the API, its OpenAPI, the SDK and the
CLI's rendering."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from mlx_platform.cli import render
from mlx_platform.sdk import MLXClient
from tests.conftest import LiveServer, register


@pytest.fixture
def sampled_only(live_server: LiveServer, admin: httpx.Client, unique_name: str) -> str:
    """A plugin whose only figures are a memory sample (as the usage loop records for an
    active plugin between calls), in the current minute."""
    pid = register(admin, unique_name)
    live_server.core.metrics.sample_usage(pid, 42.0, 3.0, now=time.time())
    return pid


def test_the_api_answers_null_rates_where_nothing_was_called(
    admin: httpx.Client, sampled_only: str
) -> None:
    r = admin.get(f"/v1/plugins/{sampled_only}/metrics", params={"granularity": "minute"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["metrics"]["execution_count"] == 0
    assert data["metrics"]["success_rate"] is None
    assert data["metrics"]["resource_usage"]["samples"] == 1
    [point] = data["timeseries"]  # the bucket of the sample: no call in it
    assert (point["execution_count"], point["success_rate"]) == (0, None)

    perf = admin.get(f"/v1/plugins/{sampled_only}").json()["data"]["performance_metrics"]
    assert perf["execution_count"] == 0
    assert (perf["success_rate"], perf["error_rate"]) == (None, None)


def test_a_call_makes_the_rate_a_number_again(admin: httpx.Client, unique_name: str) -> None:
    pid = register(admin, unique_name)
    assert admin.post(f"/v1/plugins/{pid}/activate").status_code == 200
    r = admin.post(
        f"/v1/plugins/{pid}/invoke", json={"operation": "add", "arguments": {"a": 1, "b": 2}}
    )
    assert r.status_code == 200, r.text
    data = admin.get(f"/v1/plugins/{pid}/metrics", params={"granularity": "minute"}).json()
    assert data["data"]["metrics"]["success_rate"] == 1.0
    assert [p["success_rate"] for p in data["data"]["timeseries"]] == [1.0]


def _nullable(schema: dict[str, Any], field: str, spec: dict[str, Any]) -> bool:
    prop = spec["components"]["schemas"][schema]["properties"][field]
    return {"type": "null"} in prop.get("anyOf", []) and "null" in prop.get("description", "")


def test_the_openapi_says_the_rates_may_be_null(live_server: LiveServer) -> None:
    spec = live_server.anonymous.get("/openapi.json", timeout=60).json()
    assert _nullable("MetricsFigures", "success_rate", spec)
    assert _nullable("TimeseriesPoint", "success_rate", spec)
    assert _nullable("PerformanceMetrics", "success_rate", spec)
    assert _nullable("PerformanceMetrics", "error_rate", spec)


def test_the_sdk_and_the_cli_show_no_rate(
    live_server: LiveServer, sampled_only: str, capsys: pytest.CaptureFixture[str]
) -> None:
    http = httpx.Client(base_url=live_server.url, transport=live_server.transport())
    with MLXClient(
        api_token=live_server.token("plugins:read"), base_url=live_server.url, http_client=http
    ) as client:
        report = client.plugins.metrics(sampled_only, granularity="minute")
        detail = client.plugins.get(sampled_only)
    assert report.metrics.success_rate is None
    assert [p.success_rate for p in report.timeseries] == [None]
    assert detail.performance_metrics.success_rate is None

    capsys.readouterr()
    render.render_metrics(report)
    shown = capsys.readouterr().out
    assert "success rate     -" in shown, shown
    row = shown.splitlines()[-1].split()  # TIME (2 words), CALLS, AVG (2), SUCCESS, ERRORS
    assert row[2] == "0" and row[-2:] == ["-", "0"], shown
    render.render_plugin_detail(detail)
    assert "success rate -," in capsys.readouterr().out
