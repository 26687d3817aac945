"""POST /v1/plugins/validate-composition and the activation rules (the app in-process)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, assert_error, register

P = "/v1/plugins"

SPEC_REQUEST = {
    "plugins": [
        {"name": "snowflake", "version": "1.2.0"},
        {"name": "databricks", "version": "2.0.0"},
        {"name": "mlflow", "version": "1.8.0"},
    ]
}
SPEC_DATA = {
    "composition_valid": True,
    "conflicts": [],
    "warnings": [
        {
            "type": "version_mismatch",
            "message": "MLflow version 1.8.0 is older than recommended 2.0.0+",
            "severity": "low",
            "plugins": ["mlflow"],
        }
    ],
    "synergies": [
        {
            "plugins": ["snowflake", "databricks"],
            "integration_points": ["data_sharing", "delta_lake"],
            "benefits": ["Zero-copy data sharing", "Unified governance"],
        }
    ],
    "recommendations": [
        "Consider upgrading MLflow to version 2.0.0+ for better Databricks integration"
    ],
}


def validate(client: httpx.Client, *entries: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"{P}/validate-composition", json={"plugins": list(entries)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    return dict(body["data"])


def project(value: Any, shape: Any) -> Any:
    """`value` reduced to the keys `shape` has (the spec's shape; extra keys are allowed)."""
    if isinstance(shape, dict):
        return {k: project(value.get(k), v) for k, v in shape.items()}
    if isinstance(shape, list) and shape and isinstance(value, list):
        return [project(v, shape[0]) for v in value]
    return value


def test_the_spec_example_returns_the_spec_answer(server_factory) -> None:
    srv = server_factory(seed_builtin_plugins="false")
    with srv.client() as client:
        register(
            client,
            "snowflake",
            version="1.2.0",
            metadata={
                "integration_points": ["ml_platforms", "feature_stores"],
                "synergies": [
                    {
                        "with": "databricks",
                        "integration_points": ["data_sharing", "delta_lake"],
                        "benefits": ["Zero-copy data sharing", "Unified governance"],
                    }
                ],
            },
        )
        register(
            client,
            "databricks",
            type="ml_platform",
            version="2.0.0",
            metadata={"display_name": "Databricks", "recommends": {"mlflow": ">=2.0.0"}},
        )
        mlflow = register(
            client,
            "mlflow",
            type="experiment_tracker",
            version="1.8.0",
            metadata={"display_name": "MLflow"},
        )

        data = validate(client, *SPEC_REQUEST["plugins"])

    resolved = data.pop("resolved")
    assert project(data, SPEC_DATA) == SPEC_DATA
    assert set(data) == set(SPEC_DATA)
    assert [(r["name"], r["version"], r["added_by_resolver"]) for r in resolved] == [
        ("snowflake", "1.2.0", False),
        ("databricks", "2.0.0", False),
        ("mlflow", "1.8.0", False),
    ]
    assert resolved[2]["id"] == mlflow


def test_the_spec_example_with_nothing_registered_keeps_the_shape(server_factory) -> None:
    srv = server_factory(seed_builtin_plugins="false")
    with srv.client(scopes=("plugins:write",)) as client:
        data = validate(client, *SPEC_REQUEST["plugins"])

    assert data["composition_valid"] is False
    assert [(c["type"], c["plugins"]) for c in data["conflicts"]] == [
        ("missing_dependency", ["snowflake"]),
        ("missing_dependency", ["databricks"]),
        ("missing_dependency", ["mlflow"]),
    ]
    for conflict in data["conflicts"]:
        assert conflict["message"] and conflict["resolution_options"]
    assert data["warnings"] == data["synergies"] == data["recommendations"] == []


CASES = [
    pytest.param(
        {"a": {"metadata": {"conflicts_with": ["{b}<2"]}}, "b": {"version": "1.5.0"}},
        ["a", "b"],
        "explicit_conflict",
        id="explicit-conflict",
    ),
    pytest.param(
        {"a": {"type": "experiment_tracker"}, "b": {"type": "experiment_tracker"}},
        ["a", "b"],
        "singleton_type",
        id="singleton",
    ),
    pytest.param(
        {"a": {"metadata": {"requires": ["{b}>=3"]}}, "b": {"version": "2.0.0"}},
        ["a"],
        "missing_dependency",
        id="missing-dependency",
    ),
    pytest.param(
        {
            "a": {"metadata": {"requires": ["{c}>=2"]}},
            "b": {"metadata": {"requires": ["{c}<2"]}},
            "c": {"versions": ["1.0.0", "2.0.0"]},
        },
        ["a", "b"],
        "version_conflict",
        id="version-conflict",
    ),
    pytest.param(
        {"a": {"metadata": {"supported_platforms": ["plan9"]}}},
        ["a"],
        "incompatible_platform",
        id="incompatible-platform",
    ),
    pytest.param(
        {"a": {"metadata": {"min_memory_mb": 10**9}}},
        ["a"],
        "insufficient_resources",
        id="insufficient-resources",
    ),
]


@pytest.mark.parametrize(("plugins", "entries", "kind"), CASES)
def test_each_conflict_type_over_http(admin, unique_name, plugins, entries, kind) -> None:
    names = {short: f"{unique_name}_{short}" for short in plugins}
    for short, spec in plugins.items():
        body = {k: v for k, v in spec.items() if k != "versions"}
        if "metadata" in body:
            body["metadata"] = {
                k: [x.format(**names) for x in v] if isinstance(v, list) else v
                for k, v in body["metadata"].items()
            }
        for version in spec.get("versions", [body.pop("version", "1.0.0")]):
            register(admin, names[short], **{**body, "version": version})

    data = validate(admin, *({"name": names[e]} for e in entries))

    assert data["composition_valid"] is False
    [conflict] = [c for c in data["conflicts"] if c["type"] == kind]
    assert set(conflict["plugins"]) <= set(names.values())
    assert conflict["message"] and conflict["resolution_options"]


def test_versions_are_chosen_and_requirements_pulled_in(admin, unique_name) -> None:
    app, lib = f"{unique_name}_app", f"{unique_name}_lib"
    register(admin, app, metadata={"requires": [f"{lib}>=1.5,<3"]})
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        register(admin, lib, version=version)

    data = validate(admin, {"name": app})

    assert data["composition_valid"] is True, data["conflicts"]
    assert [(r["name"], r["version"], r["added_by_resolver"]) for r in data["resolved"]] == [
        (app, "1.0.0", False),
        (lib, "2.0.0", True),
    ]
    assert data["resolved"][1]["required_by"] == [app]


def test_a_new_registration_is_seen_by_the_next_validation(admin, unique_name) -> None:
    app, lib = f"{unique_name}_app", f"{unique_name}_lib"
    register(admin, app, metadata={"requires": [lib]})
    before = validate(admin, {"name": app})
    assert [c["type"] for c in before["conflicts"]] == ["missing_dependency"]

    register(admin, lib)
    after = validate(admin, {"name": app})

    assert after["composition_valid"] is True
    assert [r["name"] for r in after["resolved"]] == [app, lib]


def test_an_unreadable_version_is_a_validation_error(admin) -> None:
    r = admin.post(
        f"{P}/validate-composition", json={"plugins": [{"name": "a", "version": "1.0 beta"}]}
    )

    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert set(err["details"]) == {"plugins[0].version"}


# ---------------------------------------------------------------- activation


def test_activation_conflict_details_keep_their_names_and_say_who_declared(
    admin, unique_name
) -> None:
    old = register(admin, f"{unique_name}_old", version="1.5.0")
    new = register(
        admin, f"{unique_name}_new", metadata={"conflicts_with": [f"{unique_name}_old<2"]}
    )
    assert admin.post(f"{P}/{old}/activate").status_code == 200

    err = assert_error(admin.post(f"{P}/{new}/activate"), 409, "PLUGIN_CONFLICT")

    details = err["details"]
    assert details["conflicting_plugin"] == f"{unique_name}_old"
    assert details["conflicting_plugin_id"] == old
    assert details["conflict_type"] == "explicit_conflict"
    assert details["resolution_options"]
    [conflict] = details["conflicts"]
    assert conflict["declared_by"] == f"{unique_name}_new"
    assert conflict["specifier"] == f"{unique_name}_old<2"
    assert admin.post(f"{P}/{old}/deactivate", json={}).status_code == 200


def test_dependency_missing_names_the_version_to_activate(admin, unique_name) -> None:
    base = f"{unique_name}_base"
    register(admin, base, version="1.0.0")
    good = register(admin, base, version="2.2.0")
    app = register(
        admin, f"{unique_name}_app", metadata={"requires": [f"{base}>=2", f"{unique_name}_ghost"]}
    )

    err = assert_error(admin.post(f"{P}/{app}/activate"), 409, "DEPENDENCY_MISSING")

    first, second = err["details"]["missing_dependencies"]
    assert first["requirement"] == f"{base}>=2"
    assert first["registered_version_satisfies"] is True
    assert first["satisfying_registered"] == [
        {"id": good, "version": "2.2.0", "status": "registered"}
    ]
    assert second["registered_version_satisfies"] is False
    assert err["details"]["resolution_options"][0] == f"Activate '{base}' 2.2.0 ({good})"


# ---------------------------------------------------------------- the singleton rule under concurrency


def _race(srv: LiveServer, per_plugin: int = 10) -> None:
    """Two experiment trackers, `per_plugin` concurrent activation requests each: exactly one
    plugin ends active; the other plugin's requests all lose with PLUGIN_CONFLICT
    singleton_type; the winner's own extra requests find it active (INVALID_STATE); no 5xx."""
    with srv.client() as client:
        one = register(client, "tracker_one", type="experiment_tracker")
        two = register(client, "tracker_two", type="experiment_tracker")
    token = srv.token("plugins:admin")
    barrier = threading.Barrier(2 * per_plugin)
    answers: list[tuple[str, int, dict[str, Any]]] = []
    lock = threading.Lock()

    def fire(pid: str) -> None:
        with srv.client(token) as client:
            barrier.wait()
            r = client.post(f"{P}/{pid}/activate", json={})
            with lock:
                answers.append((pid, r.status_code, r.json()))

    threads = [threading.Thread(target=fire, args=(pid,)) for pid in [one, two] * per_plugin]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)

    assert len(answers) == 2 * per_plugin
    assert all(status < 500 for _, status, _ in answers), answers
    with srv.client(token) as client:
        states = {pid: client.get(f"{P}/{pid}").json()["data"]["status"] for pid in (one, two)}
    assert sorted(states.values()) == ["active", "registered"], states
    winner = one if states[one] == "active" else two
    loser = two if winner == one else one
    winner_name = "tracker_one" if winner == one else "tracker_two"

    mine = [(s, b) for pid, s, b in answers if pid == winner]
    assert sorted(s for s, _ in mine) == [200] + [409] * (per_plugin - 1)
    assert all(b["error"]["code"] == "INVALID_STATE" for s, b in mine if s == 409)
    for pid, status, body in answers:
        if pid != loser:
            continue
        assert status == 409, body
        assert body["error"]["code"] == "PLUGIN_CONFLICT", body
        assert body["error"]["details"]["conflict_type"] == "singleton_type"
        assert body["error"]["details"]["conflicting_plugin"] == winner_name
        assert body["error"]["details"]["resolution_options"]


def test_concurrent_activations_of_two_singletons_on_sqlite(server_factory) -> None:
    _race(server_factory(seed_builtin_plugins="false"))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    name = f"mlx_composition_{uuid.uuid4().hex[:12]}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c"]
    made = subprocess.run(
        [*psql, f"create database {name}"], capture_output=True, text=True, timeout=60
    )
    if made.returncode != 0:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 not available: {made.stderr.strip()}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    subprocess.run(
        [*psql, f"drop database if exists {name} with (force)"], capture_output=True, timeout=60
    )


@pytest.mark.postgres
def test_concurrent_activations_of_two_singletons_on_postgresql(
    postgres_url, server_factory
) -> None:
    srv = server_factory(database_url=postgres_url, seed_builtin_plugins="false")
    try:
        _race(srv)
    finally:
        srv.stop()
