from types import SimpleNamespace

import pytest

from mlx_platform.core import rules
from mlx_platform.core.resources import Capacity, resource_shortfall


def row(
    name: str, version: str = "1.0.0", type: str = "data_source", status: str = "active", **meta
):
    return SimpleNamespace(
        id=f"plugin_{name}_001",
        name=name,
        version=version,
        type=type,
        status=status,
        plugin_metadata=meta,
    )


def test_spec_parsing_accepts_names_and_specifiers() -> None:
    spec = rules.parse_spec("mlflow>=2.0")
    assert spec.matches("mlflow", "2.1.0")
    assert not spec.matches("mlflow", "1.8.0")
    assert rules.parse_spec("feast").matches("feast", "0.1")
    with pytest.raises(ValueError):
        rules.parse_spec("bad spec!!")


@pytest.mark.parametrize(
    ("candidate_meta", "other", "expected"),
    [
        ({"conflicts_with": ["wandb"]}, row("wandb"), "explicit_conflict"),
        ({}, row("wandb", conflicts_with=["cand"]), "explicit_conflict"),
        ({}, row("cand", version="0.9"), "version_conflict"),
        ({}, row("mlflow", type="experiment_tracker"), "singleton_type"),
    ],
)
def test_conflict_types(candidate_meta, other, expected) -> None:
    found = rules.find_conflicts(
        "cand",
        "1.0.0",
        "experiment_tracker",
        candidate_meta,
        [other],
        frozenset({"experiment_tracker"}),
    )
    assert [c.conflict_type for c in found] == [expected]
    assert found[0].resolution_options


def test_conflict_specifier_respects_versions() -> None:
    found = rules.find_conflicts(
        "cand", "1.0.0", "x", {"conflicts_with": ["old<2"]}, [row("old", "2.5")], frozenset()
    )
    assert found == []


def test_missing_dependencies_say_whether_a_registered_version_would_do() -> None:
    registered = [row("base", "1.5", status="inactive"), row("base", "2.1", status="registered")]
    missing = rules.missing_dependencies(
        {"requires": ["base>=2", "absent"]}, registered, need_active=True
    )
    assert [(m.name, m.satisfiable_by_registered) for m in missing] == [
        ("base", True),
        ("absent", False),
    ]
    assert (
        rules.missing_dependencies({"requires": ["base>=2"]}, registered, need_active=False) == []
    )


def test_resource_shortfall_counts_active_claims() -> None:
    cap = Capacity(memory_mb=1000, cpu_cores=2, gpus=0)
    claimed = [{"min_memory_mb": 600, "min_cpu_cores": 1}]
    short = resource_shortfall(cap, claimed, {"min_memory_mb": 600, "gpu_required": True})
    assert short["memory_mb"]["available"] == 400
    assert short["gpus"]["required"] == 1
    assert resource_shortfall(cap, claimed, {"min_memory_mb": 400, "min_cpu_cores": 1}) is None


def test_python_requirements_report_missing_and_wrong_versions() -> None:
    meta = {
        "python_requirements": [
            "packaging>=1",
            "packaging<1",
            "surely-not-installed-mlx-pkg",
            "pywin32; sys_platform == 'win32'",
        ]
    }
    missing = rules.missing_python_requirements(meta)
    assert len(missing) == 2
    assert missing[0].startswith("packaging<1 (installed: ")
    assert missing[1] == "surely-not-installed-mlx-pkg (not installed)"


def test_bad_python_requirement_is_a_metadata_problem() -> None:
    assert "metadata.python_requirements[0]" in rules.check_metadata(
        {"python_requirements": ["not valid!!"]}
    )
