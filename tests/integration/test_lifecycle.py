"""Activation, deactivation and the checks activation makes, against the service's app in-process."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, assert_error, register

SPEC_ACTIVATE_BODY: dict[str, Any] = {
    "configuration": {
        "connection_string": "postgresql://user:pass@host:5432/db",
        "pool_size": 10,
        "timeout": 30,
    },
    "auto_start": True,
}
SPEC_DEACTIVATE_BODY = {"force": False, "graceful_shutdown_timeout": 30}
CONNECTION_SCHEMA = {
    "connection_string": {
        "type": "string",
        "required": True,
        "description": "Database connection string",
    }
}
# One field per kind of rule, so that one bad value breaks exactly one field.
RULES_SCHEMA: dict[str, Any] = {
    "name": {"type": "string", "required": True},
    "count": {"type": "integer", "minimum": 1, "maximum": 10},
    "mode": {"type": "string", "enum": ["fast", "safe"]},
    "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "retries": {"type": "integer"},
}
VALID_RULES_CONFIG: dict[str, Any] = {
    "name": "ok",
    "count": 5,
    "mode": "fast",
    "code": "ABC",
    "retries": 2,
}


def detail(client: httpx.Client, pid: str) -> dict[str, Any]:
    r = client.get(f"/v1/plugins/{pid}")
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def activate(client: httpx.Client, pid: str, **body: Any) -> httpx.Response:
    return client.post(f"/v1/plugins/{pid}/activate", json=body)


def activate_ok(client: httpx.Client, pid: str, **body: Any) -> dict[str, Any]:
    r = activate(client, pid, **body)
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def deactivate(client: httpx.Client, pid: str) -> httpx.Response:
    return client.post(f"/v1/plugins/{pid}/deactivate", json=SPEC_DEACTIVATE_BODY)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---------------------------------------------------------------- activation


def test_spec_activate_example_makes_the_plugin_active_and_healthy(admin, unique_name) -> None:
    pid = register(admin, unique_name, configuration_schema=CONNECTION_SCHEMA)

    r = activate(admin, pid, **SPEC_ACTIVATE_BODY)

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    data = body["data"]
    assert data["id"] == pid
    assert data["status"] == "active"
    parse_time(data["activation_time"])
    health = data["health_check"]
    assert health["status"] == "healthy"
    assert isinstance(health["response_time_ms"], int | float)
    assert health["response_time_ms"] >= 0
    parse_time(health["last_check"])
    assert detail(admin, pid)["status"] == "active"


def test_activation_keeps_configuration_fields_the_schema_does_not_declare(
    admin, unique_name
) -> None:
    pid = register(admin, unique_name, configuration_schema=CONNECTION_SCHEMA)
    activate_ok(admin, pid, **SPEC_ACTIVATE_BODY)

    configuration = detail(admin, pid)["configuration"]

    assert configuration["connection_string"] == "postgresql://user:pass@host:5432/db"
    assert configuration["pool_size"] == 10
    assert configuration["timeout"] == 30


@pytest.mark.parametrize(
    ("field", "bad_config"),
    [
        ("name", {"name": None}),
        ("retries", {"retries": "three"}),
        ("count", {"count": 11}),
        ("count", {"count": 0}),
        ("mode", {"mode": "reckless"}),
        ("code", {"code": "abc"}),
        ("retries", {"retries": True}),
    ],
    ids=[
        "missing_required",
        "wrong_type",
        "above_maximum",
        "below_minimum",
        "not_in_enum",
        "not_matching_pattern",
        "boolean_for_integer",
    ],
)
def test_one_invalid_field_is_refused_with_exactly_that_field_in_details(
    admin, unique_name, field, bad_config
) -> None:
    pid = register(admin, unique_name, configuration_schema=RULES_SCHEMA)
    config = {**VALID_RULES_CONFIG, **bad_config}
    config = {k: v for k, v in config.items() if v is not None}

    err = assert_error(activate(admin, pid, configuration=config), 422, "INVALID_CONFIGURATION")

    assert list(err["details"]) == [field]
    assert field in err["message"]


def test_every_invalid_field_gets_one_details_entry_and_nothing_is_stored(
    admin, unique_name
) -> None:
    pid = register(
        admin,
        unique_name,
        configuration_schema={
            **RULES_SCHEMA,
            **{
                "level": {"type": "integer", "minimum": 5},
                "flag": {"type": "integer"},
            },
        },
    )
    before = detail(admin, pid)
    bad = {
        # "name" (required) is missing
        "retries": "three",  # wrong type
        "count": 11,  # above maximum
        "level": 2,  # below minimum
        "mode": "reckless",  # not in enum
        "code": "abc",  # not matching pattern
        "flag": True,  # boolean for integer
    }

    err = assert_error(activate(admin, pid, configuration=bad), 422, "INVALID_CONFIGURATION")

    assert set(err["details"]) == {"name", "retries", "count", "level", "mode", "code", "flag"}
    assert len(err["details"]) == 7
    assert all(isinstance(v, str) and v for v in err["details"].values())
    after = detail(admin, pid)
    assert after["status"] == before["status"] == "registered"
    assert after["configuration"] == before["configuration"]


def test_invalid_configuration_leaves_a_previous_configuration_untouched(
    admin, unique_name
) -> None:
    pid = register(admin, unique_name, configuration_schema=RULES_SCHEMA)
    activate_ok(admin, pid, configuration=VALID_RULES_CONFIG)
    assert deactivate(admin, pid).status_code == 200
    before = detail(admin, pid)

    assert_error(activate(admin, pid, configuration={"count": 99}), 422, "INVALID_CONFIGURATION")

    after = detail(admin, pid)
    assert after["status"] == "inactive"
    assert after["configuration"] == before["configuration"] == VALID_RULES_CONFIG


def test_activating_an_active_plugin_is_an_invalid_state(admin, unique_name) -> None:
    pid = register(admin, unique_name)
    activate_ok(admin, pid)

    assert_error(activate(admin, pid), 409, "INVALID_STATE")
    assert detail(admin, pid)["status"] == "active"


def test_activating_a_plugin_whose_class_cannot_load_is_an_invalid_state(
    admin, unique_name
) -> None:
    r = admin.post(
        "/v1/plugins",
        json={
            "name": unique_name,
            "type": "data_source",
            "version": "1.0.0",
            "class_path": "mlx_test_plugins.NotAPlugin",
        },
    )
    assert r.status_code == 201, r.text
    pid = r.json()["data"]["id"]
    assert r.json()["data"]["status"] == "error"

    assert_error(activate(admin, pid), 409, "INVALID_STATE")
    assert detail(admin, pid)["status"] == "error"


def test_activation_with_no_body_works_when_no_field_is_required(admin, unique_name) -> None:
    pid = register(
        admin,
        unique_name,
        configuration_schema={"pool_size": {"type": "integer", "default": 5}},
    )

    r = admin.post(f"/v1/plugins/{pid}/activate")

    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "active"
    assert detail(admin, pid)["status"] == "active"


def test_activation_with_an_empty_json_body_works_when_no_field_is_required(
    admin, unique_name
) -> None:
    pid = register(admin, unique_name)

    r = admin.post(f"/v1/plugins/{pid}/activate", json={})

    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "active"


def test_dry_run_activation_changes_nothing(admin, unique_name) -> None:
    pid = register(admin, unique_name, configuration_schema=CONNECTION_SCHEMA)

    r = admin.post(
        f"/v1/plugins/{pid}/activate", params={"dry_run": "true"}, json=SPEC_ACTIVATE_BODY
    )

    assert r.status_code == 200, r.text
    after = detail(admin, pid)
    assert after["status"] == "registered"
    assert after["configuration"] == {}
    assert_error(
        admin.post(
            f"/v1/plugins/{pid}/invoke", json={"operation": "echo", "arguments": {"value": 1}}
        ),
        409,
        "INVALID_STATE",
    )


def test_dry_run_activation_still_reports_an_invalid_configuration(admin, unique_name) -> None:
    pid = register(admin, unique_name, configuration_schema=CONNECTION_SCHEMA)

    r = admin.post(f"/v1/plugins/{pid}/activate", params={"dry_run": "true"}, json={})

    err = assert_error(r, 422, "INVALID_CONFIGURATION")
    assert list(err["details"]) == ["connection_string"]


def test_without_auto_start_the_plugin_is_active_but_not_started_until_first_invoke(
    admin, unique_name
) -> None:
    pid = register(admin, unique_name)

    data = activate_ok(admin, pid, configuration={}, auto_start=False)

    assert data["status"] == "active"
    assert data["health_check"]["status"] == "not_started"
    r = admin.post(
        f"/v1/plugins/{pid}/invoke", json={"operation": "add", "arguments": {"a": 2, "b": 3}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["result"] == 5
    health = admin.get(f"/v1/plugins/{pid}/health").json()["data"]
    assert health["status"] == "healthy"
    assert health["checks"]["connectivity"]["status"] == "pass"


# ---------------------------------------------------------------- deactivation


def test_spec_deactivate_example_makes_the_plugin_inactive(admin, unique_name) -> None:
    pid = register(admin, unique_name)
    activate_ok(admin, pid)

    r = deactivate(admin, pid)

    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["id"] == pid
    assert data["status"] == "inactive"
    assert data["pending_operations"] == 0
    parse_time(data["deactivation_time"])
    assert detail(admin, pid)["status"] == "inactive"
    assert_error(
        admin.post(
            f"/v1/plugins/{pid}/invoke", json={"operation": "echo", "arguments": {"value": 1}}
        ),
        409,
        "INVALID_STATE",
    )


def test_deactivating_an_inactive_plugin_is_an_invalid_state(admin, unique_name) -> None:
    pid = register(admin, unique_name)
    activate_ok(admin, pid)
    assert deactivate(admin, pid).status_code == 200

    assert_error(deactivate(admin, pid), 409, "INVALID_STATE")
    assert detail(admin, pid)["status"] == "inactive"


def test_deactivating_a_registered_plugin_is_an_invalid_state(admin, unique_name) -> None:
    pid = register(admin, unique_name)

    assert_error(deactivate(admin, pid), 409, "INVALID_STATE")
    assert detail(admin, pid)["status"] == "registered"


def test_an_inactive_plugin_can_be_activated_again(admin, unique_name) -> None:
    pid = register(admin, unique_name, configuration_schema=CONNECTION_SCHEMA)
    activate_ok(admin, pid, **SPEC_ACTIVATE_BODY)
    assert deactivate(admin, pid).status_code == 200

    # The stored configuration satisfies the required field: no configuration needed again.
    data = activate_ok(admin, pid)

    assert data["status"] == "active"
    assert data["health_check"]["status"] == "healthy"
    assert detail(admin, pid)["status"] == "active"
    r = admin.post(
        f"/v1/plugins/{pid}/invoke", json={"operation": "echo", "arguments": {"value": "x"}}
    )
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------- start and health failures


@pytest.mark.parametrize(
    ("class_name", "reason"),
    [
        ("FailingStartPlugin", "cannot reach the warehouse"),
        ("UnhealthyPlugin", "upstream is down"),
    ],
)
def test_a_plugin_that_fails_to_start_or_is_unhealthy_is_refused_and_keeps_its_status(
    admin, unique_name, class_name, reason
) -> None:
    pid = register(admin, unique_name, class_path=f"mlx_test_plugins.{class_name}")

    err = assert_error(activate(admin, pid), 424, "PLUGIN_HEALTH_CHECK_FAILED")

    assert reason in err["message"]
    after = detail(admin, pid)
    assert after["status"] == "registered"
    assert reason in (after["status_reason"] or "")
    assert after["health"]["status"] == "unhealthy"
    assert_error(
        admin.post(f"/v1/plugins/{pid}/invoke", json={"operation": "anything"}),
        409,
        "INVALID_STATE",
    )


def test_a_health_check_that_never_answers_fails_the_activation(server_factory) -> None:
    srv: LiveServer = server_factory(health_timeout="1", seed_builtin_plugins="false")
    with srv.client() as client:
        pid = register(client, "hangs", class_path="mlx_test_plugins.HangingHealthPlugin")

        assert_error(activate(client, pid), 424, "PLUGIN_HEALTH_CHECK_FAILED")

        after = detail(client, pid)
        assert after["status"] == "registered"
        assert after["status_reason"]
        assert after["health"]["status"] == "unhealthy"


# ---------------------------------------------------------------- conflicts


def test_activating_a_plugin_that_declares_a_conflict_with_an_active_one_is_refused(
    admin, unique_name
) -> None:
    first = register(admin, f"{unique_name}_a")
    second = register(admin, f"{unique_name}_b", metadata={"conflicts_with": [f"{unique_name}_a"]})
    activate_ok(admin, first)

    err = assert_error(activate(admin, second), 409, "PLUGIN_CONFLICT")

    details = err["details"]
    assert details["conflicting_plugin"] == f"{unique_name}_a"
    assert details["conflict_type"] == "explicit_conflict"
    assert isinstance(details["resolution_options"], list) and details["resolution_options"]
    assert detail(admin, second)["status"] == "registered"


def test_activating_a_plugin_that_an_active_one_declares_a_conflict_with_is_refused(
    admin, unique_name
) -> None:
    declares = register(
        admin, f"{unique_name}_a", metadata={"conflicts_with": [f"{unique_name}_b"]}
    )
    victim = register(admin, f"{unique_name}_b")
    activate_ok(admin, declares)

    err = assert_error(activate(admin, victim), 409, "PLUGIN_CONFLICT")

    details = err["details"]
    assert details["conflicting_plugin"] == f"{unique_name}_a"
    assert details["conflict_type"] == "explicit_conflict"
    assert isinstance(details["resolution_options"], list) and details["resolution_options"]
    assert detail(admin, victim)["status"] == "registered"


def test_a_conflict_ends_when_the_conflicting_plugin_is_deactivated(admin, unique_name) -> None:
    first = register(admin, f"{unique_name}_a")
    second = register(admin, f"{unique_name}_b", metadata={"conflicts_with": [f"{unique_name}_a"]})
    activate_ok(admin, first)
    assert_error(activate(admin, second), 409, "PLUGIN_CONFLICT")
    assert deactivate(admin, first).status_code == 200

    assert activate_ok(admin, second)["status"] == "active"


def test_only_one_experiment_tracker_can_be_active(server_factory) -> None:
    srv = server_factory(seed_builtin_plugins="false")
    with srv.client() as client:
        first = register(client, "tracker_one", type="experiment_tracker")
        second = register(client, "tracker_two", type="experiment_tracker")
        activate_ok(client, first)

        err = assert_error(activate(client, second), 409, "PLUGIN_CONFLICT")

        details = err["details"]
        assert details["conflicting_plugin"] == "tracker_one"
        assert details["conflict_type"] == "singleton_type"
        assert isinstance(details["resolution_options"], list) and details["resolution_options"]
        assert detail(client, second)["status"] == "registered"
        assert deactivate(client, first).status_code == 200
        assert activate_ok(client, second)["status"] == "active"


def test_another_version_of_the_same_plugin_being_active_is_a_version_conflict(
    admin, unique_name
) -> None:
    old = register(admin, unique_name, version="1.0.0")
    new = register(admin, unique_name, version="2.0.0")
    activate_ok(admin, old)

    err = assert_error(activate(admin, new), 409, "PLUGIN_CONFLICT")

    assert err["details"]["conflict_type"] == "version_conflict"
    assert err["details"]["conflicting_plugin"] == unique_name
    assert err["details"]["resolution_options"]
    assert detail(admin, new)["status"] == "registered"


# ---------------------------------------------------------------- dependencies


def _missing(err: dict[str, Any]) -> list[dict[str, Any]]:
    missing = err["details"]["missing_dependencies"]
    assert isinstance(missing, list)
    return list(missing)


def test_a_required_plugin_that_is_registered_but_not_active_is_missing(admin, unique_name) -> None:
    base = f"{unique_name}_base"
    register(admin, base, version="1.5.0")
    pid = register(admin, f"{unique_name}_app", metadata={"requires": [f"{base}>=1.0"]})

    err = assert_error(activate(admin, pid), 409, "DEPENDENCY_MISSING")

    assert f"{base}>=1.0" in err["message"]
    [missing] = _missing(err)
    assert missing["requirement"] == f"{base}>=1.0"
    assert missing["name"] == base
    assert missing["registered_version_satisfies"] is True
    assert missing["registered_versions"] == ["1.5.0"]
    assert detail(admin, pid)["status"] == "registered"


def test_a_required_version_no_registered_plugin_satisfies_is_missing(admin, unique_name) -> None:
    base = f"{unique_name}_base"
    register(admin, base, version="1.5.0")
    pid = register(admin, f"{unique_name}_app", metadata={"requires": [f"{base}>=2.0"]})

    err = assert_error(activate(admin, pid), 409, "DEPENDENCY_MISSING")

    assert f"{base}>=2.0" in err["message"]
    [missing] = _missing(err)
    assert missing["requirement"] == f"{base}>=2.0"
    assert missing["registered_version_satisfies"] is False


def test_a_required_plugin_that_is_not_registered_at_all_is_missing(admin, unique_name) -> None:
    pid = register(admin, unique_name, metadata={"requires": [f"{unique_name}_ghost"]})

    err = assert_error(activate(admin, pid), 409, "DEPENDENCY_MISSING")

    [missing] = _missing(err)
    assert missing["requirement"] == f"{unique_name}_ghost"
    assert missing["registered_version_satisfies"] is False
    assert missing["registered_versions"] == []


def test_an_active_version_outside_the_requirement_does_not_satisfy_it(admin, unique_name) -> None:
    base = f"{unique_name}_base"
    old = register(admin, base, version="1.5.0")
    activate_ok(admin, old)
    pid = register(admin, f"{unique_name}_app", metadata={"requires": [f"{base}>=2.0"]})

    err = assert_error(activate(admin, pid), 409, "DEPENDENCY_MISSING")

    [missing] = _missing(err)
    assert missing["requirement"] == f"{base}>=2.0"
    assert missing["active_version"] == "1.5.0"
    assert missing["registered_version_satisfies"] is False


def test_activation_succeeds_once_the_required_plugin_is_active(admin, unique_name) -> None:
    base = register(admin, f"{unique_name}_base", version="1.5.0")
    pid = register(admin, f"{unique_name}_app", metadata={"requires": [f"{unique_name}_base>=1.0"]})
    assert_error(activate(admin, pid), 409, "DEPENDENCY_MISSING")
    activate_ok(admin, base)

    assert activate_ok(admin, pid)["status"] == "active"


# ---------------------------------------------------------------- resources


def test_memory_claimed_by_active_plugins_limits_further_activations(server_factory) -> None:
    srv: LiveServer = server_factory(capacity_memory_mb="1000", seed_builtin_plugins="false")
    with srv.client() as client:
        big_one = register(client, "big_one", metadata={"min_memory_mb": 600})
        big_two = register(client, "big_two", metadata={"min_memory_mb": 600})
        activate_ok(client, big_one)

        err = assert_error(activate(client, big_two), 409, "INSUFFICIENT_RESOURCES")

        memory = err["details"]["shortfall"]["memory_mb"]
        assert memory["required"] == 600
        assert memory["available"] == 400
        assert memory["capacity"] == 1000
        assert memory["claimed_by_active_plugins"] == 600
        assert detail(client, big_two)["status"] == "registered"

        assert deactivate(client, big_one).status_code == 200
        assert activate_ok(client, big_two)["status"] == "active"


def test_a_plugin_needing_a_gpu_cannot_activate_without_gpus(server_factory) -> None:
    srv: LiveServer = server_factory(capacity_gpus="0", seed_builtin_plugins="false")
    with srv.client() as client:
        pid = register(client, "needs_gpu", metadata={"gpu_required": True})

        err = assert_error(activate(client, pid), 409, "INSUFFICIENT_RESOURCES")

        shortfall = err["details"]["shortfall"]
        assert shortfall and any("gpu" in key for key in shortfall), shortfall
        assert detail(client, pid)["status"] == "registered"


def test_activation_refuses_a_plugin_that_cannot_run_here(admin, unique_name) -> None:
    from tests.conftest import assert_error, register

    pid = register(admin, unique_name, metadata={"platform_api": ">=99"})
    err = assert_error(admin.post(f"/v1/plugins/{pid}/activate", json={}), 409, "PLUGIN_CONFLICT")
    assert err["details"]["conflict_type"] == "incompatible_platform"
    assert "needs platform API >=99" in str(err["message"])
    assert admin.get(f"/v1/plugins/{pid}").json()["data"]["status"] == "registered"


def test_spec_error_example_singleton_conflict_reads_as_the_spec_shows(server_factory) -> None:
    from tests.conftest import assert_error, register

    server = server_factory(seed_builtin_plugins="false")
    with server.client() as c:
        mlflow = register(c, "mlflow", type="experiment_tracker")
        wandb = register(c, "wandb", type="experiment_tracker")
        assert c.post(f"/v1/plugins/{mlflow}/activate", json={}).status_code == 200
        err = assert_error(c.post(f"/v1/plugins/{wandb}/activate", json={}), 409, "PLUGIN_CONFLICT")
    assert str(err["message"]).startswith("Plugin 'wandb' conflicts with active plugin 'mlflow'")
    details = err["details"]
    assert details["conflicting_plugin"] == "mlflow"
    assert details["conflict_type"] == "singleton_type"
    assert details["resolution_options"] == [
        "Deactivate 'mlflow' before activating 'wandb'",
        "Use 'mlflow' for experiment tracking instead",
    ]
