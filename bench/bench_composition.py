"""validate-composition: what the endpoint's core function does, against a real registry.

The registry (SQLite, written through the storage layer) holds 1,000 plugins, a fifth of
them in three versions, with 5,000 ``requires`` and 500 ``conflicts_with`` among them, and
20 more plugins that only need each other. Entries give an exact version (half), a
specifier (a quarter) or nothing; versioned requires and conflicts leave the resolver real
choices to make. A hidden assignment satisfies every constraint, so the composition is valid
and the answer must say so.

Figures (medians): the 1,000-plugin composition (target 200 ms), the 20-plugin one
(target 5 ms), both with the registry index warm (the registry did not change since the
previous call; the change-marker query is included), and the 1,000-plugin one right after a
registry change (index rebuilt from the database), and a 1,000-plugin composition where
every plugin has three versions and no entry pins one. Baseline: a bare loop checking the same
requires against the answer's versions with pre-parsed ``packaging`` requirements, the
least any validation has to do.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from _common import Figure
from packaging.requirements import Requirement
from packaging.version import Version

from mlx_platform.core import composition
from mlx_platform.core.context import Core
from mlx_platform.settings import Settings
from mlx_platform.storage import PluginRow
from mlx_platform.storage.repositories import PluginRepository
from mlx_platform.wire import CompositionEntry, CompositionResult

TYPES = ["data_source", "ml_platform", "feature_store", "model_registry", "orchestrator"]


def _family(
    rng: random.Random, prefix: str, n: int, requires: int, conflicts: int, multi_share: float
) -> tuple[list[dict[str, Any]], list[CompositionEntry], int, int]:
    """Plugin definitions and composition entries for `n` plugins that a hidden assignment
    (`intended`) satisfies: every requires allows it, every conflict excludes it."""
    names = [f"{prefix}_{i:04d}" for i in range(n)]
    multi = set(rng.sample(names, int(n * multi_share)))
    intended = {
        name: (rng.choice(["1.5.0", "2.0.0"]) if name in multi else "1.0.0") for name in names
    }
    reqs: dict[str, list[str]] = defaultdict(list)
    for _ in range(requires):
        a, b = rng.sample(names, 2)
        if b in multi:
            spec = rng.choice(
                ["", ">=1.0", "<2" if intended[b] == "1.5.0" else ">=1.5", f"=={intended[b]}"]
            )
        else:
            spec = rng.choice(["", ">=1.0", ">=0.9,<2"])
        reqs[a].append(b + spec)
    confs: dict[str, list[str]] = defaultdict(list)
    for _ in range(conflicts):
        a, b = rng.sample(names, 2)
        if b in multi:
            confs[a].append(b + (">=2" if intended[b] == "1.5.0" else "<1.5"))
        else:
            confs[a].append(b + "<1.0")
    points = [f"point_{i}" for i in range(200)]
    bodies = []
    for name in names:
        meta = {
            "requires": reqs[name],
            "conflicts_with": confs[name],
            "integration_points": rng.sample(points, 2),
            "min_memory_mb": 16 if rng.random() < 0.1 else 0,
            "supported_platforms": ["linux", "darwin", "win32"],
            "min_python_version": "3.11",
        }
        plugin_type = rng.choice(TYPES)
        for version in ["1.0.0", "1.5.0", "2.0.0"] if name in multi else ["1.0.0"]:
            bodies.append({"name": name, "version": version, "type": plugin_type, "meta": meta})
    entries = []
    for name in names:
        r = rng.random()
        if r < 0.5:
            entries.append(CompositionEntry(name=name, version=intended[name]))
        elif r < 0.75:
            entries.append(CompositionEntry(name=name, version=">=1.0"))
        else:
            entries.append(CompositionEntry(name=name))
    return bodies, entries, sum(len(v) for v in reqs.values()), sum(len(v) for v in confs.values())


def _store(core: Core, bodies: list[dict[str, Any]]) -> None:
    with core.db.transaction() as session:
        repo = PluginRepository(session)
        for b in bodies:
            session.add(
                PluginRow(
                    id=repo.next_id(b["name"]),
                    name=b["name"],
                    type=b["type"],
                    version=b["version"],
                    description="",
                    class_path="bench.Plugin",
                    status="registered",
                    loadable=True,
                    plugin_metadata=b["meta"],
                    configuration_schema={},
                    configuration={},
                    class_info={},
                    extra={},
                )
            )
            session.flush()  # what PluginRepository.add (removed) did


def _median_ms(func: Any, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        func()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def run() -> list[Figure]:
    rng = random.Random(7)
    big_bodies, big_entries, n_requires, n_conflicts = _family(rng, "bench", 1000, 5000, 500, 0.2)
    small_bodies, small_entries, _, _ = _family(rng, "small", 20, 60, 6, 0.2)
    assert (n_requires, n_conflicts) == (5000, 500)
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        core = Core.create(
            Settings(home=Path(tmp), seed_builtin_plugins=False, capacity_memory_mb=64000)
        )
        core.db.migrate()
        _store(core, big_bodies + small_bodies)

        def big() -> CompositionResult:
            answer = composition.validate_composition(core, big_entries)
            assert answer.composition_valid, answer.conflicts[:3]
            assert len(answer.resolved) == 1000
            return answer

        def small() -> CompositionResult:
            answer = composition.validate_composition(core, small_entries)
            assert answer.composition_valid, answer.conflicts[:3]
            return answer

        def bare_loop(answer: CompositionResult, bodies: list[dict[str, Any]]) -> Any:
            """Check the answer's requires one by one: the least a validation must do."""
            chosen = {r["name"]: Version(r["version"]) for r in answer.resolved}
            parsed = [
                Requirement(text)
                for b in bodies
                if Version(b["version"]) == chosen[b["name"]]
                for text in b["meta"]["requires"]
            ]

            def loop() -> int:
                for req in parsed:
                    assert req.specifier.contains(chosen[req.name], prereleases=True)
                return len(parsed)

            return loop

        answer = big()
        big_loop = bare_loop(answer, big_bodies)
        assert big_loop() == n_requires
        base = _median_ms(big_loop, 15)
        warm = _median_ms(big, 15)
        figures.append(
            Figure(
                "composition_1000_plugins_5000_requires_500_conflicts",
                warm,
                "ms",
                200.0,
                base,
                "(bare loop over the same 5,000 requires)",
            )
        )
        small_loop = bare_loop(small(), small_bodies)
        figures.append(
            Figure(
                "composition_20_plugins",
                _median_ms(small, 50),
                "ms",
                5.0,
                _median_ms(small_loop, 50),
                f"(bare loop over the same {small_loop()} requires)",
            )
        )

        def cold() -> None:
            # A registry change (here: a status write) moves the change marker: the next
            # validation rebuilds the index from the database.
            with core.db.transaction() as session:
                row = session.get(PluginRow, answer.resolved[0]["id"])
                assert row is not None
                row.status_reason = f"touched {time.perf_counter()}"
            t0 = time.perf_counter()
            big()
            samples.append((time.perf_counter() - t0) * 1000)

        samples: list[float] = []
        for _ in range(7):
            cold()
        figures.append(
            Figure(
                "composition_1000_after_registry_change",
                statistics.median(samples),
                "ms",
                200.0,
                warm,
                "(same composition, index warm)",
            )
        )
        core.db.dispose()

    # The hard case: every plugin in three versions and no entry pinned, so propagation
    # settles little and one large group is left to choose (resolvelib alone is quadratic
    # in the group's size there; see composition.resolver).
    rng = random.Random(11)
    bodies, entries, _, _ = _family(rng, "unpinned", 1000, 5000, 500, 1.0)
    entries = [CompositionEntry(name=e.name) for e in entries]
    with tempfile.TemporaryDirectory() as tmp:
        core = Core.create(
            Settings(home=Path(tmp), seed_builtin_plugins=False, capacity_memory_mb=64000)
        )
        core.db.migrate()
        _store(core, bodies)

        def unpinned() -> None:
            answer = composition.validate_composition(core, entries)
            assert answer.composition_valid, answer.conflicts[:3]
            assert len(answer.resolved) == 1000

        unpinned()
        figures.append(
            Figure(
                "composition_1000_unpinned_3_versions_each",
                _median_ms(unpinned, 15),
                "ms",
                200.0,
                warm,
                "(the mixed 1,000-plugin composition)",
            )
        )
        core.db.dispose()
    return figures
