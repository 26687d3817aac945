"""GET /v1/plugins writes its page with orjson from plain dicts (issue 13): the bytes are
exactly what FastAPI wrote from `PageEnvelope[PluginSummary]` (its response_model), and every
item is a PluginSummary in strict mode."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, TypeAdapter

from mlx_platform.wire import PageEnvelope, PluginSummary
from tests.conftest import LiveServer, invoke, poll, register

PAGE = TypeAdapter(PageEnvelope[PluginSummary])
CRASH_ON_START = "mlx_test_plugins.CrashOnStartPlugin"
NO_CACHE = {"Cache-Control": "no-cache"}


def page_bytes(client: httpx.Client, **params: Any) -> bytes:
    r = client.get("/v1/plugins", params={"limit": 100, **params}, headers=NO_CACHE)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.content


def assert_fields_only(value: dict[str, Any], model: type[BaseModel]) -> None:
    """The item holds the model's fields, all of them and nothing else, nested ones too."""
    assert list(value) == list(model.model_fields), (list(value), list(model.model_fields))
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            assert_fields_only(value[name], field.annotation)


def assert_as_the_model_writes(body: bytes) -> dict[str, Any]:
    """The page's bytes equal the response model's JSON of the same data (read back from
    these bytes), and each item is a PluginSummary in strict mode; the page, decoded."""
    again = PAGE.dump_json(PAGE.validate_json(body), by_alias=True)
    assert body == again, f"\nserved: {body.decode()}\nmodel:  {again.decode()}"
    page: dict[str, Any] = json.loads(body)
    for item in page["data"]:
        PluginSummary.model_validate_json(json.dumps(item), strict=True)
        assert_fields_only(item, PluginSummary)
    return page


def test_a_list_page_is_byte_for_byte_what_the_response_model_writes(
    server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    srv = server_factory(seed_builtin_plugins="false", isolation="process")
    with srv.client() as c:
        plain = register(c, "bytes-plain")  # no category, empty schema and metadata
        rich = register(
            c,
            "bytes-rich",
            category="données",
            description='Lit des données: 日本語, emoji 😀, quotes " and \\ backslash',
            configuration_schema={
                "password": {"type": "string", "secret": True, "required": True},
                "pool_size": {"type": "integer", "default": 5},
                "token": {"type": "string", "secret": True, "default": "s3cr3t"},
            },
            metadata={
                "capabilities": ["lecture", "écriture"],
                "integration_points": ["model_registry"],
                "min_memory_mb": 1536,
                "min_cpu_cores": 0.25,
                "gpu_required": True,
            },
        )
        whole_cores = register(
            c, "bytes-cores", type="feature_store", metadata={"min_cpu_cores": 2}
        )
        checked = register(c, "bytes-checked", category="cloud")
        r = c.post(f"/v1/plugins/{checked}/activate", json={})
        assert r.status_code == 200, r.text
        health = c.get(f"/v1/plugins/{checked}/health")
        assert health.status_code == 200, health.text

        # An active plugin that no replica runs: its worker ends and every restart fails.
        marker = tmp_path / "crash-on-start"
        down = register(c, "bytes-down", class_path=CRASH_ON_START)
        r = c.post(
            f"/v1/plugins/{down}/activate",
            json={"configuration": {"crash_marker": str(marker)}},
        )
        assert r.status_code == 200, r.text
        marker.write_text("every start fails while this file exists")
        assert invoke(c, down, "exit_now", code=9).status_code == 424

        def items() -> dict[str, dict[str, Any]]:
            page = assert_as_the_model_writes(page_bytes(c))
            return {p["id"]: p for p in page["data"]}

        shown = poll(items, lambda found: found[down]["status"] == "error", what="error shown")

        # What the items say (the bytes were checked above, on every poll)
        assert set(shown) == {plain, rich, whole_cores, checked, down}
        assert shown[plain]["category"] is None
        assert shown[plain]["health"] == {
            "status": "unknown",
            "last_check": None,
            "response_time_ms": None,
            "message": None,
        }
        assert shown[rich]["category"] == "données"
        assert "日本語" in shown[rich]["description"]
        assert shown[rich]["capabilities"] == ["lecture", "écriture"]
        assert shown[rich]["integration_points"] == ["model_registry"]
        assert shown[rich]["configuration"] == {
            "required_fields": ["password"],
            "optional_fields": ["pool_size", "token"],
        }
        assert shown[rich]["resource_requirements"] == {
            "min_memory_mb": 1536,
            "min_cpu_cores": 0.25,
            "gpu_required": True,
        }
        assert b'"min_cpu_cores":2.0' in page_bytes(c, type="feature_store")
        assert "s3cr3t" not in page_bytes(c).decode()
        assert shown[checked]["health"]["status"] == health.json()["data"]["status"]
        assert isinstance(shown[checked]["health"]["response_time_ms"], float)
        assert shown[checked]["health"]["last_check"].endswith("Z")
        assert shown[down]["health"]["status"] == "unhealthy"
        detail = c.get(f"/v1/plugins/{down}").json()["data"]
        assert detail["status"] == "error"
        assert shown[down]["health"]["message"]
        for pid, item in shown.items():
            one = c.get(f"/v1/plugins/{pid}").json()["data"]
            for key in ("name", "type", "version", "description", "category", "created_at"):
                assert item[key] == one[key], (pid, key)

        # A page of a filter and a later page are written the same way
        assert_as_the_model_writes(page_bytes(c, type="feature_store"))
        second = assert_as_the_model_writes(page_bytes(c, limit=2, page=2, sort="-name"))
        assert second["pagination"] == {
            "page": 2,
            "limit": 2,
            "total": 5,
            "has_next": True,
            "total_is_estimate": False,
        }
        marker.unlink()
