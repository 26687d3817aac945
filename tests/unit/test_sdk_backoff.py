"""The SDK's retry policy: backoff with jitter, Retry-After, which calls and answers are retried.

The client's transport is an `httpx.MockTransport` and its sleep is recorded, not slept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from mlx_platform.async_client import AsyncMLXClient
from mlx_platform.errors import (
    MLXConnectionError,
    PluginHealthCheckFailedError,
    RateLimitedError,
    ServiceUnavailableError,
    UnauthorizedError,
)
from mlx_platform.sdk import InvalidResponseError, MLXClient, RetryPolicy
from mlx_platform.sdk._base import MAX_RETRY_AFTER, parse_retry_after

# ---------------------------------------------------------------- the arithmetic


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    policy = RetryPolicy(max_retries=10, initial_delay=0.5, max_delay=8.0)
    no_jitter = [policy.backoff(n, rand=lambda: 0.0) for n in range(7)]
    assert no_jitter == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_jitter_takes_off_at_most_a_quarter() -> None:
    policy = RetryPolicy(initial_delay=1.0, max_delay=100.0)
    assert policy.backoff(2, rand=lambda: 1.0) == pytest.approx(3.0)
    for n in range(6):
        for _ in range(200):
            delay = policy.backoff(n)
            assert 0.75 * 2**n <= delay <= 2**n


def test_jittered_delays_differ_between_clients() -> None:
    policy = RetryPolicy()
    assert len({policy.backoff(3) for _ in range(50)}) > 1


def test_a_huge_attempt_number_does_not_overflow() -> None:
    assert RetryPolicy(max_delay=8.0).backoff(10**9, rand=lambda: 0.0) == 8.0


def test_retry_after_wins_when_it_is_sensible() -> None:
    policy = RetryPolicy(initial_delay=0.5)
    assert policy.delay(0, retry_after=3.0) == 3.0
    assert policy.delay(0, retry_after=0.0) == 0.0
    # Longer than MAX_RETRY_AFTER: the backoff instead.
    assert policy.delay(0, retry_after=MAX_RETRY_AFTER + 1, rand=lambda: 0.0) == 0.5
    assert policy.delay(1, retry_after=None, rand=lambda: 0.0) == 1.0


def test_parse_retry_after_seconds_milliseconds_and_dates() -> None:
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"Retry-After-Ms": "250", "Retry-After": "9"}) == 0.25
    now = datetime(2024, 1, 15, 10, 0, 0, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now.timestamp) == pytest.approx(30)
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": past}, now=now.timestamp) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError):
        MLXClient(api_token="t", retry_delay=-1)


# ---------------------------------------------------------------- the clients


def envelope_error(status: int, code: str, **headers: str) -> httpx.Response:
    body = {
        "success": False,
        "error": {"code": code, "message": code.lower(), "details": {}, "request_id": "req_1"},
    }
    return httpx.Response(status, json=body, headers=headers)


LIST_OK = {
    "success": True,
    "data": [],
    "pagination": {"page": 1, "limit": 20, "total": 0, "has_next": False},
}
ACTIVATE_OK = {"success": True, "data": {"id": "plugin_x_001", "status": "active"}}


class Script:
    """A transport answering from a list, one answer (or exception) per request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body)


def refused() -> httpx.ConnectError:
    return httpx.ConnectError("[Errno 111] Connection refused")


class Caller:
    """One client (sync or async) on a scripted transport; `sleeps` records every wait."""

    def __init__(self, mode: str, script: Script, max_retries: int = 2) -> None:
        self.mode = mode
        self.sleeps: list[float] = []
        transport = httpx.MockTransport(script)
        options: dict[str, Any] = {
            "api_token": "t",
            "base_url": "http://mlx.test",
            "max_retries": max_retries,
        }
        if mode == "sync":
            self.client: Any = MLXClient(http_client=httpx.Client(transport=transport), **options)
            self.client._sleep = self.sleeps.append
        else:
            self.client = AsyncMLXClient(
                http_client=httpx.AsyncClient(transport=transport), **options
            )

            async def sleep(seconds: float) -> None:
                self.sleeps.append(seconds)

            self.client._sleep = sleep

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        call: Callable[..., Any] = getattr(self.client.plugins, method)
        if self.mode == "sync":
            return call(*args, **kwargs)
        return asyncio.run(call(*args, **kwargs))


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_get_is_retried_on_503_then_succeeds(mode: str) -> None:
    script = Script(envelope_error(503, "SERVICE_UNAVAILABLE"), ok(LIST_OK))
    caller = Caller(mode, script)
    assert caller("list").pagination.total == 0
    assert len(script.requests) == 2 and len(caller.sleeps) == 1
    assert 0.375 <= caller.sleeps[0] <= 0.5


def test_429_waits_as_long_as_retry_after_says(mode: str) -> None:
    script = Script(envelope_error(429, "RATE_LIMITED", **{"Retry-After": "3"}), ok(LIST_OK))
    caller = Caller(mode, script)
    caller("list")
    assert caller.sleeps == [3.0]


def test_retries_give_up_with_the_typed_error_and_back_off(mode: str) -> None:
    script = Script(*[envelope_error(429, "RATE_LIMITED") for _ in range(4)])
    caller = Caller(mode, script, max_retries=3)
    with pytest.raises(RateLimitedError) as info:
        caller("health_check", "plugin_x_001")
    assert info.value.status_code == 429 and len(script.requests) == 4
    assert len(caller.sleeps) == 3
    assert all(0.75 * 0.5 * 2**n <= s <= 0.5 * 2**n for n, s in enumerate(caller.sleeps))


def test_every_retry_carries_the_same_request_id(mode: str) -> None:
    script = Script(refused(), envelope_error(503, "SERVICE_UNAVAILABLE"), ok(LIST_OK))
    Caller(mode, script)("list")
    ids = {r.headers["x-request-id"] for r in script.requests}
    assert len(script.requests) == 3 and len(ids) == 1 and ids.pop().startswith("req_")


def test_a_post_is_never_retried(mode: str) -> None:
    script = Script(envelope_error(503, "SERVICE_UNAVAILABLE"), ok(ACTIVATE_OK))
    caller = Caller(mode, script)
    with pytest.raises(ServiceUnavailableError):
        caller("activate", "plugin_x_001")
    assert len(script.requests) == 1 and caller.sleeps == []


def test_a_post_is_not_retried_after_a_refused_connection(mode: str) -> None:
    script = Script(refused(), ok(ACTIVATE_OK))
    caller = Caller(mode, script)
    with pytest.raises(MLXConnectionError, match="Connection refused"):
        caller("activate", "plugin_x_001")
    assert len(script.requests) == 1


def test_a_get_is_retried_after_a_refused_connection(mode: str) -> None:
    script = Script(refused(), refused(), ok(LIST_OK))
    caller = Caller(mode, script)
    caller("list")
    assert len(script.requests) == 3 and len(caller.sleeps) == 2


def test_discover_with_auto_register_is_not_retried(mode: str) -> None:
    script = Script(refused(), refused())
    caller = Caller(mode, script)
    with pytest.raises(MLXConnectionError):
        caller("discover", auto_register=True)
    assert len(script.requests) == 1


def test_a_failed_plugin_health_check_is_an_answer_not_an_outage(mode: str) -> None:
    script = Script(envelope_error(503, "PLUGIN_HEALTH_CHECK_FAILED"), ok(LIST_OK))
    caller = Caller(mode, script)
    with pytest.raises(PluginHealthCheckFailedError):
        caller("health_check", "plugin_x_001")
    assert len(script.requests) == 1


def test_max_retries_zero_tries_once(mode: str) -> None:
    script = Script(refused())
    with pytest.raises(MLXConnectionError):
        Caller(mode, script, max_retries=0)("list")
    assert len(script.requests) == 1


def test_answers_outside_the_envelope_map_by_status(mode: str) -> None:
    script = Script(
        httpx.Response(401, text="Unauthorized"),
        httpx.Response(502, text="<html>Bad gateway</html>"),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json={"success": True, "data": {"id": 3}}),
    )
    caller = Caller(mode, script, max_retries=0)
    with pytest.raises(UnauthorizedError):
        caller("get", "plugin_x_001")
    with pytest.raises(InvalidResponseError, match="Bad gateway") as gateway:
        caller("get", "plugin_x_001")
    assert gateway.value.status_code == 502
    with pytest.raises(InvalidResponseError, match="not JSON"):
        caller("get", "plugin_x_001")
    with pytest.raises(InvalidResponseError, match="do not fit"):
        caller("get", "plugin_x_001")


def test_clients_the_sdk_builds_share_one_tls_context() -> None:
    """Each new httpx client loads the CA bundle (~35 ms of CPU) unless given a context: the
    SDK's own clients, sync and async, share one per process."""

    def context_of(http: Any) -> Any:
        return http._transport._pool._ssl_context  # httpx's default transport, httpcore's pool

    first, second = MLXClient(api_token="t"), MLXClient(api_token="t")
    other = AsyncMLXClient(api_token="t")
    try:
        shared = context_of(first._http)
        assert shared is not None
        assert context_of(second._http) is shared
        assert context_of(other._http) is shared
    finally:
        first.close()
        second.close()
        asyncio.run(other.aclose())
