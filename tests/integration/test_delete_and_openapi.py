"""DELETE /v1/plugins/{id}, and the published API description (/openapi.json, /docs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, assert_error, register


def activate(client: httpx.Client, pid: str) -> None:
    r = client.post(f"/v1/plugins/{pid}/activate", json={})
    assert r.status_code == 200, r.text


def status_of(client: httpx.Client, pid: str) -> str:
    r = client.get(f"/v1/plugins/{pid}")
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["status"])


def search_total(client: httpx.Client, term: str) -> int:
    r = client.get("/v1/plugins", params={"search": term})
    assert r.status_code == 200, r.text
    return int(r.json()["pagination"]["total"])


# ---------------------------------------------------------------- delete


def test_delete_registered_plugin_removes_it(admin: httpx.Client, unique_name: str) -> None:
    pid = register(admin, unique_name)
    r = admin.delete(f"/v1/plugins/{pid}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert body["data"] == {"id": pid, "deleted": True, "deactivated": False}
    assert_error(admin.get(f"/v1/plugins/{pid}"), 404, "PLUGIN_NOT_FOUND")
    assert search_total(admin, unique_name) == 0


def test_delete_twice_is_not_found(admin: httpx.Client, unique_name: str) -> None:
    pid = register(admin, unique_name)
    assert admin.delete(f"/v1/plugins/{pid}").status_code == 200
    assert_error(admin.delete(f"/v1/plugins/{pid}"), 404, "PLUGIN_NOT_FOUND")


def test_delete_unknown_plugin_is_not_found(admin: httpx.Client) -> None:
    err = assert_error(admin.delete("/v1/plugins/plugin_never_was_001"), 404, "PLUGIN_NOT_FOUND")
    assert "plugin_never_was_001" in str(err["message"])


def test_delete_error_plugin_removes_it(admin: httpx.Client, unique_name: str) -> None:
    pid = register(admin, unique_name, class_path="mlx_test_plugins.NotAPlugin")
    assert status_of(admin, pid) == "error"
    r = admin.delete(f"/v1/plugins/{pid}")
    assert r.status_code == 200, r.text
    assert admin.get(f"/v1/plugins/{pid}").status_code == 404


def test_delete_inactive_plugin_needs_no_force(admin: httpx.Client, unique_name: str) -> None:
    pid = register(admin, unique_name)
    activate(admin, pid)
    assert admin.post(f"/v1/plugins/{pid}/deactivate", json={}).status_code == 200
    r = admin.delete(f"/v1/plugins/{pid}")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["deactivated"] is False


def test_delete_active_plugin_without_force_is_invalid_state(
    admin: httpx.Client, unique_name: str
) -> None:
    pid = register(admin, unique_name)
    activate(admin, pid)
    try:
        for params in ({}, {"force": "false"}):
            err = assert_error(
                admin.delete(f"/v1/plugins/{pid}", params=params), 409, "INVALID_STATE"
            )
            assert pid in str(err["message"]) or err["details"].get("plugin_id") == pid
        assert status_of(admin, pid) == "active"
        r = admin.post(
            f"/v1/plugins/{pid}/invoke", json={"operation": "echo", "arguments": {"value": 3}}
        )
        assert r.status_code == 200, r.text  # still running
    finally:
        admin.delete(f"/v1/plugins/{pid}", params={"force": "true"})


def test_delete_active_plugin_with_force_deactivates_and_deletes_it(
    admin: httpx.Client, unique_name: str
) -> None:
    pid = register(admin, unique_name)
    activate(admin, pid)
    r = admin.delete(f"/v1/plugins/{pid}", params={"force": "true"})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"id": pid, "deleted": True, "deactivated": True}
    assert_error(admin.get(f"/v1/plugins/{pid}"), 404, "PLUGIN_NOT_FOUND")
    r = admin.post(f"/v1/plugins/{pid}/invoke", json={"operation": "echo", "arguments": {}})
    assert_error(r, 404, "PLUGIN_NOT_FOUND")


def test_delete_plugin_required_by_an_active_plugin_is_a_conflict(
    admin: httpx.Client, unique_name: str
) -> None:
    base_name = f"{unique_name}_base"
    base = register(admin, base_name)
    user = register(admin, f"{unique_name}_user", metadata={"requires": [f"{base_name}>=1.0"]})
    activate(admin, base)
    activate(admin, user)
    try:
        for params in ({}, {"force": "true"}):
            err = assert_error(
                admin.delete(f"/v1/plugins/{base}", params=params), 409, "PLUGIN_CONFLICT"
            )
            details = err["details"]
            assert details["conflict_type"] == "required_by_active_plugin"
            assert user in details["required_by"]
            assert f"{unique_name}_user" in str(err["message"])
        assert status_of(admin, base) == "active"
        assert status_of(admin, user) == "active"
    finally:
        admin.post(f"/v1/plugins/{user}/deactivate", json={"force": True})
        admin.post(f"/v1/plugins/{base}/deactivate", json={"force": True})


def test_delete_required_plugin_is_allowed_once_its_dependent_is_inactive(
    admin: httpx.Client, unique_name: str
) -> None:
    base_name = f"{unique_name}_base"
    base = register(admin, base_name)
    user = register(admin, f"{unique_name}_user", metadata={"requires": [base_name]})
    activate(admin, base)
    activate(admin, user)
    assert admin.post(f"/v1/plugins/{user}/deactivate", json={}).status_code == 200
    r = admin.delete(f"/v1/plugins/{base}", params={"force": "true"})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["deactivated"] is True


def test_delete_needs_the_admin_scope(
    live_server: LiveServer, admin: httpx.Client, unique_name: str
) -> None:
    pid = register(admin, unique_name)
    for scopes in (("plugins:write",), ("plugins:read",)):
        with live_server.client(scopes=scopes) as c:
            err = assert_error(c.delete(f"/v1/plugins/{pid}"), 403, "FORBIDDEN")
            assert "plugins:admin" in str(err["message"])
            err = assert_error(
                c.delete(f"/v1/plugins/{pid}", params={"force": "true"}), 403, "FORBIDDEN"
            )
    assert status_of(admin, pid) == "registered"


def test_delete_needs_a_token(
    live_server: LiveServer, admin: httpx.Client, unique_name: str
) -> None:
    pid = register(admin, unique_name)
    assert_error(live_server.anonymous.delete(f"/v1/plugins/{pid}"), 401, "UNAUTHORIZED")
    assert status_of(admin, pid) == "registered"


def test_deleted_plugins_id_number_is_not_reused(admin: httpx.Client, unique_name: str) -> None:
    first = register(admin, unique_name)
    assert admin.delete(f"/v1/plugins/{first}").status_code == 200
    again = register(admin, unique_name)
    assert first == f"plugin_{unique_name}_001"
    assert again == f"plugin_{unique_name}_002"


# ---------------------------------------------------------------- OpenAPI


P = "/v1/plugins"
# (path, method) -> the scope its description must name
OPERATIONS: dict[tuple[str, str], str] = {
    (P, "get"): "plugins:read",
    (P, "post"): "plugins:admin",
    (f"{P}/{{plugin_id}}", "get"): "plugins:read",
    (f"{P}/{{plugin_id}}", "delete"): "plugins:admin",
    (f"{P}/{{plugin_id}}/activate", "post"): "plugins:write",
    (f"{P}/{{plugin_id}}/deactivate", "post"): "plugins:write",
    (f"{P}/{{plugin_id}}/configuration", "patch"): "plugins:write",
    (f"{P}/{{plugin_id}}/health", "get"): "plugins:read",
    (f"{P}/{{plugin_id}}/metrics", "get"): "plugins:read",
    (f"{P}/discover", "get"): "plugins:write",
    (f"{P}/validate-composition", "post"): "plugins:write",
    (f"{P}/{{plugin_id}}/invoke", "post"): "plugins:write",
    (f"{P}/{{plugin_id}}/configuration-schema", "get"): "plugins:read",
}


@pytest.fixture(scope="module")
def openapi(live_server: LiveServer) -> Iterator[dict[str, Any]]:
    r = live_server.anonymous.get("/openapi.json", timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    yield r.json()


def test_openapi_lists_every_path(openapi: dict[str, Any]) -> None:
    expected = {path for path, _ in OPERATIONS} | {"/healthz"}
    assert expected <= set(openapi["paths"]), sorted(expected - set(openapi["paths"]))


@pytest.mark.parametrize(
    ("path", "method"), list(OPERATIONS), ids=[f"{m} {p}" for p, m in OPERATIONS]
)
def test_openapi_documents_each_operation(openapi: dict[str, Any], path: str, method: str) -> None:
    assert method in openapi["paths"][path], (path, sorted(openapi["paths"][path]))


def bearer_scheme_names(openapi: dict[str, Any]) -> set[str]:
    schemes = openapi.get("components", {}).get("securitySchemes", {})
    return {
        name
        for name, s in schemes.items()
        if s.get("type") == "http" and str(s.get("scheme", "")).lower() == "bearer"
    }


def test_openapi_declares_a_bearer_security_scheme(openapi: dict[str, Any]) -> None:
    assert bearer_scheme_names(openapi)


@pytest.mark.parametrize(
    ("path", "method"), list(OPERATIONS), ids=[f"{m} {p}" for p, m in OPERATIONS]
)
def test_openapi_operation_requires_the_bearer_scheme(
    openapi: dict[str, Any], path: str, method: str
) -> None:
    op = openapi["paths"][path][method]
    security = op.get("security", openapi.get("security")) or []
    used = {name for requirement in security for name in requirement}
    assert used & bearer_scheme_names(openapi), (path, method, security)


@pytest.mark.parametrize(
    ("path", "method"), list(OPERATIONS), ids=[f"{m} {p}" for p, m in OPERATIONS]
)
def test_openapi_operation_documents_401_and_403(
    openapi: dict[str, Any], path: str, method: str
) -> None:
    responses = openapi["paths"][path][method]["responses"]
    for status in ("401", "403"):
        assert status in responses, (path, method, sorted(responses))
        assert responses[status].get("description")
        content = responses[status].get("content", {}).get("application/json", {})
        assert content.get("schema"), (path, method, status)


@pytest.mark.parametrize(
    ("path", "method"), list(OPERATIONS), ids=[f"{m} {p}" for p, m in OPERATIONS]
)
def test_openapi_operation_description_names_its_scope(
    openapi: dict[str, Any], path: str, method: str
) -> None:
    op = openapi["paths"][path][method]
    text = f"{op.get('summary', '')} {op.get('description', '')}"
    scope = OPERATIONS[(path, method)]
    assert scope in text, (path, method, text)
    # no weaker scope is advertised as sufficient
    weaker = {"plugins:admin": ["plugins:read", "plugins:write"], "plugins:write": ["plugins:read"]}
    for other in weaker.get(scope, []):
        assert other not in text, (path, method, text)


def test_openapi_discover_description_names_admin_for_auto_register(
    openapi: dict[str, Any],
) -> None:
    text = openapi["paths"][f"{P}/discover"]["get"].get("description", "")
    assert "plugins:admin" in text and "auto_register" in text


def test_openapi_healthz_needs_no_security(openapi: dict[str, Any]) -> None:
    op = openapi["paths"]["/healthz"]["get"]
    assert not op.get("security", openapi.get("security"))


def test_openapi_error_envelope_schema_has_the_error_fields(openapi: dict[str, Any]) -> None:
    ref = openapi["paths"][P]["get"]["responses"]["401"]["content"]["application/json"]["schema"]
    schemas = openapi["components"]["schemas"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = schemas[node["$ref"].rsplit("/", 1)[-1]]
        return node

    envelope = resolve(ref)
    assert {"success", "error"} <= set(envelope["properties"])
    error = resolve(envelope["properties"]["error"])
    assert {"code", "message", "details", "request_id"} <= set(error["properties"])


def test_docs_page_is_html(live_server: LiveServer) -> None:
    r = live_server.anonymous.get("/docs", timeout=60)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "<html" in r.text.lower()
    assert "openapi.json" in r.text


# Operation ids are the SDK's method names: `plugins_list` is `client.plugins.list`.
OPERATION_IDS: dict[tuple[str, str], str] = {
    (P, "get"): "plugins_list",
    (P, "post"): "plugins_register",
    (f"{P}/{{plugin_id}}", "get"): "plugins_get",
    (f"{P}/{{plugin_id}}", "delete"): "plugins_delete",
    (f"{P}/{{plugin_id}}/activate", "post"): "plugins_activate",
    (f"{P}/{{plugin_id}}/deactivate", "post"): "plugins_deactivate",
    (f"{P}/{{plugin_id}}/configuration", "patch"): "plugins_update_configuration",
    (f"{P}/{{plugin_id}}/health", "get"): "plugins_health_check",
    (f"{P}/{{plugin_id}}/metrics", "get"): "plugins_metrics",
    (f"{P}/discover", "get"): "plugins_discover",
    (f"{P}/validate-composition", "post"): "plugins_validate_composition",
    (f"{P}/{{plugin_id}}/invoke", "post"): "plugins_invoke",
    (f"{P}/{{plugin_id}}/configuration-schema", "get"): "plugins_configuration_schema",
    ("/v1/nodes", "get"): "nodes_list",
    ("/v1/audit", "get"): "audit_list",
    ("/healthz", "get"): "service_healthz",
    ("/readyz", "get"): "service_readyz",
    ("/metrics", "get"): "service_prometheus_metrics",
}


def operations(openapi: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in openapi["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield path, method, op


def test_openapi_operation_ids_are_the_expected_ones(openapi: dict[str, Any]) -> None:
    found = {(path, method): op.get("operationId") for path, method, op in operations(openapi)}
    assert found == OPERATION_IDS


def test_openapi_operation_ids_name_the_sdks_methods() -> None:
    from mlx_platform import sdk

    groups = {
        "plugins": (sdk.Plugins, sdk.AsyncPlugins),
        "nodes": (sdk.Nodes, sdk.AsyncNodes),
        "audit": (sdk.Audit, sdk.AsyncAudit),
    }
    for op_id in OPERATION_IDS.values():
        group, _, method = op_id.partition("_")
        if group == "service":
            continue  # probes and scraping, not the SDK's
        for resource in groups[group]:
            assert callable(getattr(resource, method, None)), (resource.__name__, op_id)
    for group in groups:  # client.plugins, client.nodes, client.audit
        assert hasattr(sdk.MLXClient, group) and hasattr(sdk.AsyncMLXClient, group)


def test_openapi_has_no_fastapi_validation_error_schema(openapi: dict[str, Any]) -> None:
    """FastAPI's default 422 (`HTTPValidationError`) is not what the service answers."""
    text = json.dumps(openapi)
    assert "HTTPValidationError" not in text
    assert "ValidationError" not in openapi.get("components", {}).get("schemas", {})


def test_openapi_every_error_answer_is_the_envelope(openapi: dict[str, Any]) -> None:
    for path, method, op in operations(openapi):
        for status, answer in op["responses"].items():
            if int(status) < 400:
                continue
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (path, method, status)


def test_openapi_lists_exactly_each_operations_codes(openapi: dict[str, Any]) -> None:
    responses = openapi["paths"][f"{P}/{{plugin_id}}/deactivate"]["post"]["responses"]
    conflict = responses["409"]
    assert "`INVALID_STATE`" in conflict["description"]
    assert "PLUGIN_ALREADY_EXISTS" not in conflict["description"]
    assert set(conflict["content"]["application/json"]["examples"]) == {"INVALID_STATE"}
    assert "424" not in responses and "504" not in responses
    # register cannot answer 404; a plugin's page cannot answer 409
    assert "404" not in openapi["paths"][P]["post"]["responses"]
    assert "409" not in openapi["paths"][f"{P}/{{plugin_id}}"]["get"]["responses"]
    # only writes are rate limited (invocations are not counted)
    for path, method, op in operations(openapi):
        limited = path.startswith("/v1/") and method != "get" and not path.endswith("/invoke")
        assert ("429" in op["responses"]) is limited, (path, method)
