"""Registering a plugin by its class_path alone (issue 14): the manifest the class carries (its
class attributes, or the mlx-plugin.toml beside its module) is read by the registration's own
import of the class and fills what the request left out; what the request sends wins; a field
neither gives answers 422 naming it."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import assert_error

DECLARED = "mlx_declared_plugins.DeclaredPlugin"
TOML_DECLARED = "mlx_toml_declared.plugin.TomlDeclaredPlugin"


def register(admin: httpx.Client, body: dict[str, Any], dry_run: bool = False) -> httpx.Response:
    return admin.post("/v1/plugins", json=body, params={"dry_run": "true"} if dry_run else {})


def detail(admin: httpx.Client, plugin_id: str) -> dict[str, Any]:
    r = admin.get(f"/v1/plugins/{plugin_id}")
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def test_a_class_with_its_manifest_in_attributes_registers_by_class_path_alone(
    admin: httpx.Client,
) -> None:
    r = register(admin, {"class_path": DECLARED})
    assert r.status_code == 201, r.text
    result = r.json()["data"]
    assert (result["name"], result["version"], result["status"]) == (
        "declared_plugin",
        "2.1.0",
        "registered",
    )
    d = detail(admin, result["id"])
    assert (d["type"], d["description"]) == (
        "data_source",
        "Carries its manifest in its class attributes",
    )
    assert d["configuration_schema"]["size"]["default"] == 3
    assert d["metadata"]["capabilities"] == ["echo"]
    assert d["class_path"] == DECLARED
    # and it runs as registered
    r = admin.post(f"/v1/plugins/{result['id']}/activate")
    assert r.status_code == 200, r.text
    r = admin.post(f"/v1/plugins/{result['id']}/invoke", json={"operation": "size"})
    assert r.json()["data"]["result"] == 3
    admin.post(f"/v1/plugins/{result['id']}/deactivate", json={})


def test_a_class_with_a_toml_manifest_beside_its_module(admin: httpx.Client) -> None:
    r = register(admin, {"class_path": TOML_DECLARED})
    assert r.status_code == 201, r.text
    d = detail(admin, r.json()["data"]["id"])
    assert (d["name"], d["type"], d["version"]) == ("toml_declared", "feature_store", "0.3.0")
    assert d["description"] == "Its manifest is the mlx-plugin.toml beside its module"
    assert d["configuration_schema"]["greeting"]["default"] == "hello"


def test_fields_sent_win_over_the_classs(admin: httpx.Client, unique_name: str) -> None:
    body = {
        "class_path": DECLARED,
        "name": unique_name,
        "version": "9.0.0",
        "description": "described by the request",
        "configuration_schema": {"size": {"type": "integer", "default": 7}},
    }
    r = register(admin, body)
    assert r.status_code == 201, r.text
    d = detail(admin, r.json()["data"]["id"])
    assert (d["name"], d["version"], d["description"]) == (
        unique_name,
        "9.0.0",
        "described by the request",
    )
    assert d["type"] == "data_source"  # not sent: the class's
    assert d["configuration_schema"]["size"]["default"] == 7
    assert d["metadata"]["capabilities"] == ["echo"]


def test_a_field_neither_gives_is_a_422_naming_it(admin: httpx.Client) -> None:
    for dry_run in (True, False):
        err = assert_error(
            register(admin, {"class_path": "mlx_declared_plugins.NamelessPlugin"}, dry_run),
            422,
            "VALIDATION_ERROR",
        )
        assert set(err["details"]) == {"name", "type", "version"}, err
        assert all(
            reason.startswith("is required: neither the request nor the class's manifest")
            for reason in err["details"].values()
        ), err
    # what the request does give is used: only the rest is missing
    err = assert_error(
        register(
            admin,
            {"class_path": "mlx_declared_plugins.NamelessPlugin", "name": "n", "type": "x"},
        ),
        422,
        "VALIDATION_ERROR",
    )
    assert set(err["details"]) == {"version"}, err


def test_a_class_that_cannot_be_imported_says_so(admin: httpx.Client) -> None:
    err = assert_error(
        register(admin, {"class_path": "mlx_declared_plugins.NoSuchPlugin"}),
        422,
        "VALIDATION_ERROR",
    )
    assert set(err["details"]) == {"name", "type", "version"}
    assert "could not be imported to read its manifest" in err["details"]["name"]
    assert "NoSuchPlugin" in err["details"]["name"]


def test_what_the_classs_manifest_gets_wrong_is_named(admin: httpx.Client) -> None:
    err = assert_error(
        register(admin, {"class_path": "mlx_declared_plugins.BadlyDeclaredPlugin"}),
        422,
        "VALIDATION_ERROR",
    )
    assert err["details"]["name"].startswith("must start with a letter"), err
    assert "(from the class's manifest)" in err["details"]["name"]
    assert err["details"]["version"] == "must be a version such as 1.2.0 (PEP 440)"
    # a version sent by the request gets past the class's, but the name is still the class's
    err = assert_error(
        register(
            admin,
            {"class_path": "mlx_declared_plugins.BadlyDeclaredPlugin", "version": "1.0.0"},
        ),
        422,
        "VALIDATION_ERROR",
    )
    assert set(err["details"]) == {"name"}, err


def test_the_openapi_shows_the_class_path_only_example(live_server: Any) -> None:
    spec = live_server.anonymous.get("/openapi.json", timeout=60).json()
    schema = spec["components"]["schemas"]["RegisterPluginRequest"]
    assert schema["required"] == ["class_path"]
    assert {"class_path": "my_company.plugins.CustomDataSource"} in schema["examples"]
    assert "class_path` alone" in schema["description"]
