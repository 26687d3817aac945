"""POST /v1/plugins: registration, its checks, duplicates, dry runs and body validation."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from tests.conftest import assert_error, plugin_body, poll, process_gone, register

# The request body of the spec's "Register Plugin" example, verbatim.
SPEC_EXAMPLE_BODY: dict[str, Any] = {
    "name": "custom_data_source",
    "type": "data_source",
    "version": "1.0.0",
    "description": "Custom data source plugin",
    "class_path": "my_company.plugins.CustomDataSource",
    "configuration_schema": {
        "connection_string": {
            "type": "string",
            "required": True,
            "description": "Database connection string",
        }
    },
    "metadata": {
        "capabilities": ["sql_queries", "batch_processing"],
        "conflicts_with": [],
        "requires": [],
        "min_memory_mb": 512,
        "min_cpu_cores": 1,
    },
}

SPEC_NEXT_STEPS = [
    "Activate plugin to make it available for use",
    "Configure plugin with required parameters",
    "Test plugin functionality",
]

VALIDATION_KEYS = {"schema_valid", "class_loadable", "dependencies_available", "conflicts_detected"}


def post(client: httpx.Client, body: object, **params: str) -> httpx.Response:
    return client.post("/v1/plugins", json=body, params=params)


def registered(client: httpx.Client, body: object, **params: str) -> dict[str, Any]:
    r = post(client, body, **params)
    assert r.status_code == 201, r.text
    payload = r.json()
    assert payload["success"] is True
    return dict(payload["data"])


def total(client: httpx.Client, **params: str) -> int:
    r = client.get("/v1/plugins", params=params)
    assert r.status_code == 200, r.text
    return int(r.json()["pagination"]["total"])


def detail(client: httpx.Client, pid: str) -> dict[str, Any]:
    r = client.get(f"/v1/plugins/{pid}")
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def contains_step(steps: list[str], text: str) -> bool:
    return any(text.lower() in step.lower() for step in steps)


# ---------------------------------------------------------------- the spec's example


def test_register_spec_example_with_unimportable_class_is_recorded_as_error(
    admin: httpx.Client,
) -> None:
    data = registered(admin, copy.deepcopy(SPEC_EXAMPLE_BODY))
    assert data["id"] == "plugin_custom_data_source_001"
    assert data["name"] == "custom_data_source"
    assert data["version"] == "1.0.0"
    assert data["status"] == "error"
    results = data["validation_results"]
    assert VALIDATION_KEYS <= set(results)
    assert results["schema_valid"] is True
    assert results["class_loadable"] is False
    assert results["dependencies_available"] is True
    assert results["conflicts_detected"] is False
    assert "my_company" in results["class_error"]
    steps = data["next_steps"]
    assert steps and all(isinstance(s, str) and s for s in steps)
    # The steps say what to do about the class, not to activate a plugin that cannot load.
    assert any("my_company" in s or "class" in s.lower() for s in steps), steps
    assert contains_step(steps, "register")
    assert not contains_step(steps, SPEC_NEXT_STEPS[0])
    assert data["dry_run"] is False
    stored = detail(admin, data["id"])
    assert stored["status"] == "error"
    assert stored["status_reason"]


def test_register_loadable_plugin_is_registered_with_the_specs_next_steps(
    admin: httpx.Client, unique_name: str
) -> None:
    body = copy.deepcopy(SPEC_EXAMPLE_BODY)
    body.update(name=unique_name, class_path="mlx_test_plugins.EchoPlugin")
    data = registered(admin, body)
    assert data["id"] == f"plugin_{unique_name}_001"
    assert data["status"] == "registered"
    results = data["validation_results"]
    assert VALIDATION_KEYS <= set(results)
    assert results["schema_valid"] is True
    assert results["class_loadable"] is True
    assert results["dependencies_available"] is True
    assert results["conflicts_detected"] is False
    assert not results.get("class_error")
    for text in SPEC_NEXT_STEPS:
        assert contains_step(data["next_steps"], text), (text, data["next_steps"])
    assert detail(admin, data["id"])["status"] == "registered"


def test_register_stores_the_definition(admin: httpx.Client, unique_name: str) -> None:
    body = plugin_body(
        unique_name,
        description="Reads the warehouse",
        configuration_schema={"dsn": {"type": "string", "required": True}},
        metadata={"capabilities": ["sql_queries"], "min_memory_mb": 64},
    )
    pid = registered(admin, body)["id"]
    stored = detail(admin, pid)
    assert stored["name"] == unique_name
    assert stored["type"] == "data_source"
    assert stored["version"] == "1.0.0"
    assert stored["description"] == "Reads the warehouse"
    assert stored["configuration_schema"]["dsn"]["type"] == "string"
    assert stored["configuration_schema"]["dsn"]["required"] is True
    assert stored["metadata"]["capabilities"] == ["sql_queries"]


# ---------------------------------------------------------------- duplicates and ids


def test_register_same_name_and_version_again_is_a_conflict(
    admin: httpx.Client, unique_name: str
) -> None:
    pid = register(admin, unique_name)
    err = assert_error(post(admin, plugin_body(unique_name)), 409, "PLUGIN_ALREADY_EXISTS")
    assert err["details"]["existing_id"] == pid
    assert total(admin, search=unique_name) == 1


def test_register_second_version_of_a_name_gets_the_next_number(
    admin: httpx.Client, unique_name: str
) -> None:
    first = register(admin, unique_name, version="1.0.0")
    second = register(admin, unique_name, version="2.0.0")
    assert first == f"plugin_{unique_name}_001"
    assert second == f"plugin_{unique_name}_002"
    assert detail(admin, first)["version"] == "1.0.0"
    assert detail(admin, second)["version"] == "2.0.0"


@pytest.mark.parametrize(
    ("first", "second"),
    [("dotted.name", "dotted_name"), ("Mixed_Case", "mixed_case"), ("dash-name", "dash_name")],
)
def test_register_names_that_differ_only_in_punctuation_or_case_get_distinct_ids(
    admin: httpx.Client, unique_name: str, first: str, second: str
) -> None:
    a = registered(admin, plugin_body(f"{first}_{unique_name}"))
    r = post(admin, plugin_body(f"{second}_{unique_name}"))
    assert r.status_code == 201, r.text
    b = r.json()["data"]
    assert a["id"] != b["id"]
    assert detail(admin, a["id"])["name"] == f"{first}_{unique_name}"
    assert detail(admin, b["id"])["name"] == f"{second}_{unique_name}"


def test_register_again_replaces_a_plugin_whose_class_was_not_loadable(
    admin: httpx.Client, unique_name: str
) -> None:
    broken = registered(
        admin,
        plugin_body(unique_name, class_path="mlx_test_plugins.Missing", description="old text"),
    )
    assert broken["status"] == "error"
    fixed = registered(
        admin,
        plugin_body(
            unique_name, class_path="mlx_test_plugins.EchoPlugin", description="fixed zebra text"
        ),
    )
    assert fixed["id"] == broken["id"] == f"plugin_{unique_name}_001"
    assert fixed["status"] == "registered"
    assert fixed["validation_results"]["class_loadable"] is True
    stored = detail(admin, fixed["id"])
    assert stored["status"] == "registered"
    assert stored["description"] == "fixed zebra text"
    assert total(admin, search=unique_name) == 1
    # the replaced definition is what search sees
    assert total(admin, search=f"{unique_name} test") == 0
    r = admin.get("/v1/plugins", params={"search": "fixed zebra"})
    assert [p["id"] for p in r.json()["data"]] == [fixed["id"]]


def test_register_again_with_a_class_still_not_loadable_is_a_duplicate(
    admin: httpx.Client, unique_name: str
) -> None:
    first = registered(admin, plugin_body(unique_name, class_path="mlx_test_plugins.Missing"))
    err = assert_error(
        post(admin, plugin_body(unique_name, class_path="mlx_test_plugins.NotAPlugin")),
        409,
        "PLUGIN_ALREADY_EXISTS",
    )
    assert err["details"]["existing_id"] == first["id"]
    assert "still cannot be loaded" in str(err["message"])
    assert detail(admin, first["id"])["class_path"] == "mlx_test_plugins.Missing"
    assert total(admin, search=unique_name) == 1


def test_register_again_does_not_replace_a_loadable_plugin(
    admin: httpx.Client, unique_name: str
) -> None:
    pid = register(admin, unique_name, description="original")
    err = assert_error(
        post(admin, plugin_body(unique_name, description="replacement")),
        409,
        "PLUGIN_ALREADY_EXISTS",
    )
    assert err["details"]["existing_id"] == pid
    assert detail(admin, pid)["description"] == "original"


# ---------------------------------------------------------------- class checks


@pytest.mark.parametrize(
    ("class_path", "mentions"),
    [
        ("mlx_test_plugins.NotAPlugin", "NotAPlugin"),
        ("mlx_broken_plugin.Anything", "mlx_broken_plugin"),
        ("mlx_test_plugins.DoesNotExist", "DoesNotExist"),
        ("no_such_module_anywhere.Plugin", "no_such_module_anywhere"),
    ],
    ids=["not-a-plugin-subclass", "module-raises-on-import", "missing-class", "missing-module"],
)
def test_register_unloadable_class_is_recorded_with_a_reason(
    admin: httpx.Client, unique_name: str, class_path: str, mentions: str
) -> None:
    data = registered(admin, plugin_body(unique_name, class_path=class_path))
    assert data["status"] == "error"
    results = data["validation_results"]
    assert results["class_loadable"] is False
    assert isinstance(results["class_error"], str) and mentions in results["class_error"]
    assert detail(admin, data["id"])["status"] == "error"


def test_register_not_a_plugin_reason_says_it_is_not_a_plugin_subclass(
    admin: httpx.Client, unique_name: str
) -> None:
    data = registered(admin, plugin_body(unique_name, class_path="mlx_test_plugins.NotAPlugin"))
    reason = data["validation_results"]["class_error"]
    assert "Plugin" in reason.replace("NotAPlugin", "")


def test_register_broken_module_reason_carries_the_import_error(
    admin: httpx.Client, unique_name: str
) -> None:
    data = registered(admin, plugin_body(unique_name, class_path="mlx_broken_plugin.Anything"))
    assert "broken on purpose" in data["validation_results"]["class_error"]


# ---------------------------------------------------------------- dependencies and conflicts


def test_register_with_unregistered_requirement_reports_it_missing(
    admin: httpx.Client, unique_name: str
) -> None:
    dep = f"{unique_name}_dep"
    data = registered(admin, plugin_body(unique_name, metadata={"requires": [f"{dep}>=1.0"]}))
    results = data["validation_results"]
    assert results["dependencies_available"] is False
    assert any(dep in str(m) for m in results["missing_dependencies"]), results
    assert data["status"] == "registered"  # registration still happens
    assert contains_step(data["next_steps"], dep)

    register(admin, dep, version="1.2.0")
    data = registered(
        admin, plugin_body(f"{unique_name}_b", metadata={"requires": [f"{dep}>=1.0"]})
    )
    results = data["validation_results"]
    assert results["dependencies_available"] is True
    assert results["missing_dependencies"] == []


def test_register_with_requirement_no_registered_version_satisfies_reports_it_missing(
    admin: httpx.Client, unique_name: str
) -> None:
    dep = f"{unique_name}_dep"
    register(admin, dep, version="0.5.0")
    data = registered(admin, plugin_body(unique_name, metadata={"requires": [f"{dep}>=1.0"]}))
    results = data["validation_results"]
    assert results["dependencies_available"] is False
    assert any(dep in str(m) for m in results["missing_dependencies"]), results


def test_register_conflicting_with_an_active_plugin_detects_the_conflict(
    admin: httpx.Client, unique_name: str
) -> None:
    rival = f"{unique_name}_rival"
    rival_id = register(admin, rival)
    r = admin.post(f"/v1/plugins/{rival_id}/activate", json={})
    assert r.status_code == 200, r.text
    try:
        data = registered(admin, plugin_body(unique_name, metadata={"conflicts_with": [rival]}))
        results = data["validation_results"]
        assert results["conflicts_detected"] is True
        assert rival in str(results["conflicts"])
        assert data["status"] == "registered"
    finally:
        admin.post(f"/v1/plugins/{rival_id}/deactivate", json={"force": True})


def test_register_named_in_an_active_plugins_conflicts_detects_the_conflict(
    admin: httpx.Client, unique_name: str
) -> None:
    rival_id = register(admin, f"{unique_name}_rival", metadata={"conflicts_with": [unique_name]})
    r = admin.post(f"/v1/plugins/{rival_id}/activate", json={})
    assert r.status_code == 200, r.text
    try:
        data = registered(admin, plugin_body(unique_name))
        assert data["validation_results"]["conflicts_detected"] is True
        assert f"{unique_name}_rival" in str(data["validation_results"]["conflicts"])
    finally:
        admin.post(f"/v1/plugins/{rival_id}/deactivate", json={"force": True})


def test_register_conflicting_with_an_inactive_plugin_detects_no_conflict(
    admin: httpx.Client, unique_name: str
) -> None:
    rival = f"{unique_name}_rival"
    register(admin, rival)
    data = registered(admin, plugin_body(unique_name, metadata={"conflicts_with": [rival]}))
    assert data["validation_results"]["conflicts_detected"] is False
    assert data["validation_results"]["conflicts"] == []


# ---------------------------------------------------------------- invalid bodies


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


INVALID_BODIES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "missing-name": (without(plugin_body("x"), "name"), ("name",)),
    "missing-version": (without(plugin_body("x"), "version"), ("version",)),
    "bad-name-pattern": (plugin_body("1starts with digit"), ("name",)),
    "bad-type-pattern": (plugin_body("x", type="Data-Source"), ("type",)),
    "version-not-a-version": (plugin_body("x", version="not a version"), ("version",)),
    "unknown-top-level-field": (dict(plugin_body("x"), colour="blue"), ("colour",)),
    "schema-type-date": (
        plugin_body("x", configuration_schema={"when": {"type": "date"}}),
        ("configuration_schema", "when"),
    ),
    "schema-invalid-regex": (
        plugin_body("x", configuration_schema={"code": {"type": "string", "pattern": "(["}}),
        ("configuration_schema", "code"),
    ),
    "schema-minimum-above-maximum": (
        plugin_body(
            "x", configuration_schema={"size": {"type": "integer", "minimum": 10, "maximum": 1}}
        ),
        ("configuration_schema", "size"),
    ),
    "requires-bad-spec": (plugin_body("x", metadata={"requires": ["bad spec!!"]}), ("requires",)),
}


@pytest.mark.parametrize("case", list(INVALID_BODIES), ids=list(INVALID_BODIES))
def test_register_rejects_invalid_body_naming_the_field(
    admin: httpx.Client, unique_name: str, case: str
) -> None:
    body, fragments = INVALID_BODIES[case]
    body = copy.deepcopy(body)
    if "name" in body:
        body["name"] = unique_name if case != "bad-name-pattern" else body["name"]
    err = assert_error(post(admin, body), 422, "VALIDATION_ERROR")
    keys = list(err["details"])
    assert any(all(f in key for f in fragments) for key in keys), (fragments, err)
    assert all(f in str(err["message"]) for f in fragments), (fragments, err["message"])
    assert total(admin, search=unique_name) == 0


def test_register_rejects_non_json_body(admin: httpx.Client) -> None:
    before = total(admin)
    r = admin.post(
        "/v1/plugins", content=b'{"name": "x", oops', headers={"Content-Type": "application/json"}
    )
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert "body" in err["details"]
    assert "json" in str(err["message"]).lower()
    assert total(admin) == before


def test_register_rejects_a_json_array_body(admin: httpx.Client) -> None:
    assert_error(post(admin, [plugin_body("x")]), 422, "VALIDATION_ERROR")


def test_register_rejects_empty_body(admin: httpx.Client) -> None:
    r = admin.post("/v1/plugins", content=b"", headers={"Content-Type": "application/json"})
    assert_error(r, 422, "VALIDATION_ERROR")


def test_register_reports_each_invalid_field(admin: httpx.Client, unique_name: str) -> None:
    body = plugin_body(unique_name, type="Bad Type", colour="blue")
    err = assert_error(post(admin, body), 422, "VALIDATION_ERROR")
    assert "type" in err["details"] and "colour" in err["details"], err


# ---------------------------------------------------------------- dry run


def test_register_dry_run_stores_nothing(admin: httpx.Client, unique_name: str) -> None:
    before = total(admin)
    r = post(admin, plugin_body(unique_name), dry_run="true")
    assert r.status_code in (200, 201), r.text
    data = r.json()["data"]
    assert data["dry_run"] is True
    assert data["validation_results"]["class_loadable"] is True
    assert total(admin) == before
    assert total(admin, search=unique_name) == 0
    assert_error(admin.get(f"/v1/plugins/plugin_{unique_name}_001"), 404, "PLUGIN_NOT_FOUND")

    real = registered(admin, plugin_body(unique_name))
    assert real["id"] == f"plugin_{unique_name}_001"
    assert real["dry_run"] is False
    assert total(admin) == before + 1


def test_register_dry_run_reports_an_unloadable_class(
    admin: httpx.Client, unique_name: str
) -> None:
    r = post(admin, plugin_body(unique_name, class_path="mlx_broken_plugin.X"), dry_run="true")
    assert r.status_code in (200, 201), r.text
    data = r.json()["data"]
    assert data["dry_run"] is True
    assert data["validation_results"]["class_loadable"] is False
    assert total(admin, search=unique_name) == 0


def test_register_dry_run_does_not_replace_an_error_plugin(
    admin: httpx.Client, unique_name: str
) -> None:
    broken = registered(admin, plugin_body(unique_name, class_path="mlx_test_plugins.Missing"))
    r = post(admin, plugin_body(unique_name), dry_run="true")
    assert r.status_code in (200, 201), r.text
    assert r.json()["data"]["dry_run"] is True
    assert detail(admin, broken["id"])["status"] == "error"


def test_register_dry_run_of_a_duplicate_is_a_conflict(
    admin: httpx.Client, unique_name: str
) -> None:
    pid = register(admin, unique_name)
    err = assert_error(
        post(admin, plugin_body(unique_name), dry_run="true"), 409, "PLUGIN_ALREADY_EXISTS"
    )
    assert err["details"]["existing_id"] == pid


def test_register_dry_run_rejects_an_invalid_body(admin: httpx.Client, unique_name: str) -> None:
    body = plugin_body(unique_name, version="not a version")
    err = assert_error(post(admin, body, dry_run="true"), 422, "VALIDATION_ERROR")
    assert "version" in err["details"]


# ---------------------------------------------------------------- the import process

IMPORT_MISBEHAVIOURS = {
    # ends its process during the import, before any answer
    "mlx_exits_at_import": "import os\nos._exit(9)\n",
    # never finishes its import (the class check's timeout ends it)
    "mlx_hangs_at_import": (
        "import os, pathlib, time\n"
        "pathlib.Path(os.environ['PID_DIR'], 'hang').write_text(str(os.getpid()))\n"
        "time.sleep(120)\n"
    ),
    # imports fine, leaving a process of its own behind
    "mlx_spawns_at_import": (
        "import os, pathlib, subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "pathlib.Path(os.environ['PID_DIR'], 'spawned').write_text(str(child.pid))\n"
        "from mlx_test_plugins import EchoPlugin as Spawner\n"
    ),
}


@pytest.fixture
def misbehaving(server_factory, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A server whose plugin folder holds modules that misbehave while imported."""
    folder = tmp_path / "misbehaving"
    folder.mkdir()
    for module, source in IMPORT_MISBEHAVIOURS.items():
        (folder / f"{module}.py").write_text(source)
    monkeypatch.setenv("PID_DIR", str(tmp_path))
    return server_factory(plugin_path=str(folder), class_check_timeout="2")


def test_an_import_that_ends_its_process_is_reported_with_the_exit_code(misbehaving) -> None:
    with misbehaving.client() as c:
        r = c.post("/v1/plugins", json=plugin_body("exits", class_path="mlx_exits_at_import.X"))
    assert r.status_code == 201, r.text
    results = r.json()["data"]["validation_results"]
    assert results["class_loadable"] is False
    assert "ended with exit code 9 before answering" in results["class_error"], results


def test_an_import_that_hangs_is_ended_at_the_class_check_timeout(misbehaving, tmp_path) -> None:
    with misbehaving.client() as c:
        r = c.post("/v1/plugins", json=plugin_body("hangs", class_path="mlx_hangs_at_import.X"))
    assert r.status_code == 201, r.text
    results = r.json()["data"]["validation_results"]
    assert results["class_loadable"] is False
    assert "took longer than 2 s" in results["class_error"], results
    pid = int((tmp_path / "hang").read_text())
    poll(lambda: process_gone(pid), bool, timeout=10, what="the hung import process ended")


def test_processes_an_import_starts_end_with_it(misbehaving, tmp_path) -> None:
    with misbehaving.client() as c:
        r = c.post(
            "/v1/plugins", json=plugin_body("spawns", class_path="mlx_spawns_at_import.Spawner")
        )
    assert r.status_code == 201, r.text
    assert r.json()["data"]["validation_results"]["class_loadable"] is True
    pid = int((tmp_path / "spawned").read_text())
    poll(lambda: process_gone(pid), bool, timeout=10, what="the process the import started ended")


def test_import_processes_run_side_by_side(misbehaving) -> None:
    """Registrations at the same moment each get their own import process and answer."""
    import concurrent.futures

    def one(i: int) -> tuple[int, Any]:
        with misbehaving.client() as c:
            r = c.post("/v1/plugins", json=plugin_body(f"side_by_side_{i}"))
        return r.status_code, r.json()["data"]["validation_results"]["class_loadable"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(16)))
    assert answers == [(201, True)] * 16
