"""Issue 14: registration checks what `mlx plugins check` checks (core.definition), so that a
definition every activation would refuse is refused at once, and a class that cannot load
says which package is missing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import assert_error, plugin_body

BAD_DEFAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "type": ({"type": "integer", "default": "five"}, "the default must be of type integer"),
    "enum": (
        {"type": "string", "enum": ["eu", "us"], "default": "asia"},
        "the default must be one of: 'eu', 'us'",
    ),
    "minimum": ({"type": "integer", "minimum": 1, "default": 0}, "the default must be >= 1"),
    "pattern": (
        {"type": "string", "pattern": "^[a-z]+$", "default": "ABC"},
        "the default must match the pattern '^[a-z]+$'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DEFAULTS), ids=list(BAD_DEFAULTS))
def test_registration_refuses_a_default_that_breaks_its_own_field(
    admin: httpx.Client, unique_name: str, case: str
) -> None:
    field, reason = BAD_DEFAULTS[case]
    body = plugin_body(
        unique_name, configuration_schema={"region": field, "ok": {"type": "string"}}
    )
    err = assert_error(admin.post("/v1/plugins", json=body), 422, "VALIDATION_ERROR")
    assert err["details"] == {"configuration_schema.region.default": reason}, err
    assert "configuration_schema.region.default" in str(err["message"])
    listed = admin.get("/v1/plugins", params={"search": unique_name}).json()["data"]
    assert listed == []


def test_a_secret_default_that_breaks_its_enum_is_refused_without_quoting_it(
    admin: httpx.Client, unique_name: str
) -> None:
    field = {"type": "string", "secret": True, "enum": ["alpha"], "default": "hunter2"}
    body = plugin_body(unique_name, configuration_schema={"password": field})
    r = admin.post("/v1/plugins", json=body)
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert err["details"] == {
        "configuration_schema.password.default": "the default is not one of the allowed values"
    }
    assert "hunter2" not in r.text


def test_valid_defaults_register(admin: httpx.Client, unique_name: str) -> None:
    schema = {
        name: field | {"default": good}
        for name, (field, _), good in zip(
            BAD_DEFAULTS, BAD_DEFAULTS.values(), (5, "eu", 1, "abc"), strict=True
        )
    }
    r = admin.post("/v1/plugins", json=plugin_body(unique_name, configuration_schema=schema))
    assert r.status_code == 201, r.text


def test_a_module_importing_a_missing_package_names_the_package(
    admin: httpx.Client, unique_name: str
) -> None:
    body = plugin_body(unique_name, class_path="mlx_needs_absent_package.NeedsAbsentPackage")
    r = admin.post("/v1/plugins", json=body)
    assert r.status_code == 201, r.text
    results = r.json()["data"]["validation_results"]
    assert results["class_loadable"] is False
    assert results["class_error"].startswith(
        "module 'mlx_needs_absent_package' imports 'mlx_absent_package_for_tests', which is "
        "not installed"
    ), results


def test_a_missing_plugin_module_is_still_said_to_be_not_found(
    admin: httpx.Client, unique_name: str
) -> None:
    body = plugin_body(unique_name, class_path="mlx_no_such_plugin_module.Plugin")
    results = admin.post("/v1/plugins", json=body).json()["data"]["validation_results"]
    assert results["class_error"] == (
        "module 'mlx_no_such_plugin_module' not found (mlx_no_such_plugin_module is not importable)"
    )
