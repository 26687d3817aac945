"""The composition rule engine, table-driven, without a server: plugin versions are built as
`Facts` (what the engine reads from registered rows) or stored in a real SQLite file."""

from __future__ import annotations

import itertools
import random
import threading
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from mlx_platform.composition import rules
from mlx_platform.composition.advice import mismatch
from mlx_platform.composition.evaluate import evaluate
from mlx_platform.composition.explain import violations
from mlx_platform.composition.model import Catalog, build_index
from mlx_platform.composition.resolver import Solver
from mlx_platform.composition.resources import Capacity
from mlx_platform.core.composition import registry_index
from mlx_platform.errors import ValidationError
from mlx_platform.storage import Database, PluginRow
from mlx_platform.storage.repositories import PluginRepository

SINGLETONS = frozenset({"experiment_tracker"})
ROOMY = Capacity(memory_mb=100_000, cpu_cores=64, gpus=0)
_ids = count(1)


def plugin(
    name: str,
    version: str = "1.0.0",
    type: str = "data_source",
    *,
    status: str = "registered",
    loadable: bool = True,
    **meta: Any,
) -> rules.Facts:
    return rules.facts_from(
        id=f"plugin_{name}_{next(_ids):03d}",
        name=name,
        version=version,
        type=type,
        meta=meta,
        status=status,
        loadable=loadable,
        status_reason=None if loadable else "ImportError: no module named nowhere",
    )


def answer(
    registry: list[rules.Facts],
    entries: list[tuple[str, str | None]],
    *,
    capacity: Capacity = ROOMY,
) -> dict[str, Any]:
    return evaluate(build_index(registry), entries, singleton_types=SINGLETONS, capacity=capacity)


def only(items: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [i for i in items if all(i.get(k) == v for k, v in match.items())]
    assert len(found) == 1, items
    return found[0]


def chosen(data: dict[str, Any]) -> dict[str, str]:
    return {r["name"]: r["version"] for r in data["resolved"]}


# ---------------------------------------------------------------- every conflict type

CONFLICT_CASES = [
    pytest.param(
        [plugin("a", conflicts_with=["b"]), plugin("b")],
        [("a", None), ("b", None)],
        "explicit_conflict",
        {"a", "b"},
        id="explicit-declared-by-first",
    ),
    pytest.param(
        [plugin("a"), plugin("b", conflicts_with=["a>=1"])],
        [("a", None), ("b", None)],
        "explicit_conflict",
        {"a", "b"},
        id="explicit-declared-by-second-with-specifier",
    ),
    pytest.param(
        [plugin("a", conflicts_with=["b<2"]), plugin("b", "1.5"), plugin("b", "2.0")],
        [("a", None), ("b", "1.5")],
        "explicit_conflict",
        {"a", "b"},
        id="explicit-against-a-pinned-version",
    ),
    pytest.param(
        [plugin("t1", type="experiment_tracker"), plugin("t2", type="experiment_tracker")],
        [("t1", None), ("t2", None)],
        "singleton_type",
        {"t1", "t2"},
        id="singleton",
    ),
    pytest.param(
        [
            plugin("app", requires=["t2"]),
            plugin("t1", type="experiment_tracker"),
            plugin("t2", type="experiment_tracker"),
        ],
        [("app", None), ("t1", None)],
        "singleton_type",
        {"t1", "t2"},
        id="singleton-pulled-in-by-requires",
    ),
    pytest.param(
        [
            plugin("a", requires=["b>=2"]),
            plugin("c", requires=["b<2"]),
            plugin("b", "1.5"),
            plugin("b", "2.0"),
        ],
        [("a", None), ("c", None)],
        "version_conflict",
        {"a", "c", "b"},
        id="two-requires-that-no-version-meets-together",
    ),
    pytest.param(
        [plugin("a", "1.0"), plugin("a", "2.0")],
        [("a", "1.0"), ("a", "2.0")],
        "version_conflict",
        {"a"},
        id="two-versions-of-one-plugin",
    ),
    pytest.param(
        [plugin("a")],
        [("ghost", None)],
        "missing_dependency",
        {"ghost"},
        id="unknown-plugin",
    ),
    pytest.param(
        [plugin("a", "1.0")],
        [("a", "3.0")],
        "missing_dependency",
        {"a"},
        id="version-not-registered",
    ),
    pytest.param(
        [plugin("a", requires=["ghost>=1"])],
        [("a", None)],
        "missing_dependency",
        {"a", "ghost"},
        id="requires-an-unregistered-plugin",
    ),
    pytest.param(
        [plugin("a", requires=["b>=2"]), plugin("b", "1.5")],
        [("a", None)],
        "missing_dependency",
        {"a", "b"},
        id="requires-a-version-nobody-registered",
    ),
    pytest.param(
        [plugin("a", supported_platforms=["plan9"])],
        [("a", None)],
        "incompatible_platform",
        {"a"},
        id="platform",
    ),
    pytest.param(
        [plugin("a", min_python_version="99.0")],
        [("a", None)],
        "incompatible_platform",
        {"a"},
        id="python",
    ),
    pytest.param(
        [plugin("a", platform_api=">=2")],
        [("a", None)],
        "incompatible_platform",
        {"a"},
        id="platform-api",
    ),
    pytest.param(
        [plugin("a", loadable=False)],
        [("a", None)],
        "incompatible_platform",
        {"a"},
        id="class-not-loadable",
    ),
    pytest.param(
        [
            plugin("app", requires=["lib>=2"]),
            plugin("lib", "1.0"),
            plugin("lib", "2.0", supported_platforms=["plan9"]),
        ],
        [("app", None)],
        "incompatible_platform",
        {"app", "lib"},
        id="the-fitting-version-cannot-run-here",
    ),
    pytest.param(
        [plugin("big", min_memory_mb=60_000), plugin("bigger", min_memory_mb=50_000)],
        [("big", None), ("bigger", None)],
        "insufficient_resources",
        {"big", "bigger"},
        id="resources-of-the-whole-set",
    ),
]


@pytest.mark.parametrize(("registry", "entries", "kind", "names"), CONFLICT_CASES)
def test_every_conflict_type(registry, entries, kind, names) -> None:
    data = answer(registry, entries)

    assert data["composition_valid"] is False
    conflict = only(data["conflicts"], type=kind)
    assert set(conflict["plugins"]) == names
    assert isinstance(conflict["message"], str) and conflict["message"]
    assert conflict["resolution_options"] and all(
        isinstance(o, str) and o for o in conflict["resolution_options"]
    )


def test_resource_conflict_carries_the_shortfall() -> None:
    data = answer(
        [plugin("gpu", gpu_required=True, min_cpu_cores=2), plugin("cpu", min_cpu_cores=6)],
        [("gpu", None), ("cpu", None)],
        capacity=Capacity(memory_mb=1000, cpu_cores=4, gpus=0),
    )

    conflict = only(data["conflicts"], type="insufficient_resources")
    assert conflict["shortfall"] == {
        "cpu_cores": {"required": 6.0, "available": 4, "capacity": 4},
        "gpus": {"required": 1, "available": 0, "capacity": 0},
    }


def test_cpu_cores_are_a_minimum_not_a_sum() -> None:
    """Three plugins that each need a core fit a 2-core replica: they share CPU time
    (the spec's snowflake + databricks + mlflow composition)."""
    data = answer(
        [plugin(f"p{i}", min_cpu_cores=1) for i in range(3)],
        [(f"p{i}", None) for i in range(3)],
        capacity=Capacity(memory_mb=100_000, cpu_cores=2, gpus=0),
    )

    assert data["composition_valid"] is True, data["conflicts"]
    assert not [c for c in data["conflicts"] if c["type"] == "insufficient_resources"]


def test_singleton_conflict_names_every_member_once() -> None:
    trackers = [plugin(f"t{i}", type="experiment_tracker") for i in range(3)]

    data = answer(trackers, [(t.name, None) for t in trackers])

    [conflict] = data["conflicts"]
    assert conflict["plugins"] == ["t0", "t1", "t2"]
    assert conflict["plugin_type"] == "experiment_tracker"
    assert len(conflict["resolution_options"]) == 3


def test_conflicts_with_that_misses_the_chosen_version_is_no_conflict() -> None:
    data = answer(
        [plugin("a", conflicts_with=["b<2"]), plugin("b", "2.5")], [("a", None), ("b", None)]
    )

    assert data["composition_valid"] is True
    assert chosen(data) == {"a": "1.0.0", "b": "2.5"}


def test_names_compare_canonicalised() -> None:
    data = answer(
        [plugin("Feast_Store", requires=["snow-flake"]), plugin("snow.flake")],
        [("feast-store", None)],
    )

    assert data["composition_valid"] is True
    assert chosen(data) == {"Feast_Store": "1.0.0", "snow.flake": "1.0.0"}


def test_an_unreadable_entry_version_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as err:
        answer([plugin("a")], [("a", "1.0"), ("a", "not a version!")])
    assert err.value.details == {
        "plugins[1].version": "'not a version!' is neither a version (1.2.0) nor a specifier (>=1.2)"
    }


# ---------------------------------------------------------------- version choice


CHOICE_CASES = [
    pytest.param(
        [plugin("a", "1.0"), plugin("a", "2.0"), plugin("a", "1.5")],
        [("a", None)],
        {"a": "2.0"},
        set(),
        id="newest-by-default",
    ),
    pytest.param(
        [plugin("a", "1.0"), plugin("a", "2.0"), plugin("a", "1.5")],
        [("a", "<2")],
        {"a": "1.5"},
        set(),
        id="newest-inside-the-entry-specifier",
    ),
    pytest.param(
        [plugin("a", "1.0"), plugin("a", "2.0")],
        [("a", "1.0")],
        {"a": "1.0"},
        set(),
        id="exact-version",
    ),
    pytest.param(
        [
            plugin("app", requires=["lib<2"]),
            plugin("lib", "1.0"),
            plugin("lib", "1.9"),
            plugin("lib", "2.0"),
        ],
        [("app", None), ("lib", None)],
        {"app": "1.0.0", "lib": "1.9"},
        set(),
        id="narrowed-by-a-requires",
    ),
    pytest.param(
        [plugin("app", conflicts_with=["lib>=2"]), plugin("lib", "1.0"), plugin("lib", "2.0")],
        [("app", None), ("lib", None)],
        {"app": "1.0.0", "lib": "1.0"},
        set(),
        id="narrowed-by-a-conflict",
    ),
    pytest.param(
        [
            plugin("app", requires=["lib>=1.5", "lib<3"]),
            plugin("lib", "1.0"),
            plugin("lib", "2.0"),
            plugin("lib", "3.0"),
        ],
        [("app", None)],
        {"app": "1.0.0", "lib": "2.0"},
        {"lib"},
        id="pulled-in-by-the-resolver",
    ),
    pytest.param(
        [
            plugin("a", "2.0", requires=["b>=2"]),
            plugin("a", "1.0", requires=["b>=1"]),
            plugin("c", requires=["b<2"]),
            plugin("b", "1.5"),
            plugin("b", "2.0"),
        ],
        [("a", None), ("c", None)],
        {"a": "1.0", "c": "1.0.0", "b": "1.5"},
        {"b"},
        id="backtracks-to-an-older-version",
    ),
    pytest.param(
        [
            plugin("a", "2.0", requires=["b>=2"]),
            plugin("a", "1.0", requires=["b<2"]),
            plugin("b", "1.0", conflicts_with=["c"]),
            plugin("b", "2.0", requires=["c"]),
            plugin("c", "1.0"),
        ],
        [("a", None)],
        {"a": "2.0", "b": "2.0", "c": "1.0"},
        {"b", "c"},
        id="transitive-pull",
    ),
    pytest.param(
        [
            plugin("a", "2.0", requires=["b==1.0"]),
            plugin("a", "1.0"),
            plugin("b", "1.0", conflicts_with=["a>=2"]),
        ],
        [("a", None)],
        {"a": "1.0"},
        set(),
        id="a-version-the-pulled-plugin-rules-out",
    ),
    pytest.param(
        [plugin("a", "2.0", supported_platforms=["plan9"]), plugin("a", "1.0")],
        [("a", None)],
        {"a": "1.0"},
        set(),
        id="only-versions-that-run-here",
    ),
]


@pytest.mark.parametrize(("registry", "entries", "expected", "added"), CHOICE_CASES)
def test_version_choice_among_registered_versions(registry, entries, expected, added) -> None:
    data = answer(registry, entries)

    assert data["composition_valid"] is True, data["conflicts"]
    assert chosen(data) == expected
    assert {r["name"] for r in data["resolved"] if r["added_by_resolver"]} == added
    by_id = {f.id: f for f in registry}
    for r in data["resolved"]:
        assert by_id[r["id"]].version == r["version"]


def test_pulled_in_plugins_say_who_requires_them() -> None:
    data = answer(
        [plugin("a", requires=["lib"]), plugin("b", requires=["lib>=1"]), plugin("lib")],
        [("a", None), ("b", None)],
    )

    lib = only(data["resolved"], name="lib")
    assert lib["added_by_resolver"] is True
    assert lib["required_by"] == ["a", "b"]


# ---------------------------------------------------------------- unsatisfiable sets and their explanation


def test_explanation_is_the_minimal_chain() -> None:
    registry = [
        plugin("a", "1.0", requires=["b>=2"]),
        plugin("a", "2.0", requires=["b>=2"]),
        plugin("c", requires=["b<2", "d"]),
        plugin("d"),
        plugin("noise", requires=["b"]),
        plugin("b", "1.5"),
        plugin("b", "2.0"),
    ]

    data = answer(registry, [("a", None), ("c", None), ("noise", None)])

    assert data["composition_valid"] is False
    assert data["resolved"] == []
    [conflict] = data["conflicts"]
    assert conflict["type"] == "version_conflict"
    assert set(conflict["plugins"]) == {"a", "b", "c"}
    steps = [e["constraint"] for e in conflict["explanation"]]
    # 'noise' requires b too, but any b does for it: not part of the explanation.
    assert not any("noise" in s for s in steps)
    assert any("'a' 2.0, 1.0 require 'b>=2'" in s for s in steps), steps
    excl = only(conflict["explanation"], kind="excludes")
    assert excl["because"] == ["'c' 1.0.0 requires 'b<2'"]
    assert excl["chain"] == ["'c' is in the composition", "'c' 1.0.0 requires 'b<2'"]
    assert "Remove 'c' from the composition" in conflict["resolution_options"]


def test_explanation_after_a_search_is_minimal() -> None:
    # Neither a nor c is settled by propagation (two versions each): the resolver searches,
    # and its ResolutionImpossible causes become the explanation.
    registry = [
        plugin("a", "1.0", requires=["b>=2"]),
        plugin("a", "2.0", requires=["b>=3"]),
        plugin("c", "1.0", requires=["b<2"]),
        plugin("c", "2.0", requires=["b<1.5"]),
        plugin("b", "1.0"),
        plugin("b", "2.0"),
        plugin("b", "3.0"),
    ]
    specs = [rules.entry_spec("a", None), rules.entry_spec("c", None)]

    outcome = Solver(Catalog(registry)).solve(specs)

    assert not outcome.ok and outcome.searched_plugins
    [failure] = outcome.failures
    assert failure.slot.name == "b" and failure.conflict_type == "version_conflict"
    authors = sorted(g[0].origin.name for g in failure.groups if g[0].origin)
    assert authors == ["a", "c"]
    for i in range(len(failure.groups)):  # minimal: without any one group, some b fits
        rest = failure.groups[:i] + failure.groups[i + 1 :]
        assert any(all(any(c.allows(b) for c in g) for g in rest) for b in failure.slot.base)


def test_every_failure_is_reported_not_only_the_first() -> None:
    data = answer(
        [plugin("a", requires=["ghost"]), plugin("x", conflicts_with=["y"]), plugin("y")],
        [("a", None), ("x", None), ("y", None), ("unknown", None)],
    )

    kinds = sorted((c["type"], tuple(sorted(c["plugins"]))) for c in data["conflicts"])
    assert kinds == [
        ("explicit_conflict", ("x", "y")),
        ("missing_dependency", ("a", "ghost")),
        ("missing_dependency", ("unknown",)),
    ]


def test_unknown_plugins_answer_the_spec_shape() -> None:
    data = answer([], [("snowflake", "1.2.0"), ("databricks", "2.0.0"), ("mlflow", "1.8.0")])

    assert data["composition_valid"] is False
    assert {n for c in data["conflicts"] for n in c["plugins"]} == {
        "snowflake",
        "databricks",
        "mlflow",
    }
    for key in ("warnings", "synergies", "recommendations", "resolved"):
        assert data[key] == []


def test_a_failure_through_several_plugins_gets_a_minimal_core() -> None:
    # Found by the brute-force comparison: no single plugin's constraints explain this one,
    # the explanation is cut from every constraint of the group, the complete search judging.
    def p(name: str, version: str, requires=(), conflicts=()) -> rules.Facts:
        meta = {"requires": list(requires), "conflicts_with": list(conflicts)}
        return rules.facts_from(
            id=f"{name}-{version}", name=name, version=version, type="t", meta=meta
        )

    registry = [
        p("p0", "1.5", ["p2>=2", "p1"]),
        p("p0", "2.0", ["p4>=1.5"]),
        p("p1", "2.0", [], ["p4<2"]),
        p("p1", "1.0", ["p0", "p0>=1.5"], ["p4"]),
        p("p1", "1.5", ["p4==1.0"]),
        p("p2", "3.0", ["p3", "p3<2"]),
        p("p2", "1.5"),
        p("p3", "2.0", ["p1>=1.5"], ["p1>=2"]),
        p("p3", "1.5", ["p2>=1.5"], ["p0<2"]),
        p("p4", "1.5", ["p3>=1.5"]),
        p("p4", "3.0", ["p1<2", "p1==1.0"]),
    ]
    roots = [rules.entry_spec(n, None) for n in ("p1", "p0", "p2")]
    assert _brute_force(registry, roots) is None
    solver = Solver(Catalog(registry))

    outcome = solver.solve(roots)

    [failure] = outcome.failures
    assert failure.search and not failure.gave_up
    members = [s for s in outcome.slots.values() if s.fixed is None]
    atoms: dict[Any, Any] = {}
    for slot in members:
        for c in slot.constraints:
            atoms[("slot", c)] = c
    for slot in members:
        for cand in slot.domain:
            for kind, specs in (("requires", cand.requires), ("conflicts", cand.conflicts_with)):
                for spec in specs:
                    atoms.setdefault(("dep", cand.key, kind, spec.key), None)
    kept = set()
    for group in failure.groups:
        c = group[0]
        key = ("slot", c) if ("slot", c) in atoms else ("dep", c.origin.key, c.kind, c.target)
        assert key in atoms
        kept.add(key)
    others = frozenset(atoms) - kept
    assert solver._exhaustive(members, others) is None  # the kept constraints suffice
    for atom in kept:  # and each of them is needed
        assert isinstance(solver._exhaustive(members, others | {atom}), dict), atom


# ---------------------------------------------------------------- warnings and synergies


def test_spec_example_figures() -> None:
    registry = [
        plugin(
            "snowflake",
            "1.2.0",
            integration_points=["ml_platforms", "feature_stores"],
            synergies=[
                {
                    "with": "databricks",
                    "integration_points": ["data_sharing", "delta_lake"],
                    "benefits": ["Zero-copy data sharing", "Unified governance"],
                }
            ],
        ),
        plugin(
            "databricks",
            "2.0.0",
            "ml_platform",
            display_name="Databricks",
            recommends={"mlflow": ">=2.0.0"},
        ),
        plugin("mlflow", "1.8.0", "experiment_tracker", display_name="MLflow"),
    ]

    data = answer(registry, [("snowflake", "1.2.0"), ("databricks", "2.0.0"), ("mlflow", "1.8.0")])

    assert {k: v for k, v in data.items() if k != "resolved"} == {
        "composition_valid": True,
        "conflicts": [],
        "warnings": [
            {
                "type": "version_mismatch",
                "message": "MLflow version 1.8.0 is older than recommended 2.0.0+",
                "severity": "low",
                "plugins": ["mlflow"],
                "recommended_by": "databricks",
                "recommended": ">=2.0.0",
                "version": "1.8.0",
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


WARNING_CASES = [
    pytest.param(
        {"mlflow": ">=2.0.0"},
        "1.8.0",
        "low",
        "is older than recommended 2.0.0+",
        id="one-major-behind",
    ),
    pytest.param({"mlflow": ">=2.0.0"}, "1.9.9", "low", "older", id="just-behind"),
    pytest.param(
        {"mlflow": ">=3.0"},
        "1.2.0",
        "medium",
        "older than recommended 3.0+",
        id="two-majors-behind",
    ),
    pytest.param(
        {"mlflow": ">=2.5,<3"},
        "2.1.0",
        "low",
        "older than the recommended <3,>=2.5",
        id="range-same-major",
    ),
    pytest.param(
        {"mlflow": "<2"}, "4.0.0", "medium", "newer than the recommended <2", id="far-ahead"
    ),
    pytest.param({"mlflow": "<2"}, "2.0.0", "low", "newer", id="just-ahead"),
]


@pytest.mark.parametrize(("recommends", "version", "severity", "phrase"), WARNING_CASES)
def test_version_mismatch_severity(recommends, version, severity, phrase) -> None:
    data = answer(
        [plugin("dbx", recommends=recommends), plugin("mlflow", version, "experiment_tracker")],
        [("dbx", None), ("mlflow", None)],
    )

    assert data["composition_valid"] is True
    warning = only(data["warnings"], type="version_mismatch")
    assert warning["severity"] == severity
    assert phrase in warning["message"]
    assert warning["plugins"] == ["mlflow"]
    assert len(data["recommendations"]) == 1


def test_mismatch_scale() -> None:
    assert mismatch(">=2.0.0", "1.8.0") == ("older", "low", "2.0.0")
    assert mismatch(">=3", "1.0") == ("older", "medium", "3")
    assert mismatch("<2", "2.0") == ("newer", "low", None)
    assert mismatch("!=1.5", "1.5") == ("other", "low", None)


def test_a_satisfied_recommendation_is_silent_and_an_absent_peer_too() -> None:
    data = answer(
        [plugin("dbx", recommends={"mlflow": ">=2", "absent": ">=1"}), plugin("mlflow", "2.1")],
        [("dbx", None), ("mlflow", None)],
    )

    assert data["warnings"] == [] and data["recommendations"] == []


def test_optional_dependencies_warn_when_outside_and_are_recommended_when_absent() -> None:
    registry = [
        plugin("src", optional_deps=["dbt>=2", "feast"]),
        plugin("dbt", "1.4"),
        plugin("feast", "0.3", display_name="Feast"),
    ]

    data = answer(registry, [("src", None), ("dbt", None)])

    assert data["composition_valid"] is True
    warning = only(data["warnings"], type="version_mismatch")
    assert warning["plugins"] == ["dbt"] and warning["severity"] == "low"
    assert data["recommendations"] == [
        "Consider dbt >=2 to use it with src",
        "Add 'feast' to the composition to enable src's optional integration with Feast",
    ]
    assert {r["name"] for r in data["resolved"]} == {"src", "dbt"}  # optional: never pulled in


def test_resources_in_use_warns_when_active_plugins_outside_leave_too_little() -> None:
    registry = [
        plugin("running", status="active", min_memory_mb=700),
        plugin("new", min_memory_mb=500),
    ]

    data = answer(registry, [("new", None)], capacity=Capacity(memory_mb=1000, cpu_cores=4, gpus=0))

    assert data["composition_valid"] is True
    warning = only(data["warnings"], type="resources_in_use")
    assert warning["severity"] == "medium"
    assert warning["plugins"] == ["running"]
    assert warning["shortfall"]["memory_mb"] == {
        "required": 500,
        "available": 300,
        "capacity": 1000,
        "claimed_by_active_plugins": 700,
    }


SYNERGY_CASES = [
    pytest.param(
        [
            plugin("a", synergies=[{"with": "b", "integration_points": ["x"], "benefits": ["B1"]}]),
            plugin("b"),
        ],
        [{"plugins": ["a", "b"], "integration_points": ["x"], "benefits": ["B1"]}],
        id="declared",
    ),
    pytest.param(
        [
            plugin("a", synergies=[{"with": "b", "integration_points": ["x"], "benefits": ["B1"]}]),
            plugin(
                "b", synergies=[{"with": "a", "integration_points": ["y", "x"], "benefits": ["B2"]}]
            ),
        ],
        [{"plugins": ["a", "b"], "integration_points": ["x", "y"], "benefits": ["B1", "B2"]}],
        id="declared-by-both-merged",
    ),
    pytest.param(
        [plugin("a", synergies=[{"with": "absent", "integration_points": ["x"]}]), plugin("b")],
        [],
        id="declared-with-a-plugin-outside-the-set",
    ),
    pytest.param(
        [
            plugin("a", integration_points=["ml", "fs"]),
            plugin("b", integration_points=["fs", "ml"]),
        ],
        [
            {
                "plugins": ["a", "b"],
                "integration_points": ["ml", "fs"],
                "benefits": ["Both integrate through ml, fs"],
            }
        ],
        id="shared-integration-points",
    ),
    pytest.param(
        [
            plugin("a", integration_points=["ml"]),
            plugin("b", integration_points=["ml", "fs"]),
            plugin("c", integration_points=["ml", "fs"]),
        ],
        [
            {
                "plugins": ["a", "b", "c"],
                "integration_points": ["ml"],
                "benefits": ["All integrate through ml"],
            },
            {
                "plugins": ["b", "c"],
                "integration_points": ["fs"],
                "benefits": ["Both integrate through fs"],
            },
        ],
        id="groups-sharing-a-point",
    ),
    pytest.param(
        [
            plugin(
                "a",
                integration_points=["ml"],
                synergies=[{"with": "b", "integration_points": ["x"]}],
            ),
            plugin("b", integration_points=["ml"]),
        ],
        [{"plugins": ["a", "b"], "integration_points": ["x"], "benefits": []}],
        id="declared-pair-not-repeated",
    ),
]


@pytest.mark.parametrize(("registry", "expected"), SYNERGY_CASES)
def test_synergies(registry, expected) -> None:
    data = answer(registry, [(f.name, None) for f in registry])

    assert data["synergies"] == expected


# ---------------------------------------------------------------- the resolver against brute force


def _random_registry(rng: random.Random) -> tuple[list[rules.Facts], list[rules.Spec]]:
    names = [f"p{i}" for i in range(rng.randint(2, 5))]
    facts = []
    for n in names:
        for v in rng.sample(["1.0", "1.5", "2.0", "3.0"], rng.randint(1, 3)):
            meta: dict[str, Any] = {"requires": [], "conflicts_with": []}
            for _ in range(rng.randint(0, 2)):
                t = rng.choice(names)
                if t != n:
                    meta["requires"].append(t + rng.choice(["", ">=1.5", "<2", "==1.0", ">=2"]))
            if rng.random() < 0.3:
                t = rng.choice(names)
                if t != n:
                    meta["conflicts_with"].append(t + rng.choice(["", "<2", ">=2"]))
            if rng.random() < 0.1:
                meta["supported_platforms"] = ["plan9"]
            facts.append(rules.facts_from(id=f"{n}-{v}", name=n, version=v, type="t", meta=meta))
    roots = [
        rules.entry_spec(n, rng.choice([None, None, "1.0", ">=1.5", "<2"]))
        for n in rng.sample(names, rng.randint(1, min(3, len(names))))
    ]
    return facts, roots


def _brute_force(
    facts: list[rules.Facts], roots: list[rules.Spec]
) -> dict[str, rules.Facts] | None:
    cat = Catalog(facts)
    keys = list(cat.by_key)
    options = [[None, *(f for f in cat.versions(k) if f.incompatible is None)] for k in keys]
    for combo in itertools.product(*options):
        picked = {k: f for k, f in zip(keys, combo, strict=True) if f is not None}
        if not violations(picked, roots):
            return picked
    return None


@pytest.mark.parametrize("greedy_from", [64, 1], ids=["resolvelib", "newest-first-then-resolvelib"])
@pytest.mark.parametrize("seed", range(4))
def test_resolver_agrees_with_brute_force(seed: int, greedy_from: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        facts, roots = _random_registry(rng)
        outcome = Solver(Catalog(facts), greedy_from=greedy_from).solve(roots)
        reference = _brute_force(facts, roots)
        if outcome.ok:
            assert violations(outcome.chosen, roots) == []
        else:
            assert reference is None, [(f.slot.name, f.conflict_type) for f in outcome.failures]
            assert all(not f.gave_up for f in outcome.failures)


def test_resolvelib_oscillation_is_caught() -> None:
    # resolvelib replaces p0 3.0 -> p1 1.0 -> p0 1.0 -> p1 3.0 -> ... until its round limit;
    # the complete search still finds p0 2.0 (which needs nothing).
    registry = [
        plugin("p0", "1.0", requires=["p1>=1.5"]),
        plugin("p0", "3.0", requires=["p1==1.0"]),
        plugin("p0", "2.0"),
        plugin("p1", "1.0", conflicts_with=["p0>=2"]),
        plugin("p1", "1.5"),
        plugin("p1", "3.0", requires=["p0>=2"]),
    ]

    outcome = Solver(Catalog(registry)).solve([rules.entry_spec("p0", None)])

    assert outcome.ok
    assert violations(outcome.chosen, [rules.entry_spec("p0", None)]) == []


# ---------------------------------------------------------------- activation and registration rules


ACTIVATION_CASES = [
    pytest.param(
        {"conflicts_with": ["other>=2"]},
        plugin("other", "2.1", status="active"),
        "explicit_conflict",
        id="specifier-hits",
    ),
    pytest.param(
        {"conflicts_with": ["other>=2"]},
        plugin("other", "1.9", status="active"),
        None,
        id="specifier-misses",
    ),
    pytest.param(
        {},
        plugin("other", "1.0", status="active", conflicts_with=["cand"]),
        "explicit_conflict",
        id="declared-by-the-active-one",
    ),
    pytest.param(
        {}, plugin("cand", "0.9", status="active"), "version_conflict", id="another-version-active"
    ),
    pytest.param(
        {},
        plugin("tracker", "1.0", "experiment_tracker", status="active"),
        "singleton_type",
        id="singleton",
    ),
    pytest.param(
        {}, plugin("tracker", "1.0", "data_source", status="active"), None, id="not-a-singleton"
    ),
]


@pytest.mark.parametrize(("meta", "active", "kind"), ACTIVATION_CASES)
def test_activation_conflicts_use_the_same_pair_rule(meta, active, kind) -> None:
    me = plugin("cand", "1.0.0", "experiment_tracker", **meta)

    found = rules.conflicts_with_active(me, [active], SINGLETONS)

    assert [c.conflict_type for c in found] == ([kind] if kind else [])
    if kind:
        details = found[0].as_dict()
        assert details["conflicting_plugin"] == active.name
        assert details["conflicting_plugin_id"] == active.id
        assert details["resolution_options"]
    # the pairwise rule is symmetric
    assert (rules.pair_conflicts(me, active, SINGLETONS) is None) == (
        rules.pair_conflicts(active, me, SINGLETONS) is None
    )


def test_unmet_requirements_name_the_satisfying_registered_versions() -> None:
    registered = [
        plugin("base", "1.5", status="inactive"),
        plugin("base", "2.1", status="registered"),
        plugin("base", "2.4", status="registered"),
    ]
    me = plugin("app", requires=["base>=2", "absent"])

    missing = rules.unmet_requirements(me, registered, need_active=True)

    assert [m.as_dict()["registered_version_satisfies"] for m in missing] == [True, False]
    assert [s["version"] for s in missing[0].satisfying] == ["2.4", "2.1"]
    assert missing[0].registered_versions == ["1.5", "2.1", "2.4"]
    assert missing[1].as_dict()["satisfying_registered"] == []


# ---------------------------------------------------------------- the registry index over a real database


def _row(name: str, version: str = "1.0.0", **meta: Any) -> PluginRow:
    return PluginRow(
        id=f"plugin_{name}_{version.replace('.', '')}",
        name=name,
        type="data_source",
        version=version,
        description="",
        class_path="x.Y",
        status="registered",
        loadable=True,
        plugin_metadata=meta,
        configuration_schema={},
        configuration={},
        class_info={},
        extra={},
    )


@pytest.fixture
def db(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'rules.db'}")
    database.migrate()
    yield database
    database.dispose()


def test_the_index_is_reused_until_the_registry_changes(db: Database) -> None:
    with db.transaction() as session:
        session.add(_row("app", requires=["lib"]))

    first = registry_index(db)
    assert registry_index(db) is first
    data = evaluate(first, [("app", None)], singleton_types=SINGLETONS, capacity=ROOMY)
    assert only(data["conflicts"], type="missing_dependency")["plugins"] == ["app", "lib"]

    with db.transaction() as session:
        session.add(_row("lib"))
    second = registry_index(db)
    assert second is not first
    data = evaluate(second, [("app", None)], singleton_types=SINGLETONS, capacity=ROOMY)
    assert data["composition_valid"] is True
    assert only(data["resolved"], name="lib")["added_by_resolver"] is True

    with db.transaction() as session:
        row = session.get(PluginRow, "plugin_lib_100")
        assert row is not None
        row.status = "active"
    third = registry_index(db)
    assert third is not second
    assert [f.status for f in third.facts if f.name == "lib"] == ["active"]

    with db.transaction() as session:
        PluginRepository(session).delete(session.get(PluginRow, "plugin_lib_100"))
    assert [f.name for f in registry_index(db).facts] == ["app"]


def test_the_singleton_slot_is_a_database_constraint(db: Database) -> None:
    with db.transaction() as session:
        session.add(_row("t1"))
        session.add(_row("t2"))
    with db.transaction() as session:
        first = session.get(PluginRow, "plugin_t1_100")
        assert first is not None
        first.singleton_slot = "experiment_tracker"

    with pytest.raises(IntegrityError), db.transaction() as session:
        second = session.get(PluginRow, "plugin_t2_100")
        assert second is not None
        second.singleton_slot = "experiment_tracker"


def test_concurrent_index_reads_see_one_consistent_index(db: Database) -> None:
    with db.transaction() as session:
        for i in range(50):
            session.add(_row(f"p{i}", requires=[f"p{(i + 1) % 50}"]))
    seen: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            seen.append(len(registry_index(db).facts))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and seen == [50] * 8
