"""Invocations answered in front of the framework (server/fast_invoke.py): plain calls of a
plugin in a worker process, with the route's answers for everything else."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from mlx_platform.server.fast_invoke import FastInvokeMiddleware
from tests.conftest import InProcessServer, LiveServer, assert_error, invoke, register


@pytest.fixture
def srv(server_factory: Callable[..., LiveServer]) -> InProcessServer:
    server = server_factory(seed_builtin_plugins="false", isolation="process")
    assert isinstance(server, InProcessServer)
    return server


@pytest.fixture
def echo(srv: InProcessServer, unique_name: str) -> Iterator[str]:
    with srv.client() as admin:
        plugin = register(admin, unique_name, isolation="process")
        r = admin.post(f"/v1/plugins/{plugin}/activate", json={"configuration": {}})
        assert r.status_code == 200, r.text
        yield plugin


def layer(srv: InProcessServer) -> FastInvokeMiddleware:
    found = srv.app.fast_invoke
    assert isinstance(found, FastInvokeMiddleware)
    return found


def executions(client: httpx.Client, plugin: str) -> int:
    r = client.get(f"/v1/plugins/{plugin}/metrics")
    assert r.status_code == 200, r.text
    return int(r.json()["data"]["metrics"]["execution_count"])


def without_request_id(error: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in error.items() if k != "request_id"}


def test_plain_calls_are_answered_in_front_and_counted(srv: InProcessServer, echo: str) -> None:
    with srv.client(scopes=("plugins:write",)) as writer:
        first = invoke(writer, echo, "echo", value={"a": [1, 2]})  # reads the row
        answered = layer(srv).answered
        for n in range(5):
            r = invoke(writer, echo, "add", a=n, b=1)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["success"] is True
            assert body["data"]["plugin_id"] == echo and body["data"]["operation"] == "add"
            assert body["data"]["result"] == n + 1
            assert body["data"]["duration_ms"] >= 0
            assert r.headers["x-request-id"].startswith("req_")
        assert first.json()["data"]["result"] == {"a": [1, 2]}
        assert layer(srv).answered >= answered + 4  # a background write may send one round
        assert executions(writer, echo) == 6


def test_errors_of_plain_calls_are_the_routes(srv: InProcessServer, echo: str) -> None:
    with srv.client(scopes=("plugins:write",)) as writer:
        invoke(writer, echo, "echo", value=1)
        answered = layer(srv).answered
        fast = writer.post(f"/v1/plugins/{echo}/invoke", json={"operation": "nope"})
        assert layer(srv).answered == answered + 1
        # "timeout" as a string: the model takes it, this layer leaves it to the route
        routed = writer.post(
            f"/v1/plugins/{echo}/invoke", json={"operation": "nope", "timeout": "30"}
        )
        assert layer(srv).answered == answered + 1
    fast_error = assert_error(fast, 404, "OPERATION_NOT_FOUND")
    routed_error = assert_error(routed, 404, "OPERATION_NOT_FOUND")
    assert without_request_id(fast_error) == without_request_id(routed_error)
    assert "echo" in str(fast_error["details"])


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"operation": "echo", "arguments": {"value": 1}, "extra": 1}, 422, "VALIDATION_ERROR"),
        ({"operation": "", "arguments": {}}, 422, "VALIDATION_ERROR"),
        ({"operation": "echo", "arguments": []}, 422, "VALIDATION_ERROR"),
        ({"operation": "echo", "timeout": 0}, 422, "VALIDATION_ERROR"),
        ({"operation": 5, "arguments": {}}, 422, "VALIDATION_ERROR"),
        ({"operation": "echo", "timeout": 3601}, 422, "VALIDATION_ERROR"),
    ],
)
def test_what_the_route_would_refuse_is_refused_by_the_route(
    srv: InProcessServer, echo: str, body: dict[str, Any], status: int, code: str
) -> None:
    with srv.client(scopes=("plugins:write",)) as writer:
        invoke(writer, echo, "echo", value=1)
        answered = layer(srv).answered
        assert_error(writer.post(f"/v1/plugins/{echo}/invoke", json=body), status, code)
        assert layer(srv).answered == answered


def test_tokens_and_bodies_the_layer_does_not_take(srv: InProcessServer, echo: str) -> None:
    url = f"/v1/plugins/{echo}/invoke"
    with srv.client(scopes=("plugins:write",)) as writer:
        invoke(writer, echo, "echo", value=1)
        answered = layer(srv).answered
        not_json = writer.post(
            url, content=b"{not json", headers={"content-type": "application/json"}
        )
        assert_error(not_json, 422, "VALIDATION_ERROR")
    with srv.client(scopes=("plugins:read",)) as reader:
        assert_error(invoke(reader, echo, "echo", value=1), 403, "FORBIDDEN")
    assert_error(invoke(srv.anonymous, echo, "echo", value=1), 401, "UNAUTHORIZED")
    assert layer(srv).answered == answered


def test_a_deactivated_plugin_is_refused_at_once(srv: InProcessServer, echo: str) -> None:
    with srv.client() as admin:
        assert invoke(admin, echo, "echo", value=1).status_code == 200
        assert invoke(admin, echo, "echo", value=2).status_code == 200
        assert admin.post(f"/v1/plugins/{echo}/deactivate", json={}).status_code == 200
        r = invoke(admin, echo, "echo", value=3)
    assert r.status_code == 409, r.text


def test_calls_at_once_and_alone_are_answered_and_the_requests_counted(
    srv: InProcessServer, echo: str
) -> None:
    """A call alone may poll the worker's socket (MLX_CALL_SPIN_US); calls at once may not:
    either way every call gets its own answer, and the app's count of requests in flight
    (what the layer asks before polling) is back to zero after each kind of answer."""
    serving = layer(srv).serving
    with srv.client(scopes=("plugins:write",)) as writer:
        for n in range(20):  # one at a time
            assert invoke(writer, echo, "add", a=n, b=1).json()["data"]["result"] == n + 1
        assert serving.count == 0
        assert_error(
            writer.post(f"/v1/plugins/{echo}/invoke", json={"operation": "nope"}),
            404,
            "OPERATION_NOT_FOUND",
        )
        assert_error(writer.post(f"/v1/plugins/{echo}/invoke", json={}), 422, "VALIDATION_ERROR")
        assert serving.count == 0

        def calls(k: int) -> list[Any]:
            return [
                invoke(writer, echo, "add", a=k, b=n).json()["data"]["result"] for n in range(15)
            ]

        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(calls, range(6)))
        assert results == [[k + n for n in range(15)] for k in range(6)]
        assert serving.count == 0
