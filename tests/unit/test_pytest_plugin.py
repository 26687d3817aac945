"""The pytest plugin for plugin authors (entry point pytest11) is loaded by every pytest run
in an environment with mlx-platform, this suite's too: it must cost nothing there (fixtures
only, nothing autouse, nothing of mlx-platform imported until a fixture runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

HEAVY = ("httpx", "pydantic", "sqlalchemy", "fastapi", "jsonschema", "psutil", "mlx_platform.")
PLUGIN = "mlx_platform.testing.pytest_plugin"


def test_the_plugin_is_declared_to_pytest_and_loaded_here(pytestconfig: pytest.Config) -> None:
    declared = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert declared.get("mlx_platform") == PLUGIN
    assert pytestconfig.pluginmanager.has_plugin("mlx_platform")


def test_importing_the_plugin_imports_nothing_of_the_service() -> None:
    code = f"import {PLUGIN}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out.splitlines()[-1]))
    # the package's own __init__ imports its errors (the standard library only)
    heavy = {m for m in loaded if m.startswith(HEAVY)} - {
        "mlx_platform.errors",
        "mlx_platform.testing",
        PLUGIN,
    }
    assert not heavy, sorted(heavy)


def test_no_fixture_of_the_plugin_runs_unless_asked_for(request: pytest.FixtureRequest) -> None:
    # a test asking for nothing gets only the autouse fixtures: none of the plugin's
    assert not [name for name in request.fixturenames if name.startswith("mlx_")]
    plugin = request.config.pluginmanager.get_plugin("mlx_platform")
    offered = {name for name in vars(plugin) if name.startswith("mlx_")}
    assert {"mlx_hosted_plugin", "mlx_host_plugin", "mlx_service"} <= offered
