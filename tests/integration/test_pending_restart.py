"""A change that waits for a restart is visible (issue 14): a `hot_reload: false` field changed
without `restart_required` is stored and listed in `pending_restart` (the answer and the
plugin's detail) while the plugin runs the old value; the next allowed restart (an update
with `restart_required`, or deactivate then activate) applies it, clears the list, and its
answer names in `updated_fields` the fields it changed for the plugin."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import register

SCHEMA: dict[str, Any] = {
    "dsn": {"type": "string", "required": True, "hot_reload": False},
    "pool_size": {"type": "integer", "default": 1},
}


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def configure(admin: httpx.Client, pid: str, restart: bool = False, **fields: Any) -> dict:
    body = {"configuration": fields, "restart_required": restart}
    return ok(admin.patch(f"/v1/plugins/{pid}/configuration", json=body))


def running(admin: httpx.Client, pid: str) -> dict[str, Any]:
    """The configuration the plugin's instance has."""
    body = {"operation": "config_values", "arguments": {}}
    return dict(ok(admin.post(f"/v1/plugins/{pid}/invoke", json=body))["result"])


def pending(admin: httpx.Client, pid: str) -> list[str]:
    return list(ok(admin.get(f"/v1/plugins/{pid}"))["pending_restart"])


def active_plugin(admin: httpx.Client, name: str) -> str:
    pid = register(
        admin,
        name,
        class_path="mlx_test_plugins.PasswordCheckPlugin",
        configuration_schema=SCHEMA,
    )
    ok(admin.post(f"/v1/plugins/{pid}/activate", json={"configuration": {"dsn": "one"}}))
    return pid


def test_a_cold_change_waits_visibly_until_a_restart_is_allowed(
    admin: httpx.Client, unique_name: str
) -> None:
    pid = active_plugin(admin, unique_name)
    assert pending(admin, pid) == []

    answer = configure(admin, pid, dsn="two")
    assert answer["updated_fields"] == ["dsn"] and answer["restarted"] is False
    assert answer["pending_restart"] == ["dsn"]
    assert pending(admin, pid) == ["dsn"]
    assert running(admin, pid)["dsn"] == "one"  # stored, not run
    assert ok(admin.get(f"/v1/plugins/{pid}"))["configuration"]["dsn"] == "two"

    # a hot field changed meanwhile waits with it: the plugin gets one configuration or the other
    answer = configure(admin, pid, pool_size=3)
    assert answer["updated_fields"] == ["pool_size"]
    assert answer["pending_restart"] == ["dsn", "pool_size"]
    assert running(admin, pid)["pool_size"] == 1

    # the restart allowed, with nothing new sent: what waited is applied, and said so
    answer = configure(admin, pid, restart=True)
    assert answer["restarted"] is True and answer["configuration_updated"] is True
    assert answer["updated_fields"] == ["dsn", "pool_size"]
    assert answer["pending_restart"] == []
    assert pending(admin, pid) == []
    assert (running(admin, pid)["dsn"], running(admin, pid)["pool_size"]) == ("two", 3)

    # nothing waits any more: the same request changes nothing
    answer = configure(admin, pid, restart=True)
    assert (answer["updated_fields"], answer["restarted"]) == ([], False)


def test_deactivate_and_activate_apply_what_waited(admin: httpx.Client, unique_name: str) -> None:
    pid = active_plugin(admin, unique_name)
    configure(admin, pid, dsn="two")
    assert pending(admin, pid) == ["dsn"]
    ok(admin.post(f"/v1/plugins/{pid}/deactivate", json={}))
    assert pending(admin, pid) == []  # not active: nothing runs, nothing waits
    ok(admin.post(f"/v1/plugins/{pid}/activate", json={}))
    assert pending(admin, pid) == []
    assert running(admin, pid)["dsn"] == "two"


def test_a_dry_run_says_what_would_wait_and_stores_nothing(
    admin: httpx.Client, unique_name: str
) -> None:
    pid = active_plugin(admin, unique_name)
    body = {"configuration": {"dsn": "two"}, "restart_required": False}
    answer = ok(
        admin.patch(f"/v1/plugins/{pid}/configuration", json=body, params={"dry_run": "true"})
    )
    assert answer["dry_run"] is True and answer["pending_restart"] == ["dsn"]
    assert pending(admin, pid) == []
