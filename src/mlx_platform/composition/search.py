"""Step 2 of a solve, search: the plugins propagation left with several possible versions
(and those their versions may pull in), split into independent groups, each settled by a
checked newest-first pick, by ``resolvelib`` (the backtracking resolver pip uses) through
:class:`_Provider`, or by :func:`exhaustive`, a complete backtracking search, when
resolvelib's answer fails its check or it gives up. See ``composition.resolver`` for why.

:func:`search` returns the groups it found no set for (:class:`Unsolved`); the resolver has
them explained (``composition.explain``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from resolvelib import AbstractProvider, BaseReporter, ResolutionImpossible
from resolvelib.resolvers import Resolution, ResolutionTooDeep
from resolvelib.structs import RequirementInformation

from mlx_platform.composition.facts import Facts, Spec
from mlx_platform.composition.model import Constraint, Limits, Outcome, Slot
from mlx_platform.composition.propagation import Propagation

# ---------------------------------------------------------------- resolvelib provider


@dataclass(frozen=True, eq=False)
class _Absent:
    """The candidate "not in the set", for a plugin only conflicts_with entries name."""

    key: str
    id: str = "\0absent"


Candidate = Facts | _Absent


@dataclass(frozen=True, eq=False)
class _Req:
    key: str
    positive: bool
    constraint: Constraint | None = None  # None: the root requirement of a slot in the set
    allowed: frozenset[str] = frozenset()  # ... which may take these versions (by id)

    def allows(self, candidate: Candidate) -> bool:
        if isinstance(candidate, _Absent):
            return not self.positive
        if self.constraint is None:
            return candidate.id in self.allowed
        return self.constraint.allows(candidate)


class _Provider(AbstractProvider[_Req, Candidate, str]):
    def __init__(self, slots: Mapping[str, Slot], fixed: Mapping[str, Facts], scope: set[str]):
        self.slots = slots
        self.fixed = fixed
        self.scope = scope
        self._absent: dict[str, _Absent] = {}
        self._deps: dict[str, list[_Req]] = {}

    def identify(self, requirement_or_candidate: _Req | Candidate) -> str:
        return requirement_or_candidate.key

    def get_preference(
        self,
        identifier: str,
        resolutions: Mapping[str, Candidate],
        candidates: Mapping[str, Iterator[Candidate]],
        information: Mapping[str, Iterator[RequirementInformation[_Req, Candidate]]],
        backtrack_causes: Sequence[RequirementInformation[_Req, Candidate]],
    ) -> Any:
        caused = any(
            c.requirement.key == identifier or (c.parent is not None and c.parent.key == identifier)
            for c in backtrack_causes
        )
        count = sum(1 for _ in candidates[identifier])
        return (not caused, count, identifier)

    def find_matches(
        self,
        identifier: str,
        requirements: Mapping[str, Iterator[_Req]],
        incompatibilities: Mapping[str, Iterator[Candidate]],
    ) -> list[Candidate]:
        reqs = list(requirements[identifier])
        bad = {id(c) for c in incompatibilities[identifier]}
        if not any(r.positive for r in reqs):
            absent = self._absent.setdefault(identifier, _Absent(identifier))
            return [] if id(absent) in bad else [absent]
        return [
            c
            for c in self.slots[identifier].domain
            if id(c) not in bad and all(r.allows(c) for r in reqs)
        ]

    def is_satisfied_by(self, requirement: _Req, candidate: Candidate) -> bool:
        return requirement.allows(candidate)

    def get_dependencies(self, candidate: Candidate) -> list[_Req]:
        if isinstance(candidate, _Absent):
            return []
        deps = self._deps.get(candidate.id)
        if deps is None:
            deps = []
            for spec in candidate.requires:
                if spec.key != candidate.key and spec.key not in self.fixed:
                    c = Constraint("requires", spec.key, candidate, spec)
                    deps.append(_Req(spec.key, True, c))
            for spec in candidate.conflicts_with:
                if (
                    spec.key != candidate.key
                    and spec.key not in self.fixed
                    and spec.key in self.scope
                ):
                    c = Constraint("conflicts", spec.key, candidate, spec)
                    deps.append(_Req(spec.key, False, c))
            self._deps[candidate.id] = deps
        return deps


class _OutOfBudget(Exception):
    pass


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        root = parent.setdefault(x, x)
        while root != parent[root]:
            root = parent[root]
        while x != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


# ---------------------------------------------------------------- the groups


@dataclass
class Unsolved:
    """A group no set was found for, and what the search knows of why."""

    members: list[Slot]
    verdict: str | None  # None: no set exists; "budget": the complete search could not tell
    # resolvelib's ResolutionImpossible causes, when that is how it ended; None otherwise
    causes: list[RequirementInformation[Any, Any]] | None = None


def independent_groups(state: Propagation) -> tuple[dict[str, Slot], list[list[Slot]]]:
    """The plugins left to choose (in the set, not fixed) and every plugin their versions
    may pull in (brought into `state`), and their split into groups no constraint links."""
    residual = [s for s in state.slots.values() if s.present and s.fixed is None]
    if not residual:
        return {}, []
    scope: dict[str, Slot] = {s.key: s for s in residual}
    uf = _UnionFind()
    stack = list(residual)
    conflict_edges: list[tuple[str, str]] = []
    while stack:
        slot = stack.pop()
        uf.find(slot.key)
        for c in slot.domain:
            for spec in c.requires:
                if spec.key == slot.key or spec.key in state.fixed:
                    continue
                if spec.key not in scope:
                    target = state.slot(spec.key, spec.name)
                    scope[spec.key] = target
                    stack.append(target)
                uf.union(slot.key, spec.key)
            for spec in c.conflicts_with:
                if spec.key != slot.key and spec.key not in state.fixed:
                    conflict_edges.append((slot.key, spec.key))
    for a, b in conflict_edges:
        if b in scope:
            uf.union(a, b)
    state.queue.clear()  # conditional slots were constrained: not to be settled
    groups: dict[str, list[Slot]] = {}
    for key, slot in scope.items():
        groups.setdefault(uf.find(key), []).append(slot)
    return scope, list(groups.values())


def search(state: Propagation, outcome: Outcome, limits: Limits) -> list[Unsolved]:
    """Settle every group: the sets found go to ``outcome.chosen`` (the counters too), the
    groups without one are returned, in order."""
    scope, groups = independent_groups(state)
    provider = _Provider(scope, state.fixed, set(scope))
    unsolved: list[Unsolved] = []
    for members in groups:
        outcome.searched_groups += 1
        outcome.searched_plugins += len(members)
        if len(members) >= limits.greedy_from:
            # resolvelib scans every criterion each round: O(n^2) for one group of n. On
            # large groups a newest-first pick is tried first, and kept only if it meets
            # every constraint (checked): then it is an answer resolvelib could give too.
            # Otherwise resolvelib searches.
            picked = newest_first(members)
            if picked is not None and consistent(state, members, picked):
                outcome.chosen.update(picked)
                outcome.greedy_groups += 1
                continue
        found = _resolve_group(state, provider, members, limits, outcome)
        if isinstance(found, Unsolved):
            unsolved.append(found)
        else:
            outcome.chosen.update(found)
    return unsolved


def _resolve_group(
    state: Propagation,
    provider: _Provider,
    members: list[Slot],
    limits: Limits,
    outcome: Outcome,
) -> dict[str, Facts] | Unsolved:
    """One group by resolvelib, its answer checked; the complete search decides when
    resolvelib fails or its answer does not hold."""
    roots = [
        _Req(s.key, True, None, frozenset(d.id for d in s.domain)) for s in members if s.present
    ]
    # Resolution (not Resolver): Resolver.resolve's result graph walk recurses without a
    # visited set and overflows the stack on a cycle of pins the root no longer reaches
    # (resolvelib 1.2.1); the reachable set is computed by _reached instead.
    resolution: Resolution[_Req, Candidate, str] = Resolution(provider, BaseReporter())
    rounds = 100 + limits.max_rounds_per_plugin * len(members)
    try:
        mapping = resolution.resolve(roots, max_rounds=rounds).mapping
    except (ResolutionImpossible, ResolutionTooDeep) as exc:
        # resolvelib replaces a pin that a later requirement rules out instead of
        # backtracking over it; with conflicts_with cycles it can go round in circles
        # (ResolutionTooDeep) although a set exists. Its verdict is checked by a complete
        # search before it is reported (bounded: `search_budget` tries).
        found = exhaustive(members, limits.search_budget)
        if isinstance(found, dict):
            outcome.rescued_groups += 1
            return found
        for member in members:
            if member.present and member.domain:
                outcome.fallback[member.key] = member.domain[0]
        causes = list(exc.causes) if isinstance(exc, ResolutionImpossible) else None
        return Unsolved(members, found, causes)
    picked = _reached(provider, mapping, roots)
    if consistent(state, members, picked):
        return picked
    # resolvelib drops a pin's requirements when a conflicts_with briefly rules the pin out,
    # and keeps the pin when it fits again: its answer is checked, and the complete search
    # decides when the check fails.
    found = exhaustive(members, limits.search_budget)
    outcome.rescued_groups += 1
    return found if isinstance(found, dict) else Unsolved(members, found)


def _reached(
    provider: _Provider, mapping: Mapping[str, Candidate], roots: list[_Req]
) -> dict[str, Facts]:
    """What the composition needs of resolvelib's pins: those reached from the roots through
    requires (a pin left over from an abandoned branch is not part of the set)."""
    walk = [r.key for r in roots]
    reached: set[str] = set()
    while walk:
        key = walk.pop()
        if key in reached:
            continue
        reached.add(key)
        cand = mapping.get(key)
        if isinstance(cand, Facts):
            walk.extend(d.key for d in provider.get_dependencies(cand) if d.positive)
    return {
        key: cand for key, cand in mapping.items() if key in reached and isinstance(cand, Facts)
    }


# ---------------------------------------------------------------- newest first, checks, exhaustive


def newest_first(members: list[Slot], rounds: int = 25) -> dict[str, Facts] | None:
    """Each needed plugin at the newest version the current versions of the others allow,
    repeated until nothing moves (then every constraint holds) or `rounds` pass."""
    scope = {s.key: s for s in members}
    present = [s.key for s in members if s.present]
    choice: dict[str, Facts] = {}
    for _round in range(rounds):
        on: dict[str, list[tuple[bool, Spec]]] = {}
        need = dict.fromkeys(present)
        for f in choice.values():
            for spec in f.requires:
                if spec.key in scope and spec.key != f.key:
                    on.setdefault(spec.key, []).append((True, spec))
                    need[spec.key] = None
            for spec in f.conflicts_with:
                if spec.key in scope and spec.key != f.key:
                    on.setdefault(spec.key, []).append((False, spec))
        choice = {k: v for k, v in choice.items() if k in need}
        moved = False
        for key in need:
            said = on.get(key, ())
            current = choice.get(key)
            if current is not None and all(
                spec.allows(current.version) == inside for inside, spec in said
            ):
                continue
            pick = next(
                (
                    c
                    for c in scope[key].domain
                    if all(spec.allows(c.version) == inside for inside, spec in said)
                ),
                None,
            )
            if pick is None:
                return None
            choice[key] = pick
            moved = True
        if not moved:
            return choice
    return None


def consistent(state: Propagation, members: list[Slot], found: Mapping[str, Facts]) -> bool:
    """Whether `found` (with the fixed plugins) meets every constraint of the group."""
    for slot in members:
        if slot.present and slot.key not in found:
            return False
    for key, f in found.items():
        if f not in state.slots[key].domain:
            return False
        for spec in f.requires:
            if spec.key != key:
                got = found.get(spec.key) or state.fixed.get(spec.key)
                if got is None or not spec.allows(got.version):
                    return False
        for spec in f.conflicts_with:
            if spec.key != key:
                got = found.get(spec.key) or state.fixed.get(spec.key)
                if got is not None and spec.allows(got.version):
                    return False
    return True


def exhaustive(
    members: list[Slot], budget: int, ignore: frozenset[Any] = frozenset()
) -> dict[str, Facts] | str | None:
    """A complete backtracking search over one group: the set it finds, None when there
    is none, or "budget" when `budget` tries were not enough to tell.

    `ignore` leaves constraints out (for explanations): ``("slot", constraint)`` entries
    and ``("dep", author key, kind, target key)`` for what an author's versions say."""
    if len(members) > 2000:
        return "budget"
    scope: dict[str, list[Facts]] = {}
    need: dict[str, int] = {}
    for slot in members:
        kept = [c for c in slot.constraints if ("slot", c) not in ignore]
        if len(kept) == len(slot.constraints):
            scope[slot.key] = slot.domain
            present = slot.present
        else:
            scope[slot.key] = [d for d in slot.base if all(c.allows(d) for c in kept)]
            present = any(c.positive for c in kept)
        need[slot.key] = 1 if present else 0
    assigned: dict[str, Facts] = {}
    # What the assigned versions say about each plugin: (inside?, spec) per statement.
    said: dict[str, list[tuple[bool, Spec]]] = {k: [] for k in scope}
    statements: dict[str, list[tuple[str, bool, Spec]]] = {}
    tries = 0

    def statements_of(cand: Facts) -> list[tuple[str, bool, Spec]]:
        out = statements.get(cand.id)
        if out is None:
            out = [
                (spec.key, kind == "requires", spec)
                for kind, specs in (
                    ("requires", cand.requires),
                    ("conflicts", cand.conflicts_with),
                )
                for spec in specs
                if spec.key in scope
                and spec.key != cand.key
                and ("dep", cand.key, kind, spec.key) not in ignore
            ]
            statements[cand.id] = out
        return out

    def fits(key: str, cand: Facts) -> bool:
        if not all(spec.allows(cand.version) == inside for inside, spec in said[key]):
            return False
        for target, inside, spec in statements_of(cand):
            got = assigned.get(target)
            if got is not None and spec.allows(got.version) != inside:
                return False
        return True

    def assign(key: str, cand: Facts) -> None:
        assigned[key] = cand
        for target, inside, spec in statements_of(cand):
            said[target].append((inside, spec))
            if inside:
                need[target] += 1

    def unassign(key: str) -> None:
        cand = assigned.pop(key)
        for target, inside, _spec in statements_of(cand):
            said[target].pop()
            if inside:
                need[target] -= 1

    def dfs() -> dict[str, Facts] | None:
        nonlocal tries
        left = [k for k, n in need.items() if n > 0 and k not in assigned]
        if not left:
            return dict(assigned)
        key = min(left, key=lambda k: len(scope[k]))
        for cand in scope[key]:
            tries += 1
            if tries > budget:
                raise _OutOfBudget
            if fits(key, cand):
                assign(key, cand)
                found = dfs()
                if found is not None:
                    return found
                unassign(key)
        return None

    try:
        return dfs()
    except (_OutOfBudget, RecursionError):
        return "budget"
