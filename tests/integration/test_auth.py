"""Authentication, scopes and request ids, against the service's app in-process."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from tests.conftest import LiveServer, assert_error, mlx_cli, plugin_body, register

MISSING = "plugin_does_not_exist_001"

# Every endpoint, with a plugin id that does not exist: authentication comes before any lookup.
ENDPOINTS = [
    ("GET", "/v1/plugins", None),
    ("POST", "/v1/plugins", plugin_body("auth_probe")),
    ("GET", "/v1/plugins/discover", None),
    ("POST", "/v1/plugins/validate-composition", {"plugins": [{"name": "x"}]}),
    ("GET", f"/v1/plugins/{MISSING}", None),
    ("DELETE", f"/v1/plugins/{MISSING}", None),
    ("GET", f"/v1/plugins/{MISSING}/configuration-schema", None),
    ("POST", f"/v1/plugins/{MISSING}/activate", {}),
    ("POST", f"/v1/plugins/{MISSING}/deactivate", {}),
    ("PATCH", f"/v1/plugins/{MISSING}/configuration", {"configuration": {}}),
    ("GET", f"/v1/plugins/{MISSING}/health", None),
    ("GET", f"/v1/plugins/{MISSING}/metrics", None),
    ("POST", f"/v1/plugins/{MISSING}/invoke", {"operation": "echo", "arguments": {}}),
]


@pytest.fixture(scope="module")
def reader(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.client(scopes=("plugins:read",)) as c:
        yield c


@pytest.fixture(scope="module")
def writer(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.client(scopes=("plugins:write",)) as c:
        yield c


@pytest.fixture(scope="module")
def anonymous(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.client(token="") as c:
        yield c


def call(client: httpx.Client, method: str, path: str, body: object = None, **kw: object):
    if body is None:
        return client.request(method, path, **kw)
    return client.request(method, path, json=body, **kw)


def with_bearer(live_server: LiveServer, token: str) -> httpx.Client:
    return live_server.client(token=token)


def status_of(admin: httpx.Client, plugin_id: str) -> str:
    r = admin.get(f"/v1/plugins/{plugin_id}")
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["status"])


# ---------------------------------------------------------------- 401: who are you?


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_request_without_token_is_unauthorized_on_every_endpoint(
    anonymous: httpx.Client, method: str, path: str, body: object
) -> None:
    assert_error(call(anonymous, method, path, body), 401, "UNAUTHORIZED")


def test_register_without_token_stores_nothing(
    anonymous: httpx.Client, admin: httpx.Client, unique_name: str
) -> None:
    assert_error(anonymous.post("/v1/plugins", json=plugin_body(unique_name)), 401, "UNAUTHORIZED")
    assert admin.get(f"/v1/plugins/plugin_{unique_name}_001").status_code == 404


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-jwt",
        "Bearer abc.def.ghi",
        "Bearer",
        "Basic YWRtaW46YWRtaW4=",
        "Token {admin}",
        "Bearer {admin}x",
        "Bearer {admin_truncated}",
    ],
    ids=[
        "garbage",
        "three-garbage-segments",
        "empty-bearer",
        "basic-scheme",
        "wrong-scheme-valid-token",
        "valid-token-with-suffix",
        "truncated-signature",
    ],
)
def test_malformed_token_is_unauthorized(
    live_server: LiveServer, anonymous: httpx.Client, authorization: str
) -> None:
    admin_token = live_server.admin_token
    header = authorization.format(admin=admin_token, admin_truncated=admin_token[:-6])
    r = anonymous.get("/v1/plugins", headers={"Authorization": header})
    assert_error(r, 401, "UNAUTHORIZED")


def test_token_signed_with_another_secret_is_unauthorized(
    live_server: LiveServer, anonymous: httpx.Client
) -> None:
    env = dict(live_server.env, MLX_JWT_SECRET="an-entirely-different-signing-secret-0123456789")
    foreign = mlx_cli(
        "token", "create", "--subject", "mallory", "--scope", "plugins:admin", env=env
    ).stdout.strip()
    assert foreign and foreign.count(".") == 2
    with with_bearer(live_server, foreign) as c:
        assert_error(c.get("/v1/plugins"), 401, "UNAUTHORIZED")
        assert_error(c.post("/v1/plugins", json=plugin_body("foreign_probe")), 401, "UNAUTHORIZED")


def test_expired_token_is_unauthorized(live_server: LiveServer) -> None:
    # The claims `mlx token create` writes, with a lifetime that ended a minute ago: the same
    # check as waiting out a --ttl 1 token, without the wait.
    secret = (live_server.home / "jwt.secret").read_text().strip()
    now = int(time.time())
    claims = {"iss": "mlx-platform", "sub": "shortlived", "scopes": ["plugins:admin"]}
    token = jwt.encode({**claims, "iat": now - 120, "exp": now - 60}, secret, algorithm="HS256")
    with with_bearer(live_server, token) as c:
        err = assert_error(c.get("/v1/plugins"), 401, "UNAUTHORIZED")
    assert "expired" in str(err["message"]).lower()


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/plugins"), ("PATCH", f"/v1/plugins/{MISSING}/configuration")],
)
def test_request_without_token_is_unauthorized_even_with_a_non_json_body(
    anonymous: httpx.Client, method: str, path: str
) -> None:
    r = anonymous.request(
        method, path, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(r, 401, "UNAUTHORIZED")


def test_read_token_is_forbidden_to_register_even_with_a_non_json_body(
    reader: httpx.Client,
) -> None:
    r = reader.post(
        "/v1/plugins", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(r, 403, "FORBIDDEN")


# ---------------------------------------------------------------- 403: not allowed


def test_read_token_cannot_register(
    reader: httpx.Client, admin: httpx.Client, unique_name: str
) -> None:
    err = assert_error(reader.post("/v1/plugins", json=plugin_body(unique_name)), 403, "FORBIDDEN")
    assert "plugins:admin" in str(err["message"])
    assert admin.get(f"/v1/plugins/plugin_{unique_name}_001").status_code == 404


def test_read_token_cannot_activate(
    reader: httpx.Client, admin: httpx.Client, unique_name: str
) -> None:
    pid = register(admin, unique_name)
    err = assert_error(reader.post(f"/v1/plugins/{pid}/activate", json={}), 403, "FORBIDDEN")
    assert "plugins:write" in str(err["message"])
    assert status_of(admin, pid) == "registered"


def test_read_token_cannot_deactivate_patch_invoke_or_discover(
    reader: httpx.Client, admin: httpx.Client, unique_name: str
) -> None:
    pid = register(admin, unique_name)
    assert admin.post(f"/v1/plugins/{pid}/activate", json={}).status_code == 200
    try:
        assert_error(reader.post(f"/v1/plugins/{pid}/deactivate", json={}), 403, "FORBIDDEN")
        assert_error(
            reader.patch(f"/v1/plugins/{pid}/configuration", json={"configuration": {"a": 1}}),
            403,
            "FORBIDDEN",
        )
        assert_error(
            reader.post(
                f"/v1/plugins/{pid}/invoke", json={"operation": "echo", "arguments": {"value": 1}}
            ),
            403,
            "FORBIDDEN",
        )
        assert_error(reader.get("/v1/plugins/discover"), 403, "FORBIDDEN")
        assert_error(
            reader.post("/v1/plugins/validate-composition", json={"plugins": [{"name": "x"}]}),
            403,
            "FORBIDDEN",
        )
        assert status_of(admin, pid) == "active"
        detail = admin.get(f"/v1/plugins/{pid}").json()["data"]
        assert "a" not in (detail.get("configuration") or {})
    finally:
        admin.post(f"/v1/plugins/{pid}/deactivate", json={"force": True})


def test_write_token_cannot_register(
    writer: httpx.Client, admin: httpx.Client, unique_name: str
) -> None:
    err = assert_error(writer.post("/v1/plugins", json=plugin_body(unique_name)), 403, "FORBIDDEN")
    assert "plugins:admin" in str(err["message"])
    assert admin.get(f"/v1/plugins/plugin_{unique_name}_001").status_code == 404


def test_write_token_cannot_delete(
    writer: httpx.Client, admin: httpx.Client, unique_name: str
) -> None:
    pid = register(admin, unique_name)
    err = assert_error(writer.delete(f"/v1/plugins/{pid}"), 403, "FORBIDDEN")
    assert "plugins:admin" in str(err["message"])
    assert admin.get(f"/v1/plugins/{pid}").status_code == 200


def test_write_token_cannot_discover_with_auto_register(writer: httpx.Client) -> None:
    r = writer.get("/v1/plugins/discover", params={"auto_register": "true"})
    err = assert_error(r, 403, "FORBIDDEN")
    assert "plugins:admin" in str(err["message"])


def test_forbidden_answer_names_the_missing_scope_in_details(reader: httpx.Client) -> None:
    err = assert_error(
        reader.post("/v1/plugins", json=plugin_body("scope_probe")), 403, "FORBIDDEN"
    )
    assert "plugins:admin" in str(err["details"])


# ---------------------------------------------------------------- allowed


def test_read_token_can_get_list_detail_health_metrics_and_schema(
    reader: httpx.Client, admin: httpx.Client, unique_name: str
) -> None:
    pid = register(admin, unique_name)
    r = reader.get("/v1/plugins", params={"search": unique_name})
    assert r.status_code == 200, r.text
    assert [p["id"] for p in r.json()["data"]] == [pid]
    r = reader.get(f"/v1/plugins/{pid}")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["id"] == pid
    r = reader.get(f"/v1/plugins/{pid}/health")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["plugin_id"] == pid
    r = reader.get(f"/v1/plugins/{pid}/metrics")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["plugin_id"] == pid
    assert reader.get(f"/v1/plugins/{pid}/configuration-schema").status_code == 200


def test_write_token_can_activate_patch_invoke_and_deactivate(
    writer: httpx.Client, admin: httpx.Client, unique_name: str
) -> None:
    pid = register(admin, unique_name, configuration_schema={"size": {"type": "integer"}})
    r = writer.post(f"/v1/plugins/{pid}/activate", json={"configuration": {"size": 1}})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "active"
    assert status_of(admin, pid) == "active"

    r = writer.patch(f"/v1/plugins/{pid}/configuration", json={"configuration": {"size": 2}})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["updated_fields"] == ["size"]
    assert admin.get(f"/v1/plugins/{pid}").json()["data"]["configuration"]["size"] == 2

    r = writer.post(
        f"/v1/plugins/{pid}/invoke", json={"operation": "echo", "arguments": {"value": "hi"}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["result"] == "hi"

    r = writer.post(f"/v1/plugins/{pid}/deactivate", json={})
    assert r.status_code == 200, r.text
    assert status_of(admin, pid) == "inactive"


def test_write_token_can_validate_composition_and_discover(
    writer: httpx.Client, admin: httpx.Client, unique_name: str
) -> None:
    register(admin, unique_name)
    r = writer.post("/v1/plugins/validate-composition", json={"plugins": [{"name": unique_name}]})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["composition_valid"] is True

    r = writer.get("/v1/plugins/discover", params={"sources": "pypi"})
    assert r.status_code == 200, r.text
    summary = r.json()["data"]["discovery_summary"]
    assert summary["auto_registered"] == 0
    r = writer.get("/v1/plugins/discover", params={"sources": "pypi", "auto_register": "false"})
    assert r.status_code == 200, r.text


def test_admin_token_can_do_everything(
    admin: httpx.Client, live_server: LiveServer, unique_name: str
) -> None:
    r = admin.post("/v1/plugins", json=plugin_body(unique_name))
    assert r.status_code == 201, r.text
    pid = r.json()["data"]["id"]
    for method, path, body in [
        ("GET", "/v1/plugins", None),
        ("GET", f"/v1/plugins/{pid}", None),
        ("GET", f"/v1/plugins/{pid}/health", None),
        ("GET", f"/v1/plugins/{pid}/metrics", None),
        ("GET", f"/v1/plugins/{pid}/configuration-schema", None),
        ("POST", f"/v1/plugins/{pid}/activate", {}),
        ("PATCH", f"/v1/plugins/{pid}/configuration", {"configuration": {"extra": "x"}}),
        ("POST", f"/v1/plugins/{pid}/invoke", {"operation": "add", "arguments": {"a": 1, "b": 2}}),
        ("POST", f"/v1/plugins/{pid}/deactivate", {}),
        ("POST", "/v1/plugins/validate-composition", {"plugins": [{"name": unique_name}]}),
        ("GET", "/v1/plugins/discover", None),
        ("GET", "/v1/plugins/discover?auto_register=true", None),
        ("DELETE", f"/v1/plugins/{pid}", None),
    ]:
        r = call(admin, method, path, body)
        assert r.status_code == 200, (method, path, r.text)
        if not path.endswith("/configuration-schema"):  # plain JSON Schema, not enveloped
            assert r.json()["success"] is True
    assert admin.get(f"/v1/plugins/{pid}").status_code == 404


def test_healthz_needs_no_token(anonymous: httpx.Client) -> None:
    r = anonymous.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_healthz_ignores_a_bad_token(live_server: LiveServer) -> None:
    r = live_server.anonymous.get("/healthz", headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 200


# ---------------------------------------------------------------- request ids


ERROR_CASES = {
    "401-no-token": (None, "GET", "/v1/plugins", None, {}, 401, "UNAUTHORIZED"),
    "401-bad-token": ("bad", "GET", "/v1/plugins", None, {}, 401, "UNAUTHORIZED"),
    "403-read-register": ("read", "POST", "/v1/plugins", plugin_body("rid"), {}, 403, "FORBIDDEN"),
    "404-plugin": ("admin", "GET", f"/v1/plugins/{MISSING}", None, {}, 404, "PLUGIN_NOT_FOUND"),
    "404-route": ("admin", "GET", "/v1/no-such-route", None, {}, 404, "NOT_FOUND"),
    "409-deactivate": (
        "admin",
        "POST",
        "/v1/plugins/{pid}/deactivate",
        {},
        {},
        409,
        "INVALID_STATE",
    ),
    "422-query": ("admin", "GET", "/v1/plugins", None, {"limit": "0"}, 422, "VALIDATION_ERROR"),
    "422-body": ("admin", "POST", "/v1/plugins", {"name": "x"}, {}, 422, "VALIDATION_ERROR"),
    "422-metrics-time": (
        "admin",
        "GET",
        "/v1/plugins/{pid}/metrics",
        None,
        {"start_time": "yesterday"},
        422,
        "VALIDATION_ERROR",
    ),
}


@pytest.fixture(scope="module")
def idle_plugin(admin: httpx.Client) -> str:
    return register(admin, "request_id_idle_plugin")


def client_for(kind: str | None, live_server: LiveServer) -> httpx.Client:
    if kind is None:
        return live_server.client(token="")
    if kind == "bad":
        return with_bearer(live_server, "not-a-jwt")
    if kind == "read":
        return live_server.client(scopes=("plugins:read",))
    return live_server.client()


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_error_request_id_equals_the_x_request_id_header(
    live_server: LiveServer, idle_plugin: str, case: str
) -> None:
    kind, method, path, body, params, status, code = ERROR_CASES[case]
    with client_for(kind, live_server) as c:
        r = call(c, method, path.format(pid=idle_plugin), body, params=params)
    err = assert_error(r, status, code)  # asserts request_id == X-Request-ID
    assert err["request_id"]


def test_error_request_id_equals_header_for_non_json_body(admin: httpx.Client) -> None:
    r = admin.post("/v1/plugins", content=b"{oops", headers={"Content-Type": "application/json"})
    assert_error(r, 422, "VALIDATION_ERROR")


def test_each_request_gets_its_own_request_id(anonymous: httpx.Client) -> None:
    ids = {anonymous.get("/v1/plugins").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_incoming_request_id_is_echoed_on_success(admin: httpx.Client) -> None:
    r = admin.get("/v1/plugins", headers={"X-Request-ID": "client-trace-42.a:b_c"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "client-trace-42.a:b_c"


def test_incoming_request_id_is_echoed_on_error(anonymous: httpx.Client) -> None:
    r = anonymous.get("/v1/plugins", headers={"X-Request-ID": "trace-from-client-7"})
    err = assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["x-request-id"] == "trace-from-client-7"
    assert err["request_id"] == "trace-from-client-7"


def test_incoming_request_id_is_echoed_on_healthz(anonymous: httpx.Client) -> None:
    r = anonymous.get("/healthz", headers={"X-Request-ID": "probe-1"})
    assert r.headers["x-request-id"] == "probe-1"


def test_invalid_incoming_request_id_is_replaced(anonymous: httpx.Client) -> None:
    bad = "not valid <script>alert(1)</script>"
    r = anonymous.get("/v1/plugins", headers={"X-Request-ID": bad})
    err = assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["x-request-id"] != bad
    assert err["request_id"] == r.headers["x-request-id"]


# ---------------------------------------------------------------- mlx token create


def test_token_create_with_unknown_scope_exits_2_with_message_on_stderr(
    live_server: LiveServer,
) -> None:
    r = mlx_cli(
        "token",
        "create",
        "--subject",
        "s",
        "--scope",
        "plugins:root",
        env=live_server.env,
        check=False,
    )
    assert r.returncode == 2
    assert r.stdout == ""
    assert "plugins:root" in r.stderr


def test_token_create_with_one_unknown_scope_among_known_ones_exits_2(
    live_server: LiveServer,
) -> None:
    r = mlx_cli(
        "token",
        "create",
        "--subject",
        "s",
        "--scope",
        "plugins:read",
        "--scope",
        "everything",
        env=live_server.env,
        check=False,
    )
    assert r.returncode == 2
    assert r.stdout == ""
    assert "everything" in r.stderr


def test_token_create_prints_only_a_token_that_the_server_accepts(
    live_server: LiveServer,
) -> None:
    r = mlx_cli(
        "token",
        "create",
        "--subject",
        "cli-user",
        "--scope",
        "plugins:read",
        env=live_server.env,
    )
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert len(lines) == 1
    with with_bearer(live_server, lines[0].strip()) as c:
        assert c.get("/v1/plugins").status_code == 200
