"""PATCH /v1/plugins/{id}/configuration, against the service's app in-process."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from tests.conftest import assert_error, register

SPEC_PATCH_BODY: dict[str, Any] = {
    "configuration": {"pool_size": 15, "timeout": 45},
    "restart_required": False,
}
CONNECTION = "postgresql://user:pass@host:5432/db"
SCHEMA: dict[str, Any] = {
    "connection_string": {"type": "string", "required": True},
    "pool_size": {"type": "integer", "minimum": 1, "maximum": 100},
    "timeout": {"type": "integer"},
}
COLD_SCHEMA: dict[str, Any] = {
    "dsn": {"type": "string", "required": True, "hot_reload": False},
    "pool_size": {"type": "integer"},
}
SECRET_SCHEMA: dict[str, Any] = {
    "password": {"type": "string", "required": True, "secret": True},
    "pool_size": {"type": "integer"},
}


def detail(client: httpx.Client, pid: str) -> dict[str, Any]:
    r = client.get(f"/v1/plugins/{pid}")
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def activate_ok(client: httpx.Client, pid: str, configuration: dict[str, Any]) -> None:
    r = client.post(f"/v1/plugins/{pid}/activate", json={"configuration": configuration})
    assert r.status_code == 200, r.text


def patch(client: httpx.Client, pid: str, body: dict[str, Any], **params: str) -> httpx.Response:
    return client.patch(f"/v1/plugins/{pid}/configuration", json=body, params=params)


def patch_ok(client: httpx.Client, pid: str, body: dict[str, Any], **params: str) -> dict:
    r = patch(client, pid, body, **params)
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True
    return dict(r.json()["data"])


def invoke(client: httpx.Client, pid: str, operation: str, **arguments: Any) -> Any:
    r = client.post(
        f"/v1/plugins/{pid}/invoke", json={"operation": operation, "arguments": arguments}
    )
    assert r.status_code == 200, r.text
    return r.json()["data"]["result"]


def test_spec_patch_example_updates_an_active_plugin_hot(admin, unique_name) -> None:
    pid = register(admin, unique_name, configuration_schema=SCHEMA)
    activate_ok(admin, pid, {"connection_string": CONNECTION})
    before = invoke(admin, pid, "config_snapshot")

    data = patch_ok(admin, pid, SPEC_PATCH_BODY)

    assert data["id"] == pid
    assert data["configuration_updated"] is True
    assert data["updated_fields"] == ["pool_size", "timeout"]
    assert data["restart_required"] is False
    assert data["effective_time"]
    datetime.fromisoformat(data["effective_time"].replace("Z", "+00:00"))
    stored = detail(admin, pid)
    assert stored["status"] == "active"
    assert stored["configuration"] == {
        "connection_string": CONNECTION,
        "pool_size": 15,
        "timeout": 45,
    }
    after = invoke(admin, pid, "config_snapshot")
    assert after["configure_calls"] == before["configure_calls"] + 1
    assert {"connection_string", "pool_size", "timeout"} <= set(after["keys"])
    assert "pool_size" not in before["keys"]


def test_unchanged_values_are_not_reported_as_updated(admin, unique_name) -> None:
    pid = register(admin, unique_name, configuration_schema=SCHEMA)
    activate_ok(admin, pid, {"connection_string": CONNECTION, "pool_size": 15})

    data = patch_ok(admin, pid, SPEC_PATCH_BODY)

    assert data["updated_fields"] == ["timeout"]


def test_changing_a_cold_field_without_permission_does_not_restart(admin, unique_name) -> None:
    pid = register(admin, unique_name, configuration_schema=COLD_SCHEMA)
    activate_ok(admin, pid, {"dsn": "sqlite:///one.db"})

    data = patch_ok(admin, pid, {"configuration": {"dsn": "sqlite:///two.db"}})

    assert data["updated_fields"] == ["dsn"]
    assert data["restart_required"] is True
    assert data["restarted"] is False
    assert detail(admin, pid)["status"] == "active"
    assert invoke(admin, pid, "add", a=1, b=1) == 2


def test_changing_a_cold_field_with_permission_restarts_the_plugin(admin, unique_name) -> None:
    pid = register(admin, unique_name, configuration_schema=COLD_SCHEMA)
    activate_ok(admin, pid, {"dsn": "sqlite:///one.db"})

    data = patch_ok(
        admin, pid, {"configuration": {"dsn": "sqlite:///three.db"}, "restart_required": True}
    )

    assert data["updated_fields"] == ["dsn"]
    assert data["restart_required"] is True
    assert data["restarted"] is True
    assert data["effective_time"]
    assert detail(admin, pid)["status"] == "active"
    assert detail(admin, pid)["configuration"]["dsn"] == "sqlite:///three.db"
    assert invoke(admin, pid, "add", a=1, b=2) == 3


def test_changing_only_hot_fields_never_needs_a_restart(admin, unique_name) -> None:
    pid = register(admin, unique_name, configuration_schema=COLD_SCHEMA)
    activate_ok(admin, pid, {"dsn": "sqlite:///one.db"})

    data = patch_ok(admin, pid, {"configuration": {"pool_size": 4}, "restart_required": True})

    assert data["restart_required"] is False
    assert data["restarted"] is False
    assert data["updated_fields"] == ["pool_size"]


def test_an_invalid_value_is_refused_and_nothing_is_stored(admin, unique_name) -> None:
    pid = register(admin, unique_name, configuration_schema=SCHEMA)
    activate_ok(admin, pid, {"connection_string": CONNECTION, "pool_size": 5})
    before = invoke(admin, pid, "config_snapshot")

    err = assert_error(
        patch(admin, pid, {"configuration": {"pool_size": 500, "timeout": 45}}),
        422,
        "INVALID_CONFIGURATION",
    )

    assert list(err["details"]) == ["pool_size"]
    assert detail(admin, pid)["configuration"] == {
        "connection_string": CONNECTION,
        "pool_size": 5,
    }
    assert invoke(admin, pid, "config_snapshot") == before


def test_dry_run_answers_what_would_change_and_stores_nothing(admin, unique_name) -> None:
    pid = register(admin, unique_name, configuration_schema=SCHEMA)
    activate_ok(admin, pid, {"connection_string": CONNECTION, "pool_size": 5})
    before = invoke(admin, pid, "config_snapshot")

    data = patch_ok(admin, pid, SPEC_PATCH_BODY, dry_run="true")

    assert data["updated_fields"] == ["pool_size", "timeout"]
    assert detail(admin, pid)["configuration"] == {
        "connection_string": CONNECTION,
        "pool_size": 5,
    }
    assert invoke(admin, pid, "config_snapshot") == before


def test_patch_on_an_inactive_plugin_is_used_at_the_next_activation(admin, unique_name) -> None:
    pid = register(admin, unique_name, configuration_schema=SCHEMA)
    activate_ok(admin, pid, {"connection_string": CONNECTION})
    assert admin.post(f"/v1/plugins/{pid}/deactivate", json={}).status_code == 200

    data = patch_ok(admin, pid, SPEC_PATCH_BODY)

    assert data["configuration_updated"] is True
    assert data["updated_fields"] == ["pool_size", "timeout"]
    assert data["restart_required"] is False
    stored = detail(admin, pid)
    assert stored["status"] == "inactive"
    assert stored["configuration"]["pool_size"] == 15
    r = admin.post(f"/v1/plugins/{pid}/activate")
    assert r.status_code == 200, r.text
    assert {"connection_string", "pool_size", "timeout"} <= set(
        invoke(admin, pid, "config_snapshot")["keys"]
    )


def test_patch_on_a_registered_plugin_supplies_its_required_field(admin, unique_name) -> None:
    pid = register(admin, unique_name, configuration_schema=SCHEMA)

    patch_ok(admin, pid, {"configuration": {"connection_string": CONNECTION}})

    assert detail(admin, pid)["status"] == "registered"
    r = admin.post(f"/v1/plugins/{pid}/activate")
    assert r.status_code == 200, r.text
    assert "connection_string" in invoke(admin, pid, "config_snapshot")["keys"]


def test_a_secret_sent_back_masked_keeps_its_stored_value(admin, unique_name) -> None:
    password = f"pw-{unique_name}-Kestrel!"
    pid = register(
        admin,
        unique_name,
        class_path="mlx_test_plugins.PasswordCheckPlugin",
        configuration_schema=SECRET_SCHEMA,
    )
    activate_ok(admin, pid, {"password": password, "pool_size": 2})
    shown = detail(admin, pid)["configuration"]
    assert shown["password"] == "********"

    # A client round-trips what GET showed, changing one field.
    data = patch_ok(admin, pid, {"configuration": {**shown, "pool_size": 3}})

    assert data["updated_fields"] == ["pool_size"]
    assert invoke(admin, pid, "password_is", expected=password) is True
    assert invoke(admin, pid, "password_is", expected="********") is False
    assert detail(admin, pid)["configuration"] == {"password": "********", "pool_size": 3}


def test_a_secret_sent_back_masked_survives_a_restart_of_the_plugin(admin, unique_name) -> None:
    password = f"pw-{unique_name}-Heron?"
    pid = register(
        admin,
        unique_name,
        class_path="mlx_test_plugins.PasswordCheckPlugin",
        configuration_schema=SECRET_SCHEMA,
    )
    activate_ok(admin, pid, {"password": password})
    assert admin.post(f"/v1/plugins/{pid}/deactivate", json={}).status_code == 200

    data = patch_ok(admin, pid, {"configuration": {"password": "********", "pool_size": 9}})
    r = admin.post(f"/v1/plugins/{pid}/activate")

    assert data["updated_fields"] == ["pool_size"]
    assert r.status_code == 200, r.text
    assert invoke(admin, pid, "password_is", expected=password) is True


def test_a_new_secret_value_replaces_the_stored_one(admin, unique_name) -> None:
    pid = register(
        admin,
        unique_name,
        class_path="mlx_test_plugins.PasswordCheckPlugin",
        configuration_schema=SECRET_SCHEMA,
    )
    activate_ok(admin, pid, {"password": f"old-{unique_name}"})

    data = patch_ok(admin, pid, {"configuration": {"password": f"new-{unique_name}"}})

    assert data["updated_fields"] == ["password"]
    assert invoke(admin, pid, "password_is", expected=f"new-{unique_name}") is True
    assert f"new-{unique_name}" not in str(data)


def test_patch_without_a_configuration_is_a_validation_error(admin, unique_name) -> None:
    pid = register(admin, unique_name)

    err = assert_error(patch(admin, pid, {"restart_required": False}), 422, "VALIDATION_ERROR")

    assert "configuration" in err["details"]


def test_patch_on_an_unknown_plugin_is_not_found(admin) -> None:
    assert_error(patch(admin, "plugin_no_such_thing_001", SPEC_PATCH_BODY), 404, "PLUGIN_NOT_FOUND")
