"""What the resolver reasons with: the registry as it sees it (:class:`Catalog`, inside a
:class:`RegistryIndex` with every parsed version), the reasons a version is (not) acceptable
(:class:`Constraint`), one plugin during a solve (:class:`Slot`), and what a solve answers
(:class:`Outcome`, :class:`Failure`). The algorithm is described in ``composition.resolver``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mlx_platform.composition.facts import Facts, Spec

# ---------------------------------------------------------------- the registry, as the solver sees it


class Catalog:
    """Registered plugin versions by canonical name (newest first), and who mentions whom."""

    def __init__(self, facts: Iterable[Facts]) -> None:
        by_key: dict[str, list[Facts]] = {}
        for f in facts:
            by_key.setdefault(f.key, []).append(f)
        for versions in by_key.values():
            versions.sort(key=lambda f: f.sort_key, reverse=True)
        self.by_key = by_key
        # mentions[k]: (version, "requires" | "conflicts", spec) for every registered version
        # whose metadata names k: what must be re-checked when k's version becomes known.
        mentions: dict[str, list[tuple[Facts, str, Spec]]] = {}
        for versions in by_key.values():
            for f in versions:
                for spec in f.requires:
                    if spec.key != f.key:
                        mentions.setdefault(spec.key, []).append((f, "requires", spec))
                for spec in f.conflicts_with:
                    if spec.key != f.key:
                        mentions.setdefault(spec.key, []).append((f, "conflicts", spec))
        self.mentions = mentions

    def versions(self, key: str) -> list[Facts]:
        return self.by_key.get(key, [])

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_key.values())


@dataclass(frozen=True)
class RegistryIndex:
    """Every registered plugin version, parsed, as of `marker` (``core.composition`` keeps
    one per database and rebuilds it when the marker moves)."""

    marker: tuple[Any, ...]
    facts: tuple[Facts, ...]
    catalog: Catalog


def build_index(facts: Iterable[Facts], marker: tuple[Any, ...] = ()) -> RegistryIndex:
    facts = tuple(facts)
    return RegistryIndex(marker, facts, Catalog(facts))


# ---------------------------------------------------------------- constraints


@dataclass(eq=False)
class Constraint:
    """One reason why some versions of plugin `target` are (not) acceptable.

    kind ``root``: the composition asks for `spec` (the plugin must be in the set);
    ``requires``: `origin` requires `spec` (idem); ``conflicts``: `origin` declares
    ``conflicts_with`` `spec` (if in the set, the plugin must be outside `spec`);
    ``excludes``: the versions in `excluded` cannot be chosen because of `origin`, a version
    already in the set (their own ``requires`` or ``conflicts_with`` say so: `blame`).
    """

    kind: str
    target: str
    origin: Facts | None
    spec: Spec | None = None
    excluded: frozenset[str] = frozenset()
    blame: str = ""
    note: str = ""

    @property
    def positive(self) -> bool:
        return self.kind in ("root", "requires")

    def allows(self, candidate: Facts) -> bool:
        if self.kind == "excludes":
            return candidate.id not in self.excluded
        assert self.spec is not None
        inside = self.spec.allows(candidate.version)
        return not inside if self.kind == "conflicts" else inside

    def group_key(self) -> tuple[Any, ...]:
        origin = self.origin.key if self.origin is not None else None
        detail = self.spec.raw if self.spec is not None else self.note
        return (self.kind, origin, detail)

    def describe(self) -> str:
        spec = self.spec.raw if self.spec is not None else ""
        if self.kind == "root":
            return f"the composition asks for '{spec}'"
        assert self.origin is not None
        if self.kind == "requires":
            return f"{self.origin.title()} requires '{spec}'"
        if self.kind == "conflicts":
            return f"{self.origin.title()} conflicts with '{spec}'"
        return self.note


Group = list[Constraint]


@dataclass(eq=False)
class Slot:
    """One plugin (by canonical name) during a solve."""

    key: str
    name: str
    rows: list[Facts]  # every registered version, newest first
    base: list[Facts]  # the versions that can run here
    domain: list[Facts]  # the versions every constraint so far allows
    constraints: list[Constraint] = field(default_factory=list)
    present: bool = False  # some positive constraint puts it in the set
    requested: bool = False  # an entry of the composition names it
    via: Constraint | None = None  # the first positive constraint: why it is in the set
    fixed: Facts | None = None
    failed: bool = False


@dataclass
class Failure:
    """A plugin no registered version of which fits, and the smallest explanation of why."""

    slot: Slot
    conflict_type: str
    groups: list[Group]  # the minimal constraints, each group one author's
    incompatible: list[Facts]  # versions that would fit but cannot run here
    search: bool = False  # found by the resolver's search (not by propagation)
    gave_up: bool = False  # the search hit its round limit


@dataclass
class Outcome:
    slots: dict[str, Slot]
    chosen: dict[str, Facts]  # the set, when one exists (composition order, then pulled in)
    failures: list[Failure]
    fallback: dict[str, Facts]  # when not: a best-effort pick, for warnings and synergies
    searched_groups: int = 0
    searched_plugins: int = 0
    rescued_groups: int = 0  # groups resolvelib gave up on or refused, settled by search
    greedy_groups: int = 0  # large groups settled by a checked newest-first pick

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class Limits:
    """How far a solve may go before it reports what it has."""

    max_rounds_per_plugin: int = 60  # resolvelib rounds per plugin of a group (plus 100)
    search_budget: int = 20000  # tries of the complete search, per call
    greedy_from: int = 64  # groups this large first try a checked newest-first pick
    core_limit: int = 160  # most constraints a multi-plugin explanation is cut from
