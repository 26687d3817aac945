"""Secret configuration values never leave the service: not in answers, logs or the database."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, assert_error, register

MASK = "********"


def secret_schema(**extra: Any) -> dict[str, Any]:
    return {
        "password": {"type": "string", "required": True, "secret": True},
        "pool_size": {"type": "integer", "minimum": 1, "maximum": 50},
        **extra,
    }


def db_bytes(server: LiveServer) -> bytes:
    """Everything the service's database holds: on SQLite every byte of the main file and
    its write-ahead log; on PostgreSQL the text of every row of every table."""
    url = server.env.get("MLX_DATABASE_URL")
    if url:
        assert url.startswith("postgresql+psycopg://"), url
        return postgres_rows_text(url.replace("postgresql+psycopg://", "postgresql://", 1))
    data = b""
    for suffix in ("", "-wal", "-journal"):
        path = Path(f"{server.home / 'mlx.db'}{suffix}")
        if path.exists():
            data += path.read_bytes()
    assert data, "no database file under MLX_HOME"
    return data


def postgres_rows_text(dsn: str) -> bytes:
    import psycopg
    from psycopg import sql

    lines: list[str] = []
    with psycopg.connect(dsn) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        ]
        assert "plugins" in tables, tables
        for table in tables:
            query = sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier(table))
            lines += [row for (row,) in conn.execute(query)]
    data = "\n".join(lines).encode()
    assert data, "no rows in the service's PostgreSQL database"
    return data


class Recorder:
    """Sends requests and keeps every answer (status and body) by label, to search them later."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.answers: dict[str, httpx.Response] = {}

    def __call__(self, label: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        assert label not in self.answers
        r = self.client.request(method, url, **kwargs)
        self.answers[label] = r
        return r


@pytest.fixture(scope="module")
def secret_plugin(live_server: LiveServer, admin: httpx.Client) -> dict[str, Any]:
    """A plugin activated with a distinctive password, and every answer the service gave
    while it was exercised through every endpoint."""
    password = f"Zebra-{uuid.uuid4().hex}-Quokka"
    name = f"secretive_{uuid.uuid4().hex[:8]}"
    hit = Recorder(admin)
    r = hit(
        "register",
        "POST",
        "/v1/plugins",
        json={
            "name": name,
            "type": "data_source",
            "version": "1.0.0",
            "description": "holds a password",
            "class_path": "mlx_test_plugins.PasswordCheckPlugin",
            "configuration_schema": secret_schema(),
            "metadata": {"integration_points": ["secret_tests"]},
        },
    )
    assert r.status_code == 201, r.text
    pid = r.json()["data"]["id"]
    base = f"/v1/plugins/{pid}"

    r = hit("activate", "POST", f"{base}/activate", json={"configuration": {"password": password}})
    assert r.status_code == 200, r.text

    hit("list", "GET", "/v1/plugins", params={"limit": 100})
    hit("list_search", "GET", "/v1/plugins", params={"search": name})
    hit("list_active", "GET", "/v1/plugins", params={"status": "active", "limit": 100})
    hit("get", "GET", base)
    hit("health", "GET", f"{base}/health")
    hit("config_schema", "GET", f"{base}/configuration-schema")
    hit(
        "invoke_echo",
        "POST",
        f"{base}/invoke",
        json={"operation": "echo", "arguments": {"value": 1}},
    )
    hit("invoke_config", "POST", f"{base}/invoke", json={"operation": "config_values"})
    hit("invoke_leak", "POST", f"{base}/invoke", json={"operation": "leak_secret"})
    hit("invoke_unknown", "POST", f"{base}/invoke", json={"operation": "nope"})
    hit("invoke_bad_args", "POST", f"{base}/invoke", json={"operation": "add", "arguments": {}})
    hit("metrics", "GET", f"{base}/metrics", params={"granularity": "minute"})
    hit("patch", "PATCH", f"{base}/configuration", json={"configuration": {"pool_size": 3}})
    hit(
        "patch_same_secret",
        "PATCH",
        f"{base}/configuration",
        json={"configuration": {"password": password, "pool_size": 4}},
    )
    hit(
        "patch_invalid",
        "PATCH",
        f"{base}/configuration",
        json={"configuration": {"password": password, "pool_size": 500}},
    )
    hit(
        "patch_dry_run",
        "PATCH",
        f"{base}/configuration",
        params={"dry_run": "true"},
        json={"configuration": {"pool_size": 6}},
    )
    hit(
        "activate_again", "POST", f"{base}/activate", json={"configuration": {"password": password}}
    )
    hit(
        "composition",
        "POST",
        "/v1/plugins/validate-composition",
        json={"plugins": [{"name": name}, {"name": "local_tracker"}]},
    )
    hit("discover", "GET", "/v1/plugins/discover")
    hit("get_after", "GET", base)
    hit("deactivate", "POST", f"{base}/deactivate", json={"force": False})
    hit("health_inactive", "GET", f"{base}/health")
    hit("get_inactive", "GET", base)
    hit("deactivate_again", "POST", f"{base}/deactivate", json={})
    hit("invoke_inactive", "POST", f"{base}/invoke", json={"operation": "config_values"})
    return {
        "password": password,
        "name": name,
        "id": pid,
        "answers": hit.answers,
    }


def test_the_endpoints_were_exercised_as_intended(secret_plugin) -> None:
    """Guards the fixture: each call reached the code it was meant to reach."""
    statuses = {label: r.status_code for label, r in secret_plugin["answers"].items()}
    assert statuses == {
        "register": 201,
        "activate": 200,
        "list": 200,
        "list_search": 200,
        "list_active": 200,
        "get": 200,
        "health": 200,
        "config_schema": 200,
        "invoke_echo": 200,
        "invoke_config": 200,
        "invoke_leak": 424,
        "invoke_unknown": 404,
        "invoke_bad_args": 422,
        "metrics": 200,
        "patch": 200,
        "patch_same_secret": 200,
        "patch_invalid": 422,
        "patch_dry_run": 200,
        "activate_again": 409,
        "composition": 200,
        "discover": 200,
        "get_after": 200,
        "deactivate": 200,
        "health_inactive": 200,
        "get_inactive": 200,
        "deactivate_again": 409,
        "invoke_inactive": 409,
    }


def test_no_answer_body_contains_the_secret(secret_plugin) -> None:
    password = secret_plugin["password"]
    leaking = [label for label, r in secret_plugin["answers"].items() if password in r.text]
    assert leaking == []


def test_no_answer_header_contains_the_secret(secret_plugin) -> None:
    password = secret_plugin["password"]
    leaking = [label for label, r in secret_plugin["answers"].items() if password in str(r.headers)]
    assert leaking == []


def test_a_plugin_error_quoting_the_secret_shows_the_mask_instead(secret_plugin) -> None:
    leak = secret_plugin["answers"]["invoke_leak"]
    err = assert_error(leak, 424, "PLUGIN_EXECUTION_ERROR")
    assert "could not connect with password" in err["message"]
    assert MASK in err["message"]
    assert secret_plugin["password"] not in leak.text


def test_an_operation_returning_its_configuration_shows_the_secret_masked(secret_plugin) -> None:
    answer = secret_plugin["answers"]["invoke_config"]
    assert answer.json()["data"]["result"]["password"] == MASK


def test_get_shows_the_secret_as_the_mask(admin, secret_plugin) -> None:
    data = admin.get(f"/v1/plugins/{secret_plugin['id']}").json()["data"]
    assert data["configuration"]["password"] == MASK
    assert data["configuration"]["pool_size"] == 4


def test_the_secret_is_still_the_plugins_password(admin, secret_plugin) -> None:
    """The masked answers hide the value without losing it."""
    pid = secret_plugin["id"]
    r = admin.post(f"/v1/plugins/{pid}/activate")
    assert r.status_code == 200, r.text
    try:
        check = admin.post(
            f"/v1/plugins/{pid}/invoke",
            json={"operation": "password_is", "arguments": {"expected": secret_plugin["password"]}},
        )
        assert check.status_code == 200, check.text
        assert check.json()["data"]["result"] is True
    finally:
        admin.post(f"/v1/plugins/{pid}/deactivate", json={})


def test_the_secret_is_in_no_log_line(live_server: LiveServer, secret_plugin) -> None:
    log = live_server.log_text()
    assert secret_plugin["id"] in log  # the log does record what happened to the plugin
    assert secret_plugin["password"] not in log


def test_the_database_never_holds_the_secret_in_clear(
    live_server: LiveServer, secret_plugin
) -> None:
    data = db_bytes(live_server)
    assert secret_plugin["name"].encode() in data  # the plugin is in there
    assert secret_plugin["password"].encode() not in data


def test_a_secret_default_is_masked_in_the_plugin_detail(admin, unique_name) -> None:
    default = f"Default-{uuid.uuid4().hex}-Secret"
    pid = register(
        admin,
        unique_name,
        configuration_schema={
            "token": {"type": "string", "secret": True, "default": default},
            "region": {"type": "string", "default": "eu-west-1"},
        },
    )

    r = admin.get(f"/v1/plugins/{pid}")

    assert r.status_code == 200, r.text
    schema = r.json()["data"]["configuration_schema"]
    assert schema["token"]["default"] == MASK
    assert schema["token"]["secret"] is True
    assert schema["region"]["default"] == "eu-west-1"
    assert default not in r.text


def test_a_secret_default_is_masked_everywhere_it_is_shown(
    live_server: LiveServer, admin, unique_name
) -> None:
    default = f"Default-{uuid.uuid4().hex}-Secret"
    pid = register(
        admin,
        unique_name,
        class_path="mlx_test_plugins.PasswordCheckPlugin",
        configuration_schema={"password": {"type": "string", "secret": True, "default": default}},
    )
    base = f"/v1/plugins/{pid}"
    answers = {
        "get": admin.get(base),
        "configuration-schema": admin.get(f"{base}/configuration-schema"),
        "list": admin.get("/v1/plugins", params={"search": unique_name}),
        "activate": admin.post(f"{base}/activate"),
        "invoke config_values": admin.post(f"{base}/invoke", json={"operation": "config_values"}),
        "invoke leak_secret": admin.post(f"{base}/invoke", json={"operation": "leak_secret"}),
        "get when active": admin.get(base),
        "health": admin.get(f"{base}/health"),
        "deactivate": admin.post(f"{base}/deactivate", json={}),
    }
    statuses = [a.status_code for a in answers.values()]
    assert statuses == [200, 200, 200, 200, 200, 424, 200, 200, 200]

    leaking_answers = [label for label, a in answers.items() if default in a.text]
    in_log = default in live_server.log_text()
    assert (leaking_answers, in_log) == ([], False)


def test_a_plugin_receives_its_secret_default(admin, unique_name) -> None:
    default = f"Default-{uuid.uuid4().hex}-Secret"
    pid = register(
        admin,
        unique_name,
        class_path="mlx_test_plugins.PasswordCheckPlugin",
        configuration_schema={"password": {"type": "string", "secret": True, "default": default}},
    )
    assert admin.post(f"/v1/plugins/{pid}/activate").status_code == 200

    check = admin.post(
        f"/v1/plugins/{pid}/invoke",
        json={"operation": "password_is", "arguments": {"expected": default}},
    )

    assert check.status_code == 200, check.text
    assert check.json()["data"]["result"] is True
    assert admin.get(f"/v1/plugins/{pid}").json()["data"]["configuration"] == {}


def test_a_secret_default_is_not_stored_in_clear(
    live_server: LiveServer, admin, unique_name
) -> None:
    default = f"Default-{uuid.uuid4().hex}-Secret"
    register(
        admin,
        unique_name,
        configuration_schema={"password": {"type": "string", "secret": True, "default": default}},
    )

    data = db_bytes(live_server)

    assert unique_name.encode() in data
    assert default.encode() not in data


def test_configuration_schema_marks_secret_fields_write_only(admin, secret_plugin) -> None:
    r = admin.get(f"/v1/plugins/{secret_plugin['id']}/configuration-schema")
    assert r.status_code == 200, r.text
    props = r.json()["properties"]
    assert props["password"]["writeOnly"] is True
    assert "writeOnly" not in props["pool_size"]


def test_the_secret_is_masked_in_an_invalid_configuration_error(admin, unique_name) -> None:
    password = f"Pattern-{uuid.uuid4().hex}"
    pid = register(
        admin,
        unique_name,
        configuration_schema={
            "password": {"type": "string", "secret": True, "pattern": "^[0-9]+$"},
        },
    )

    r = admin.post(f"/v1/plugins/{pid}/activate", json={"configuration": {"password": password}})

    err = assert_error(r, 422, "INVALID_CONFIGURATION")
    assert list(err["details"]) == ["password"]
    assert password not in r.text
