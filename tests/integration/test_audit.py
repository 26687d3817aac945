"""The audit trail (issue 11): every state change, refused ones included, says who, what,
when, through which request and how it ended; never a secret; `GET /v1/audit` (admin) filters
and pages it. Against the service's app in-process."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import LiveServer, assert_error, register

SECRET = "hunter2-audit-secret-value"


def events(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/v1/audit", params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    return list(body["data"])


def test_every_state_change_is_recorded_with_who_what_and_the_request(
    server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    srv = server_factory(isolation="inprocess")
    alice = srv.client(srv.token("plugins:admin", subject="alice"))
    bob = srv.client(srv.token("plugins:write", subject="bob"))
    name = "audited_echo"
    schema = {
        "password": {"type": "string", "secret": True, "required": False},
        "size": {"type": "integer", "default": 1},
    }
    r = alice.post(
        "/v1/plugins",
        json={
            "name": name,
            "type": "data_source",
            "version": "1.0.0",
            "description": "audited",
            "class_path": "mlx_test_plugins.EchoPlugin",
            "configuration_schema": schema,
            "metadata": {},
        },
        headers={"X-Request-ID": "req-register-1"},
    )
    assert r.status_code == 201, r.text
    plugin_id = r.json()["data"]["id"]

    # a dry run changes nothing and leaves no record
    assert bob.post(f"/v1/plugins/{plugin_id}/activate?dry_run=true", json={}).status_code == 200
    r = bob.post(
        f"/v1/plugins/{plugin_id}/activate",
        json={"configuration": {"password": SECRET, "size": "not a number"}},
        headers={"X-Request-ID": "req-activate-bad"},
    )
    assert_error(r, 422, "INVALID_CONFIGURATION")
    r = bob.post(
        f"/v1/plugins/{plugin_id}/activate",
        json={"configuration": {"password": SECRET}},
        headers={"X-Request-ID": "req-activate-ok"},
    )
    assert r.status_code == 200, r.text
    r = bob.patch(f"/v1/plugins/{plugin_id}/configuration", json={"configuration": {"size": 3}})
    assert r.status_code == 200, r.text
    configure_request = r.headers["x-request-id"]
    assert bob.post(f"/v1/plugins/{plugin_id}/deactivate", json={}).status_code == 200
    assert alice.delete(f"/v1/plugins/{plugin_id}").status_code == 200

    trail = events(alice, plugin_id=plugin_id)
    assert [(e["action"], e["outcome"]) for e in reversed(trail)] == [
        ("register", "success"),
        ("activate", "failure"),
        ("activate", "success"),
        ("configure", "success"),
        ("deactivate", "success"),
        ("delete", "success"),
    ]
    by_request = {e["request_id"]: e for e in trail}
    assert by_request["req-register-1"]["actor"] == "alice"
    assert by_request["req-register-1"]["details"]["name"] == name
    failed = by_request["req-activate-bad"]
    assert failed["actor"] == "bob"
    assert failed["error_code"] == "INVALID_CONFIGURATION"
    assert failed["details"]["configuration_fields"] == ["password", "size"]
    assert by_request["req-activate-ok"]["outcome"] == "success"
    assert by_request[configure_request]["details"]["updated_fields"] == ["size"]
    for e in trail:
        assert e["node_id"], e
        when = datetime.fromisoformat(e["at"].replace("Z", "+00:00"))
        assert abs(datetime.now(UTC) - when) < timedelta(minutes=5), e
    # never a secret: not in the answer, not in the stored trail, not in the log
    assert SECRET not in alice.get("/v1/audit", params={"limit": 100}).text
    assert SECRET not in srv.log_text()


def test_the_trail_filters_pages_and_needs_the_admin_scope(live_server: LiveServer) -> None:
    admin = live_server.client(live_server.token("plugins:admin", subject="carol"))
    ids = [register(admin, f"audit_page_{i}") for i in range(3)]
    mine = events(admin, actor="carol", action="register")
    assert {e["plugin_id"] for e in mine} >= set(ids)
    assert all(e["actor"] == "carol" and e["action"] == "register" for e in mine)
    assert events(admin, actor="carol", outcome="failure") == []

    r = admin.get("/v1/audit", params={"actor": "carol", "limit": 2, "page": 1})
    page = r.json()
    assert len(page["data"]) == 2 and page["pagination"]["has_next"] is True
    assert page["pagination"]["total"] >= 3
    newest_first = [e["id"] for e in page["data"]]
    assert newest_first == sorted(newest_first, reverse=True)

    later = datetime.now(UTC) + timedelta(hours=1)
    assert events(admin, actor="carol", since=later.isoformat()) == []

    reader = live_server.client(live_server.token("plugins:read"))
    assert_error(reader.get("/v1/audit"), 403, "FORBIDDEN")
    assert_error(live_server.anonymous.get("/v1/audit"), 401, "UNAUTHORIZED")
    assert_error(admin.get("/v1/audit", params={"action": "explode"}), 422, "VALIDATION_ERROR")


def test_auto_registration_by_discovery_is_recorded(
    server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    folder = tmp_path / "plugins" / "found"
    folder.mkdir(parents=True)
    (folder / "mlx-plugin.toml").write_text(
        'name = "audit_found"\ntype = "data_source"\nversion = "1.0.0"\n'
        'description = "found by discovery"\nclass_path = "mlx_test_plugins.EchoPlugin"\n'
    )
    srv = server_factory(plugin_path=str(tmp_path / "plugins"))
    admin = srv.client(srv.token("plugins:admin", subject="dave"))
    r = admin.get("/v1/plugins/discover", params={"sources": "filesystem", "auto_register": "true"})
    assert r.status_code == 200, r.text
    trail = events(admin, action="auto_register")
    assert [(e["actor"], e["details"]["name"], e["outcome"]) for e in trail] == [
        ("dave", "audit_found", "success")
    ]
    assert trail[0]["request_id"] == r.headers["x-request-id"]
