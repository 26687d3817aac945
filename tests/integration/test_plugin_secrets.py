"""What a careless plugin writes never shows its secret, and is never stored in clear (issue 11).

The plugins of tests/fixtures/plugin_pkgs/mlx_leaky_plugins.py quote their `api_key` (a
configuration field marked secret) in their health message, in exceptions and in results.
Against a real service (in this process) and real worker processes: every answer that can
carry what the plugin wrote (activate, get, list, search, health, invoke, audit) shows the
mask instead, to a read token as to an admin; the SQLite database file (with its write-ahead
log) holds the secret nowhere, while it does hold the masked messages (so the search is not
vacuous); after a service restart too (as `mlx serve`: a new process, whose secret redactor
has seen nothing until it decrypts the stored configuration). And a second replica on PostgreSQL, which never saw
the activation request (it decrypts the stored configuration), masks it as well.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, assert_error, poll, start_server
from tests.integration.test_replicas import create_database, drop_database, shared_secrets
from tests.integration.test_secrets import db_bytes, postgres_rows_text

MASK = "********"
SCHEMA = {"api_key": {"type": "string", "required": True, "secret": True}}
FAST = {"MLX_HEALTH_INTERVAL": "0.3", "MLX_RECONCILE_INTERVAL": "0.2"}


def new_key() -> str:
    return f"Kestrel-{uuid.uuid4().hex}-Narwhal"


def register_leaky(client: httpx.Client, cls: str) -> str:
    r = client.post(
        "/v1/plugins",
        json={
            "name": f"leaky_{cls.lower()}_{uuid.uuid4().hex[:8]}",
            "type": "data_source",
            "version": "1.0.0",
            "description": "quotes its own secret",
            "class_path": f"mlx_leaky_plugins.{cls}",
            "configuration_schema": SCHEMA,
            "metadata": {},
        },
    )
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


def wait_for(fetch: Callable[[], Any], done: Callable[[Any], bool], what: str) -> Any:
    return poll(fetch, done, timeout=20, interval=0.1, what=what)


def assert_clean(label: str, text: str | bytes, key: str) -> None:
    needle: str | bytes = key.encode() if isinstance(text, bytes) else key
    assert needle not in text, f"{label} shows the secret: {text[:2000]!r}"
    # not even part of it (a plugin quoting a prefix would still leak most of it)
    middle = key.split("-")[1]
    assert (middle.encode() if isinstance(text, bytes) else middle) not in text, label


def test_what_a_plugin_writes_never_shows_or_stores_its_secret(server_factory) -> None:
    fast = {k.removeprefix("MLX_").lower(): v for k, v in FAST.items()}
    srv: LiveServer = server_factory(isolation="", **fast)  # plugins in worker processes
    key = new_key()
    answers: dict[str, httpx.Response] = {}
    with (
        srv.client() as admin,
        srv.client(scopes=("plugins:read",)) as reader,
        srv.client(scopes=("plugins:write",)) as writer,
    ):
        healthy = register_leaky(admin, "LeakyPlugin")
        unhealthy = register_leaky(admin, "LeakyUnhealthyPlugin")
        failing = register_leaky(admin, "LeakyStartPlugin")
        cfg = {"configuration": {"api_key": key}}

        answers["activate"] = r = admin.post(f"/v1/plugins/{healthy}/activate", json=cfg)
        assert r.status_code == 200, r.text
        assert MASK in r.json()["data"]["health_check"]["message"], r.text
        answers["activate_unhealthy"] = r = admin.post(
            f"/v1/plugins/{unhealthy}/activate", json=cfg
        )
        assert_error(r, 424, "PLUGIN_HEALTH_CHECK_FAILED")
        assert MASK in r.json()["error"]["message"], r.text
        answers["activate_failing"] = r = admin.post(f"/v1/plugins/{failing}/activate", json=cfg)
        assert_error(r, 424, "PLUGIN_HEALTH_CHECK_FAILED")

        # a background health round has stored the healthy plugin's message (masked)
        wait_for(
            lambda: reader.get(f"/v1/plugins/{healthy}").json()["data"]["health"],
            lambda h: h["message"] and MASK in h["message"] and h["last_check"],
            "the health round's message",
        )
        for label, url, params in (
            ("get", f"/v1/plugins/{healthy}", None),
            ("get_unhealthy", f"/v1/plugins/{unhealthy}", None),
            ("get_failing", f"/v1/plugins/{failing}", None),
            ("list", "/v1/plugins", {"limit": 100}),
            ("search", "/v1/plugins", {"search": "leaky"}),
            ("list_error", "/v1/plugins", {"status": "error", "limit": 100}),
            ("health", f"/v1/plugins/{healthy}/health", None),
            ("health_unhealthy", f"/v1/plugins/{unhealthy}/health", None),
            ("metrics", f"/v1/plugins/{healthy}/metrics", None),
        ):
            answers[label] = r = reader.get(url, params=params)
            assert r.status_code == 200, (label, r.text)
        health = answers["health"].json()["data"]
        assert MASK in health["checks"]["connectivity"]["message"], health
        assert all(MASK in (v["message"] or "") for v in health["replicas"]), health
        # the rolled back activations keep the plugin's reason, masked
        for label in ("get_unhealthy", "get_failing"):
            data = answers[label].json()["data"]
            assert MASK in data["status_reason"], data
        assert MASK in answers["get_unhealthy"].json()["data"]["health"]["message"]

        for op, status in (
            ("raise_with_key", 424),
            ("plugin_error_with_key", 424),
            ("result_with_key", 200),
        ):
            answers[op] = r = writer.post(
                f"/v1/plugins/{healthy}/invoke", json={"operation": op, "arguments": {}}
            )
            assert r.status_code == status, (op, r.text)
        result = answers["result_with_key"].json()["data"]["result"]
        assert result["key"] == MASK and result[MASK] == "the key as a dictionary key", result
        assert result["nested"][0]["deep"][1]["deeper"] == f"x{MASK}x", result
        assert MASK in answers["raise_with_key"].json()["error"]["message"]
        answers["audit"] = r = admin.get("/v1/audit", params={"limit": 100})
        assert r.status_code == 200, r.text

        for label, resp in answers.items():
            assert_clean(label, resp.text, key)
            assert_clean(f"{label} headers", str(resp.headers), key)

        stored = db_bytes(srv)
        assert_clean("the database file", stored, key)
        assert f"with key {MASK}".encode() in stored  # the messages are there, masked

    # after a restart the service decrypts the stored configuration and masks as before
    srv.stop()
    assert_clean("the database file after stop", db_bytes(srv), key)
    again = start_server(srv.home, **FAST)
    try:
        with again.client(scopes=("plugins:read",)) as reader:
            r = reader.get(f"/v1/plugins/{healthy}/health")
            assert r.status_code == 200, r.text
            assert MASK in r.json()["data"]["checks"]["connectivity"]["message"], r.text
            assert_clean("health after restart", r.text, key)
            wait_for(
                lambda: reader.get(f"/v1/plugins/{healthy}").json()["data"]["health"],
                lambda h: h["message"] and MASK in h["message"],
                "a health round after the restart",
            )
        assert_clean("the database file after the restart", db_bytes(again), key)
        assert_clean("the service log", again.log_text() + srv.log_text(), key)
    finally:
        again.stop()


@pytest.mark.process  # two `mlx serve` replicas on PostgreSQL
def test_a_replica_that_never_saw_the_activation_masks_the_secret_too(tmp_path) -> None:
    """Two replicas on one PostgreSQL database: activated through the first, the plugin runs
    on the second, whose health answer and stored observed state show the mask."""
    url = create_database()
    env = {"MLX_DATABASE_URL": url, **shared_secrets(), **FAST}
    servers: list[LiveServer] = []
    try:
        servers = [start_server(tmp_path / f"r{i}", **env) for i in range(2)]
        first, second = servers
        key = new_key()
        with first.client() as admin, second.client(scopes=("plugins:read",)) as reader:
            pid = register_leaky(admin, "LeakyPlugin")
            r = admin.post(f"/v1/plugins/{pid}/activate", json={"configuration": {"api_key": key}})
            assert r.status_code == 200, r.text
            node = reader.get("/healthz").headers["x-mlx-node"]

            def mine() -> dict[str, Any]:
                resp = reader.get(f"/v1/plugins/{pid}/health")
                assert resp.status_code == 200, resp.text
                assert_clean("the second replica's health", resp.text, key)
                return dict(resp.json()["data"])

            data = wait_for(
                mine,
                lambda d: d["node_id"] == node and d["status"] == "healthy",
                "the plugin running on the second replica",
            )
            assert MASK in data["checks"]["connectivity"]["message"], data
            r = reader.get(f"/v1/plugins/{pid}")
            assert_clean("the second replica's detail", r.text, key)
        rows = postgres_rows_text(url.replace("postgresql+psycopg://", "postgresql://", 1))
        assert_clean("the PostgreSQL rows", rows, key)
        assert f"with key {MASK}".encode() in rows
    finally:
        for s in servers:
            s.stop()
        drop_database(url)
