"""The spec's two SDK examples, run as written (token and plugin id substituted) against a
live server, each in a fresh interpreter the way a user runs a script."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import LiveServer, clean_env, register

# Copied verbatim from the "SDK Examples" section of spec/plugin-management-api.md.
SYNC_EXAMPLE = """\
from mlx_platform import MLXClient

client = MLXClient(api_token="your_token")

# List plugins
plugins = client.plugins.list(type="data_source", status="active")

# Get plugin details
plugin = client.plugins.get("plugin_snowflake_001")

# Register new plugin
new_plugin = client.plugins.register({
    "name": "custom_source",
    "type": "data_source",
    "version": "1.0.0",
    "class_path": "my_package.CustomPlugin"
})

# Activate plugin
client.plugins.activate(new_plugin.id, {
    "configuration": {"connection_string": "..."}
})

# Health check
health = client.plugins.health_check(new_plugin.id)
print(f"Plugin health: {health.status}")
"""

ASYNC_EXAMPLE = """\
import asyncio
from mlx_platform.async_client import AsyncMLXClient

async def manage_plugins():
    async with AsyncMLXClient(api_token="your_token") as client:
        # Parallel plugin operations
        plugins, health = await asyncio.gather(
            client.plugins.list(),
            client.plugins.health_check("plugin_snowflake_001")
        )

        return plugins, health

plugins, health = asyncio.run(manage_plugins())
"""

# The spec's id; the test server has the example plugins instead.
SPEC_PLUGIN_ID = "plugin_snowflake_001"
SEEDED_PLUGIN_ID = "plugin_sqlite_source_001"


def run_example(
    process_live_server: LiveServer, example: str, report: str
) -> tuple[list[str], dict[str, object]]:
    """Run `example` with the token and id substituted, then `report` (which prints one JSON
    line); the base URL comes from MLX_API_URL, as the example gives none."""
    token = process_live_server.token("plugins:admin")
    assert example.count('"your_token"') == 1 and example.count(SPEC_PLUGIN_ID) == 1
    script = (
        example.replace('"your_token"', json.dumps(token)).replace(SPEC_PLUGIN_ID, SEEDED_PLUGIN_ID)
        + "\n# Added by the test: what the example produced.\nimport json as _json\n"
        + report
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=clean_env(MLX_API_URL=process_live_server.url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    return lines[:-1], json.loads(lines[-1])


@pytest.fixture(scope="module")
def active_data_source(process_live_server: LiveServer) -> str:
    """An active data source, so that the example's filtered listing has something to show."""
    with process_live_server.client() as admin:
        plugin_id = register(admin, "examples_echo_source")
        r = admin.post(f"/v1/plugins/{plugin_id}/activate", json={})
        assert r.status_code == 200, r.text
    return plugin_id


def test_sync_example_registers_activates_and_checks_health(
    process_live_server: LiveServer, active_data_source: str
) -> None:
    printed, produced = run_example(
        process_live_server,
        SYNC_EXAMPLE,
        "print(_json.dumps({\n"
        "    'listed': [[p.id, p.type, p.status] for p in plugins],\n"
        "    'plugin': [plugin.id, plugin.name],\n"
        "    'new_plugin': [new_plugin.id, new_plugin.status],\n"
        "    'now': client.plugins.get(new_plugin.id).status,\n"
        "    'health': [health.plugin_id, health.status],\n"
        "}))\n",
    )
    assert printed == ["Plugin health: healthy"]
    assert produced["listed"] == [[active_data_source, "data_source", "active"]]
    assert produced["plugin"] == [SEEDED_PLUGIN_ID, "sqlite_source"]
    new_id = produced["new_plugin"][0]  # type: ignore[index]
    assert produced["new_plugin"] == ["plugin_custom_source_001", "registered"]
    assert produced["now"] == "active"
    assert produced["health"] == [new_id, "healthy"]
    with process_live_server.client() as admin:
        stored = admin.get(f"/v1/plugins/{new_id}").json()["data"]
    assert stored["class_path"] == "my_package.CustomPlugin"
    assert stored["configuration"] == {"connection_string": "..."}


def test_async_example_lists_and_checks_health_together(
    process_live_server: LiveServer, active_data_source: str
) -> None:
    printed, produced = run_example(
        process_live_server,
        ASYNC_EXAMPLE,
        "print(_json.dumps({\n"
        "    'page': type(plugins).__name__,\n"
        "    'ids': [p.id for p in plugins.data],\n"
        "    'total': plugins.pagination.total,\n"
        "    'health': [health.plugin_id, health.status],\n"
        "}))\n",
    )
    assert printed == []
    assert produced["page"] == "AsyncPage"
    with process_live_server.client() as admin:
        listing = admin.get("/v1/plugins").json()
    assert produced["ids"] == [p["id"] for p in listing["data"]]
    assert produced["total"] == listing["pagination"]["total"]
    assert SEEDED_PLUGIN_ID in produced["ids"] and active_data_source in produced["ids"]  # type: ignore[operator]
    assert produced["health"] == [SEEDED_PLUGIN_ID, "inactive"]
