from types import SimpleNamespace

import pytest

from mlx_platform.composition import rules
from mlx_platform.composition.resources import Capacity, resource_shortfall


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
    me = rules.facts_from(
        name="cand", version="1.0.0", type="experiment_tracker", meta=candidate_meta
    )
    found = rules.conflicts_with_active(
        me, [rules.facts_of_row(other)], frozenset({"experiment_tracker"})
    )
    assert [c.conflict_type for c in found] == [expected]
    assert found[0].resolution_options


def test_conflict_specifier_respects_versions() -> None:
    me = rules.facts_from(
        name="cand", version="1.0.0", type="x", meta={"conflicts_with": ["old<2"]}
    )
    found = rules.conflicts_with_active(me, [rules.facts_of_row(row("old", "2.5"))], frozenset())
    assert found == []


def test_missing_dependencies_say_whether_a_registered_version_would_do() -> None:
    registered = [
        rules.facts_of_row(row("base", "1.5", status="inactive")),
        rules.facts_of_row(row("base", "2.1", status="registered")),
    ]

    def unmet(requires: list[str], *, need_active: bool) -> list[rules.MissingDependency]:
        me = rules.facts_from(name="app", version="1.0", type="", meta={"requires": requires})
        return rules.unmet_requirements(me, registered, need_active=need_active)

    missing = unmet(["base>=2", "absent"], need_active=True)
    assert [(m.name, m.satisfiable_by_registered) for m in missing] == [
        ("base", True),
        ("absent", False),
    ]
    assert unmet(["base>=2"], need_active=False) == []


def test_a_conflict_with_the_singleton_winner_reads_the_same_from_every_path() -> None:
    """Activation's check and the database constraint's race path build it in one place."""
    me = rules.facts_from(name="wandb", version="1.0", type="experiment_tracker", meta={})
    mlflow = rules.facts_of_row(row("mlflow", type="experiment_tracker"))
    (found,) = rules.conflicts_with_active(me, [mlflow], frozenset({"experiment_tracker"}))
    assert found == rules.Conflict.singleton("wandb", "experiment_tracker", "mlflow", mlflow.id)
    assert found.message == (
        "Plugin 'wandb' conflicts with active plugin 'mlflow': "
        "only one 'experiment_tracker' can be active"
    )
    assert found.resolution_options == [
        "Deactivate 'mlflow' before activating 'wandb'",
        "Use 'mlflow' for experiment tracking instead",
    ]


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
