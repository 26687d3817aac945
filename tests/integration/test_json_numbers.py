"""A request body must be JSON: NaN, Infinity, -Infinity and numbers beyond a float's range
(1e400) are refused with 422 on field `body`, naming why, and change nothing
(server/json_body.py). They once passed the models and failed where they were stored
(PostgreSQL answered 500 on an activation) or were stored as no JSON reader reads them."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import assert_error, plugin_body

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def plugin(admin: httpx.Client, unique_name: str) -> str:
    schema = {"rate": {"type": "number", "default": 1.5}}
    r = admin.post("/v1/plugins", json=plugin_body(unique_name, configuration_schema=schema))
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-2.5E999"])
def test_a_number_json_has_not_is_refused_and_changes_nothing(
    admin: httpx.Client, plugin: str, number: str
) -> None:
    r = admin.post(
        f"/v1/plugins/{plugin}/activate",
        content=f'{{"configuration": {{"rate": {number}}}}}',
        headers=JSON,
    )
    error = assert_error(r, 422, "VALIDATION_ERROR")
    assert error["details"] == {
        "body": "is not valid JSON: NaN and Infinity are not JSON numbers, nor is a number "
        "beyond a float's range"
    }
    detail = admin.get(f"/v1/plugins/{plugin}").json()["data"]
    assert detail["status"] == "registered"
    assert detail["configuration"] == {}


def test_every_body_is_read_the_same_way(admin: httpx.Client, plugin: str) -> None:
    """Registration, configuration and invocation bodies (the invocation's own fast path
    hands such a body to the route)."""
    register = admin.post(
        "/v1/plugins",
        content=plugin_body_text(name="nan-register", extra='"timeout": NaN'),
        headers=JSON,
    )
    configure = admin.patch(
        f"/v1/plugins/{plugin}/configuration",
        content='{"configuration": {"rate": Infinity}}',
        headers=JSON,
    )
    invoke = admin.post(
        f"/v1/plugins/{plugin}/invoke",
        content='{"operation": "echo", "arguments": {"value": NaN}}',
        headers=JSON,
    )
    for r in (register, configure, invoke):
        error = assert_error(r, 422, "VALIDATION_ERROR")
        assert "not JSON numbers" in error["details"]["body"], error


def test_finite_numbers_still_pass(admin: httpx.Client, plugin: str) -> None:
    r = admin.post(
        f"/v1/plugins/{plugin}/activate",
        content='{"configuration": {"rate": 1e300}}',
        headers=JSON,
    )
    assert r.status_code == 200, r.text
    detail = admin.get(f"/v1/plugins/{plugin}").json()["data"]
    assert detail["configuration"] == {"rate": 1e300}


def plugin_body_text(name: str, extra: str) -> str:
    text = json.dumps(plugin_body(name))
    return text[:-1] + ", " + extra + "}"
