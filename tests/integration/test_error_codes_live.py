"""The table of error codes against a real service: for every code this module can provoke,
the answer's status is the table's, the SDK reads it as the code's class (and retries it or
not as the table says), the CLI exits with the table's exit code, and the OpenAPI document
lists the code under that status for the operation that answered it.

The SDK's own copy of the statuses was once stale (PLUGIN_HEALTH_CHECK_FAILED moved from 503
to 424): now every copy derives from the table, and this is what says the table is right.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlx_platform.cli.output import exit_code_for
from mlx_platform.errors import ERROR_CLASSES, ERROR_SPECS, ERROR_TABLE
from mlx_platform.sdk._base import BaseClient, retryable_answer
from tests.conftest import LiveServer, assert_error, invoke, plugin_body, register, start_inprocess

P = "/v1/plugins"
PID = f"{P}/{{plugin_id}}"

# Codes another module provokes (a database outage, a fault of the service, code changed on
# disk): listed so that a new code of the table must be provoked here or named here.
PROVOKED_ELSEWHERE = {
    "SERVICE_UNAVAILABLE": "tests/integration/test_outage.py",
    "INTERNAL_ERROR": "tests/integration/test_internal_error.py",
    "PLUGIN_CODE_CHANGED": "tests/integration/test_integrity.py",
}


class Env:
    """The module's server, an admin client, and a helper to register a fresh plugin."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.admin = server.client()
        self._n = 0

    def plugin(self, **overrides: object) -> str:
        self._n += 1
        overrides.setdefault("isolation", "inprocess")  # no worker process: not the point here
        return register(self.admin, f"err_table_{self._n}", **overrides)

    def active(self, **overrides: object) -> str:
        pid = self.plugin(**overrides)
        r = self.admin.post(f"{P}/{pid}/activate", json={})
        assert r.status_code == 200, r.text
        return pid


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    # a write limit per token subject, low enough to reach with one subject's requests;
    # the admin client's subject stays far below it
    server = start_inprocess(
        tmp_path_factory.mktemp("codes") / "home", write_rate_limit="40/minute"
    )
    e = Env(server)
    yield e
    e.admin.close()
    server.stop()


@pytest.fixture(scope="module")
def openapi(env: Env) -> dict[str, Any]:
    r = env.server.anonymous.get("/openapi.json", timeout=60)
    assert r.status_code == 200
    return dict(r.json())


# ---------------------------------------------------------------- how to provoke each code

Provoke = Callable[[Env], httpx.Response]


def _unauthorized(env: Env) -> httpx.Response:
    return env.server.anonymous.get(P, timeout=60)


def _forbidden(env: Env) -> httpx.Response:
    pid = env.plugin()
    with env.server.client(scopes=("plugins:read",)) as reader:
        return reader.post(f"{P}/{pid}/activate", json={})


def _validation(env: Env) -> httpx.Response:
    return env.admin.get(P, params={"limit": "0"})


def _plugin_not_found(env: Env) -> httpx.Response:
    return env.admin.get(f"{P}/plugin_never_registered_001")


def _endpoint_not_found(env: Env) -> httpx.Response:
    return env.admin.get("/v1/no-such-endpoint")


def _method_not_allowed(env: Env) -> httpx.Response:
    return env.admin.put(P, json={})


def _already_exists(env: Env) -> httpx.Response:
    register(env.admin, "err_table_twice")
    return env.admin.post(P, json=plugin_body("err_table_twice"))


def _invalid_state(env: Env) -> httpx.Response:
    return env.admin.post(f"{P}/{env.plugin()}/deactivate", json={})


def _invalid_configuration(env: Env) -> httpx.Response:
    pid = env.plugin(configuration_schema={"rows": {"type": "integer", "required": True}})
    return env.admin.post(f"{P}/{pid}/activate", json={"configuration": {"rows": "many"}})


def _dependency_missing(env: Env) -> httpx.Response:
    pid = env.plugin(metadata={"requires": ["err_table_never_registered>=1"]})
    return env.admin.post(f"{P}/{pid}/activate", json={})


def _insufficient_resources(env: Env) -> httpx.Response:
    pid = env.plugin(metadata={"min_memory_mb": 10**9})
    return env.admin.post(f"{P}/{pid}/activate", json={})


def _plugin_conflict(env: Env) -> httpx.Response:
    first = env.active()
    name = env.admin.get(f"{P}/{first}").json()["data"]["name"]
    pid = env.plugin(metadata={"conflicts_with": [name]})
    return env.admin.post(f"{P}/{pid}/activate", json={})


def _health_check_failed(env: Env) -> httpx.Response:
    pid = env.plugin(class_path="mlx_test_plugins.UnhealthyPlugin")
    return env.admin.post(f"{P}/{pid}/activate", json={})


def _operation_not_found(env: Env) -> httpx.Response:
    return invoke(env.admin, env.active(), "no_such_operation")


def _invalid_arguments(env: Env) -> httpx.Response:
    return invoke(env.admin, env.active(), "add", a=1)


def _execution_error(env: Env) -> httpx.Response:
    return invoke(env.admin, env.active(), "fail", message="the warehouse is closed")


def _operation_timeout(env: Env) -> httpx.Response:
    return invoke(env.admin, env.active(), "sleep", timeout=0.2, seconds=3)


def _payload_too_large(env: Env) -> httpx.Response:
    return env.admin.post(
        P,
        content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        headers={"content-type": "application/json"},
    )


def _headers_too_large(env: Env) -> httpx.Response:
    return env.admin.get(P, headers={"x-padding": "a" * (70 * 1024)})


def _rate_limited(env: Env) -> httpx.Response:
    with env.server.client(env.server.token("plugins:admin", subject="flooder")) as flooder:
        for _ in range(200):  # the limit is 40 a minute: reached long before the 200th
            r = flooder.delete(f"{P}/plugin_never_registered_001")
            if r.status_code != 404:
                return r
    raise AssertionError("200 writes of one subject were never limited")


# code -> (how to provoke it, the operation that answers it: (path, method), or None for
# answers about the path itself)
PROVOKED: dict[str, tuple[Provoke, tuple[str, str] | None]] = {
    "UNAUTHORIZED": (_unauthorized, (P, "get")),
    "FORBIDDEN": (_forbidden, (f"{PID}/activate", "post")),
    "VALIDATION_ERROR": (_validation, (P, "get")),
    "PLUGIN_NOT_FOUND": (_plugin_not_found, (PID, "get")),
    "NOT_FOUND": (_endpoint_not_found, None),
    "METHOD_NOT_ALLOWED": (_method_not_allowed, None),
    "PLUGIN_ALREADY_EXISTS": (_already_exists, (P, "post")),
    "INVALID_STATE": (_invalid_state, (f"{PID}/deactivate", "post")),
    "INVALID_CONFIGURATION": (_invalid_configuration, (f"{PID}/activate", "post")),
    "DEPENDENCY_MISSING": (_dependency_missing, (f"{PID}/activate", "post")),
    "INSUFFICIENT_RESOURCES": (_insufficient_resources, (f"{PID}/activate", "post")),
    "PLUGIN_CONFLICT": (_plugin_conflict, (f"{PID}/activate", "post")),
    "PLUGIN_HEALTH_CHECK_FAILED": (_health_check_failed, (f"{PID}/activate", "post")),
    "OPERATION_NOT_FOUND": (_operation_not_found, (f"{PID}/invoke", "post")),
    "INVALID_ARGUMENTS": (_invalid_arguments, (f"{PID}/invoke", "post")),
    "PLUGIN_EXECUTION_ERROR": (_execution_error, (f"{PID}/invoke", "post")),
    "OPERATION_TIMEOUT": (_operation_timeout, (f"{PID}/invoke", "post")),
    "PAYLOAD_TOO_LARGE": (_payload_too_large, (P, "post")),
    "HEADERS_TOO_LARGE": (_headers_too_large, (P, "get")),
    "RATE_LIMITED": (_rate_limited, (PID, "delete")),
}


def test_every_code_of_the_table_is_provoked_here_or_elsewhere() -> None:
    table = {spec.code for spec in ERROR_TABLE}
    assert set(PROVOKED) | set(PROVOKED_ELSEWHERE) == table
    assert not set(PROVOKED) & set(PROVOKED_ELSEWHERE)
    root = Path(__file__).resolve().parents[2]
    for code, module in PROVOKED_ELSEWHERE.items():
        assert code in (root / module).read_text(), (code, module)


@pytest.mark.parametrize("code", list(PROVOKED))
def test_the_table_agrees_with_the_service(env: Env, openapi: dict[str, Any], code: str) -> None:
    spec = ERROR_SPECS[code]
    provoke, operation = PROVOKED[code]
    response = provoke(env)
    assert_error(response, spec.http_status, code)
    # the SDK reads the answer as the code's class, and retries it only if the table says so
    err = BaseClient._make_status_error(response)
    assert type(err) is ERROR_CLASSES[code] and err.status_code == spec.http_status
    assert retryable_answer(response.status_code, code) is spec.retryable
    # retryable: the service says when to try again; not retryable: it does not
    assert ("retry-after" in response.headers) is spec.retryable, dict(response.headers)
    # the CLI exits with the table's exit code
    assert exit_code_for(err) == spec.exit_code
    # the published description of the operation lists the code under that status
    if operation is not None:
        path, method = operation
        answer = openapi["paths"][path][method]["responses"][str(spec.http_status)]
        assert f"`{code}`" in answer["description"], answer["description"]
        assert code in answer["content"]["application/json"]["examples"]
