"""Version choice for a composition: which registered version of each plugin, and which
registered plugins the set needs besides the ones asked for.

The problem is pip's: every plugin in the set must satisfy the composition's entries and the
``requires`` of every other member, and no member may match a ``conflicts_with`` entry of
another one; only versions that can run here are candidates (:attr:`Facts.incompatible`).
It is solved in two steps, both exact (nothing is guessed):

1. **Propagation.** A plugin whose candidates the constraints narrow to one version has no
   choice left: it is fixed, its ``requires`` pull the named plugins into the set and narrow
   their candidates, its ``conflicts_with`` narrow the candidates of the peers, and the
   versions of other plugins whose own ``requires``/``conflicts_with`` it violates are
   excluded. Repeated until nothing changes. A plugin left without candidates is a failure,
   and every such failure is reported (not only the first one). Compositions that pin
   versions (or whose plugins have one registered version) are settled here, in time linear
   in the number of constraints.
2. **Search.** What is left (plugins with several possible versions, and the plugins their
   versions may pull in) is split into independent groups (no constraint between two
   groups) and each group is handed to ``resolvelib``, the backtracking resolver pip uses,
   through :class:`_Provider`. Newest versions are tried first. A plugin that only appears
   in a ``conflicts_with`` is never pulled in (the provider gives it an "absent" candidate).

   resolvelib scans all its criteria every round, so one group of n plugins costs O(n^2)
   (about 1.5 s for n = 1,000). Groups of ``greedy_from`` (64) plugins or more first try a
   newest-first pick (each plugin at the newest version the others' current versions allow,
   until nothing moves); it is kept only if it meets every constraint, which makes it an
   answer resolvelib could give as well. Otherwise resolvelib searches.

   resolvelib's answer is checked too. With ``conflicts_with`` (requirements a pinned
   version can fail later) it can replace pins in circles until its round limit, and it can
   drop a pin's requirements when a conflict briefly rules the pin out, then keep the pin.
   So a success is verified against every constraint, and when the check fails, or when
   resolvelib reports ``ResolutionImpossible`` or ``ResolutionTooDeep``, a complete
   backtracking search over the group (bounded by ``search_budget`` tries) decides. The
   tests compare the outcome with brute force on thousands of random registries.

When no set exists, the answer is the *smallest explanation*: for the plugin that ran out of
candidates, the constraints on it (from propagation, and from ``ResolutionImpossible.causes``
after a search), de-duplicated (the constraints one plugin's versions impose count once, as
the union of what its versions allow), then reduced by deletion: a constraint is dropped when
the rest still leaves no candidate. What remains is minimal: remove any one of its
constraints and some registered version fits. When no single plugin's constraints explain
the failure (a chain through several plugins' versions), the same deletion runs over every
constraint of the group with the complete search as the judge. Each constraint comes with
the chain that brought its author into the set (``chain``), and a version that propagation
settled comes with the constraints that settled it (``why_fixed``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from resolvelib import AbstractProvider, BaseReporter, ResolutionImpossible
from resolvelib.resolvers import Resolution, ResolutionTooDeep
from resolvelib.structs import RequirementInformation

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


# ---------------------------------------------------------------- the solver


class Solver:
    """One solve over a catalog: ``Solver(catalog).solve(specs)``."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        max_rounds_per_plugin: int = 60,
        search_budget: int = 20000,
        greedy_from: int = 64,
        core_limit: int = 160,
    ) -> None:
        self.catalog = catalog
        self.search_budget = search_budget
        self.greedy_from = greedy_from
        self.core_limit = core_limit  # most constraints a multi-plugin explanation is cut from
        self.slots: dict[str, Slot] = {}
        self.fixed: dict[str, Facts] = {}
        self.pending: dict[str, list[Constraint]] = {}
        self.queue: deque[Slot] = deque()
        self.failed: list[Slot] = []
        self.max_rounds_per_plugin = max_rounds_per_plugin

    # ------------------------------------------------------------ propagation

    def _slot(self, key: str, name: str) -> Slot:
        slot = self.slots.get(key)
        if slot is not None:
            return slot
        rows = self.catalog.versions(key)
        base = [r for r in rows if r.incompatible is None]
        slot = Slot(key, rows[0].name if rows else name, rows, base, list(base))
        self.slots[key] = slot
        for c in self.pending.pop(key, ()):
            self._constrain(slot, c)
        if self.fixed:
            self._exclude(slot, self._violations_against_fixed(base))
        return slot

    def _violations_against_fixed(
        self, candidates: Iterable[Facts]
    ) -> dict[tuple[int, str], list[tuple[Facts, Facts, Spec]]]:
        """Versions whose own requires/conflicts_with a fixed plugin violates, by culprit."""
        found: dict[tuple[int, str], list[tuple[Facts, Facts, Spec]]] = {}
        fixed = self.fixed
        for c in candidates:
            for spec in c.requires:
                f = fixed.get(spec.key)
                if f is not None and spec.key != c.key and not spec.allows(f.version):
                    found.setdefault((id(f), "requires"), []).append((c, f, spec))
            for spec in c.conflicts_with:
                f = fixed.get(spec.key)
                if f is not None and spec.key != c.key and spec.allows(f.version):
                    found.setdefault((id(f), "conflicts"), []).append((c, f, spec))
        return found

    def _exclude(
        self, slot: Slot, found: Mapping[tuple[int, str], list[tuple[Facts, Facts, Spec]]]
    ) -> None:
        for (_fid, kind), items in found.items():
            culprit = items[0][1]
            versions = ", ".join(dict.fromkeys(c.version for c, _, _ in items))
            specs = ", ".join(dict.fromkeys(f"'{s.raw}'" for _, _, s in items))
            if kind == "requires":
                note = (
                    f"'{slot.name}' {versions} require{'s' if len(items) == 1 else ''} {specs}, "
                    f"which {culprit.title()} does not satisfy"
                )
                blame = "version_conflict"
            else:
                note = (
                    f"'{slot.name}' {versions} declare{'s' if len(items) == 1 else ''} "
                    f"conflicts_with {specs}, which matches {culprit.title()}"
                )
                blame = "explicit_conflict"
            self._constrain(
                slot,
                Constraint(
                    "excludes",
                    slot.key,
                    culprit,
                    excluded=frozenset(c.id for c, _, _ in items),
                    blame=blame,
                    note=note,
                ),
            )

    def _constrain(self, slot: Slot, c: Constraint) -> None:
        slot.constraints.append(c)
        newly_present = c.positive and not slot.present
        if c.positive:
            slot.present = True
            if slot.via is None:
                slot.via = c
        if slot.failed:
            return
        if slot.fixed is not None:
            if not c.allows(slot.fixed):
                slot.failed = True
                self.failed.append(slot)
            return
        before = len(slot.domain)
        slot.domain = [d for d in slot.domain if c.allows(d)]
        if newly_present or len(slot.domain) != before:
            self.queue.append(slot)

    def _settle(self, slot: Slot) -> None:
        if slot.failed or slot.fixed is not None or not slot.present:
            return
        if not slot.domain:
            slot.failed = True
            self.failed.append(slot)
        elif len(slot.domain) == 1:
            self._fix(slot, slot.domain[0])

    def _fix(self, slot: Slot, f: Facts) -> None:
        slot.fixed = f
        self.fixed[slot.key] = f
        for spec in f.requires:
            if spec.key != slot.key:
                target = self._slot(spec.key, spec.name)
                self._constrain(target, Constraint("requires", target.key, f, spec))
        for spec in f.conflicts_with:
            if spec.key == slot.key:
                continue
            c = Constraint("conflicts", spec.key, f, spec)
            other = self.slots.get(spec.key)
            if other is None:
                self.pending.setdefault(spec.key, []).append(c)
            else:
                self._constrain(other, c)
        # Versions of undecided plugins whose own metadata rules out f.
        touched: dict[str, list[Facts]] = {}
        for cand, _kind, _spec in self.catalog.mentions.get(slot.key, ()):
            other = self.slots.get(cand.key)
            if other is None or other is slot or other.fixed is not None or other.failed:
                continue
            touched.setdefault(cand.key, []).append(cand)
        for key, cands in touched.items():
            other = self.slots[key]
            live = [c for c in dict.fromkeys(cands) if c in other.domain]
            if live:
                self._exclude(other, self._violations_against_fixed(live))

    def _propagate(self) -> None:
        while self.queue:
            self._settle(self.queue.popleft())

    # ------------------------------------------------------------ search

    def _search(self, outcome: Outcome) -> None:
        residual = [s for s in self.slots.values() if s.present and s.fixed is None]
        if not residual:
            return
        scope: dict[str, Slot] = {s.key: s for s in residual}
        uf = _UnionFind()
        stack = list(residual)
        conflict_edges: list[tuple[str, str]] = []
        while stack:
            slot = stack.pop()
            uf.find(slot.key)
            for c in slot.domain:
                for spec in c.requires:
                    if spec.key == slot.key or spec.key in self.fixed:
                        continue
                    if spec.key not in scope:
                        target = self._slot(spec.key, spec.name)
                        scope[spec.key] = target
                        stack.append(target)
                    uf.union(slot.key, spec.key)
                for spec in c.conflicts_with:
                    if spec.key != slot.key and spec.key not in self.fixed:
                        conflict_edges.append((slot.key, spec.key))
        for a, b in conflict_edges:
            if b in scope:
                uf.union(a, b)
        self.queue.clear()  # conditional slots were constrained: not to be settled
        groups: dict[str, list[Slot]] = {}
        for key, slot in scope.items():
            groups.setdefault(uf.find(key), []).append(slot)
        provider = _Provider(scope, self.fixed, set(scope))
        for members in groups.values():
            roots = [
                _Req(s.key, True, None, frozenset(d.id for d in s.domain))
                for s in members
                if s.present
            ]
            outcome.searched_groups += 1
            outcome.searched_plugins += len(members)
            if len(members) >= self.greedy_from:
                # resolvelib scans every criterion each round: O(n^2) for one group of n.
                # On large groups a newest-first pick is tried first, and kept only if it
                # meets every constraint (checked): then it is an answer resolvelib could
                # give too. Otherwise resolvelib searches.
                picked_fast = self._newest_first(members)
                if picked_fast is not None and self._consistent(members, picked_fast):
                    outcome.chosen.update(picked_fast)
                    outcome.greedy_groups += 1
                    continue
            # Resolution (not Resolver): Resolver.resolve's result graph walk recurses without
            # a visited set and overflows the stack on a cycle of pins the root no longer
            # reaches (resolvelib 1.2.1); the reachable set is computed below instead.
            resolution: Resolution[_Req, Candidate, str] = Resolution(provider, BaseReporter())
            rounds = 100 + self.max_rounds_per_plugin * len(members)
            try:
                state = resolution.resolve(roots, max_rounds=rounds)
            except (ResolutionImpossible, ResolutionTooDeep) as exc:
                # resolvelib replaces a pin that a later requirement rules out instead of
                # backtracking over it; with conflicts_with cycles it can go round in circles
                # (ResolutionTooDeep) although a set exists. Its verdict is checked by a
                # complete search before it is reported (bounded: `search_budget` tries).
                found = self._exhaustive(members)
                if isinstance(found, dict):
                    outcome.chosen.update(found)
                    outcome.rescued_groups += 1
                    continue
                for member in members:
                    if member.present and member.domain:
                        outcome.fallback[member.key] = member.domain[0]
                if isinstance(exc, ResolutionImpossible):
                    outcome.failures.append(self._explain_search(exc.causes, members))
                else:
                    outcome.failures.append(self._unsolved(members, found))
                continue
            # Keep what the composition needs: pins reached from the roots through requires
            # (a pin left over from an abandoned branch is not part of the set).
            walk = [r.key for r in roots]
            reached: set[str] = set()
            while walk:
                key = walk.pop()
                if key in reached:
                    continue
                reached.add(key)
                cand = state.mapping.get(key)
                if isinstance(cand, Facts):
                    walk.extend(d.key for d in provider.get_dependencies(cand) if d.positive)
            picked = {
                key: cand
                for key, cand in state.mapping.items()
                if key in reached and isinstance(cand, Facts)
            }
            if not self._consistent(members, picked):
                # resolvelib drops a pin's requirements when a conflicts_with briefly rules
                # the pin out, and keeps the pin when it fits again: its answer is checked,
                # and the complete search decides when the check fails.
                found = self._exhaustive(members)
                outcome.rescued_groups += 1
                if not isinstance(found, dict):
                    outcome.failures.append(self._unsolved(members, found))
                    continue
                picked = found
            outcome.chosen.update(picked)

    def _newest_first(self, members: list[Slot], rounds: int = 25) -> dict[str, Facts] | None:
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

    def _unsolved(self, members: list[Slot], verdict: str | None) -> Failure:
        """A group without a set (`verdict` None) or one the search could not finish."""
        if verdict is None:
            core = self._core(members)
            if core is not None:
                return core
        # Too large to cut down: the constraints of the group's plugins, the first 50.
        groups = [[c] for c in _dedupe(c for s in members for c in s.constraints)][:50]
        return Failure(
            members[0], "version_conflict", groups, [], search=True, gave_up=verdict == "budget"
        )

    def _consistent(self, members: list[Slot], found: Mapping[str, Facts]) -> bool:
        """Whether `found` (with the fixed plugins) meets every constraint of the group."""
        for slot in members:
            if slot.present and slot.key not in found:
                return False
        for key, f in found.items():
            if f not in self.slots[key].domain:
                return False
            for spec in f.requires:
                if spec.key != key:
                    got = found.get(spec.key) or self.fixed.get(spec.key)
                    if got is None or not spec.allows(got.version):
                        return False
            for spec in f.conflicts_with:
                if spec.key != key:
                    got = found.get(spec.key) or self.fixed.get(spec.key)
                    if got is not None and spec.allows(got.version):
                        return False
        return True

    def _exhaustive(
        self, members: list[Slot], ignore: frozenset[Any] = frozenset()
    ) -> dict[str, Facts] | str | None:
        """A complete backtracking search over one group: the set it finds, None when there
        is none, or "budget" when `search_budget` tries were not enough to tell.

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
                if tries > self.search_budget:
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

    def _core(self, members: list[Slot]) -> Failure | None:
        """The smallest explanation of a group with no solution when no single plugin's
        constraints explain it: a deletion filter over every constraint of the group (what
        propagation put on its plugins, and what each author's versions require or exclude),
        with the complete search as the judge. None when the search cannot tell."""
        atoms: dict[Any, Group] = {}
        for slot in members:
            for c in _dedupe(slot.constraints):
                atoms[("slot", c)] = [c]
        keys = {s.key for s in members}
        for slot in members:
            for cand in slot.domain:
                for kind, specs in (
                    ("requires", cand.requires),
                    ("conflicts", cand.conflicts_with),
                ):
                    for spec in specs:
                        if spec.key in keys and spec.key != cand.key:
                            atoms.setdefault(("dep", cand.key, kind, spec.key), []).append(
                                Constraint(kind, spec.key, cand, spec)
                            )
        if len(atoms) > self.core_limit or self._exhaustive(members) is not None:
            return None
        kept = list(atoms)
        i = 0
        while i < len(kept):
            trial = kept[:i] + kept[i + 1 :]
            verdict = self._exhaustive(members, frozenset(a for a in atoms if a not in trial))
            if verdict == "budget":
                break
            if verdict is None:
                kept = trial
            else:
                i += 1
        groups = [_dedupe(atoms[a]) for a in kept]
        targets = [g[0].target for g in groups]
        focus = max(dict.fromkeys(targets), key=targets.count) if targets else members[0].key
        kinds = {c.kind for g in groups for c in g}
        blames = {c.blame for g in groups for c in g}
        kind = (
            "explicit_conflict"
            if "conflicts" in kinds or "explicit_conflict" in blames
            else "version_conflict"
        )
        return Failure(self.slots[focus], kind, groups, [], search=True)

    # ------------------------------------------------------------ explanations

    def _explain_search(
        self, causes: Iterable[RequirementInformation[Any, Any]], members: list[Slot]
    ) -> Failure:
        by_key: dict[str, dict[tuple[Any, ...], Group]] = {}
        for info in causes:
            req = info.requirement
            deps = by_key.setdefault(req.key, {})
            if req.constraint is not None:
                c = req.constraint
                origin = c.origin.key if c.origin is not None else None
                deps.setdefault(("dep", c.kind, origin), []).append(c)
        first: Failure | None = None
        for key, dep_groups in by_key.items():
            slot = self.slots[key]
            own = [[c] for c in _dedupe(slot.constraints)]
            groups = own + [_dedupe(g) for g in dep_groups.values()]
            if not _fails(slot, groups):
                continue
            failure = self._failure(slot, groups)
            failure.search = True
            if first is None or _rank(failure) < _rank(first):
                first = failure
        if first is not None:
            return first
        core = self._core(members)
        if core is not None:
            return core
        if not by_key:
            return self._unsolved(members, "budget")
        # The search could not tell within its budget: report the causes unminimized.
        key = next(iter(by_key))
        slot = self.slots[key]
        all_groups = [[c] for c in _dedupe(slot.constraints)] + [
            _dedupe(g) for k in by_key for g in by_key[k].values()
        ]
        return Failure(slot, "version_conflict", all_groups, [], search=True)

    def _failure(self, slot: Slot, groups: list[Group]) -> Failure:
        minimal = minimize(slot, groups)
        incompatible = [
            r
            for r in slot.rows
            if r.incompatible is not None and all(_group_allows(g, r) for g in minimal)
        ]
        return Failure(slot, classify(slot, minimal, incompatible), minimal, incompatible)

    # ------------------------------------------------------------ entry point

    def solve(self, specs: Sequence[Spec]) -> Outcome:
        for spec in specs:
            slot = self._slot(spec.key, spec.name)
            slot.requested = True
            self._constrain(slot, Constraint("root", slot.key, None, spec))
        self._propagate()
        outcome = Outcome(self.slots, {}, [], {})
        if self.failed:
            for slot in dict.fromkeys(self.failed):
                outcome.failures.append(
                    self._failure(slot, [[c] for c in _dedupe(slot.constraints)])
                )
            for slot in self.slots.values():
                if not slot.present:
                    continue
                pick = slot.fixed or (slot.domain[0] if slot.domain else None)
                if pick is not None:
                    outcome.fallback[slot.key] = pick
            return outcome
        for key, f in self.fixed.items():
            outcome.chosen[key] = f
        self._search(outcome)
        if outcome.failures:
            outcome.fallback.update(outcome.chosen)
            outcome.chosen = {}
            return outcome
        order = {k: i for i, k in enumerate(self.slots)}
        outcome.chosen = dict(sorted(outcome.chosen.items(), key=lambda kv: order[kv[0]]))
        return outcome


# ---------------------------------------------------------------- minimal explanations


def _dedupe(constraints: Iterable[Constraint]) -> list[Constraint]:
    seen: dict[tuple[Any, ...], Constraint] = {}
    for c in constraints:
        seen.setdefault(c.group_key() + (id(c.origin),), c)
    return list(seen.values())


def _group_allows(group: Group, candidate: Facts) -> bool:
    """A group is one author's constraints (its versions'): it allows what any of them does."""
    return any(c.allows(candidate) for c in group)


def _fails(slot: Slot, groups: Sequence[Group]) -> bool:
    """The constraints put the plugin in the set, and none of its runnable versions fits."""
    if not any(g[0].positive for g in groups):
        return False
    return not any(all(_group_allows(g, cand) for g in groups) for cand in slot.base)


def minimize(slot: Slot, groups: list[Group], *, limit: int = 64) -> list[Group]:
    """Deletion filter: drop each group the failure does not need. Minimal (irreducible):
    without any one of the groups left, some runnable version would fit."""
    if len(groups) > limit:
        return groups
    kept = list(groups)
    i = 0
    while i < len(kept):
        trial = kept[:i] + kept[i + 1 :]
        if _fails(slot, trial):
            kept = trial
        else:
            i += 1
    return kept


def classify(slot: Slot, minimal: list[Group], incompatible: list[Facts]) -> str:
    """The conflict type a minimal explanation points at.

    No registered version at all: ``missing_dependency``. A version that would fit exists but
    cannot run here: ``incompatible_platform``. A conflicts_with entry takes part:
    ``explicit_conflict``. One constraint alone (an entry, or a requires) that no registered
    version satisfies: ``missing_dependency``. Else two or more constraints that each could
    be met but not together: ``version_conflict``.
    """
    if not slot.rows:
        return "missing_dependency"
    if incompatible:
        return "incompatible_platform"
    kinds = {c.kind for g in minimal for c in g}
    blames = {c.blame for g in minimal for c in g if c.kind == "excludes"}
    if "conflicts" in kinds or "explicit_conflict" in blames:
        return "explicit_conflict"
    if len(minimal) == 1 and minimal[0][0].positive:
        return "missing_dependency"
    return "version_conflict"


def _rank(f: Failure) -> tuple[int, int]:
    order = ["missing_dependency", "incompatible_platform", "explicit_conflict", "version_conflict"]
    return (order.index(f.conflict_type), len(f.groups))


def why_fixed(slot: Slot) -> list[Constraint]:
    """The fewest of a fixed plugin's constraints that leave it that one version."""
    if slot.fixed is None:
        return []
    f = slot.fixed
    cons = _dedupe(slot.constraints)

    def forces(cs: list[Constraint]) -> bool:
        return all(c.allows(f) for c in cs) and all(
            cand is f or not all(c.allows(cand) for c in cs) for cand in slot.base
        )

    kept = list(cons)
    i = 0
    while i < len(kept):
        trial = kept[:i] + kept[i + 1 :]
        if forces(trial):
            kept = trial
        else:
            i += 1
    return kept


def chain(slots: Mapping[str, Slot], c: Constraint, *, depth: int = 20) -> list[str]:
    """How the author of `c` came into the set: from an entry of the composition down."""
    steps: list[str] = []
    origin = c.origin
    seen: set[str] = set()
    while origin is not None and depth > 0 and origin.key not in seen:
        seen.add(origin.key)
        slot = slots.get(origin.key)
        if slot is None or slot.via is None:
            steps.append(f"'{origin.name}' may be pulled in by the resolver")
            break
        if slot.via.kind == "root":
            steps.append(f"'{origin.name}' is in the composition")
            break
        steps.append(slot.via.describe())
        origin = slot.via.origin
        depth -= 1
    return list(reversed(steps))


def violations(chosen: Mapping[str, Facts], specs: Sequence[Spec]) -> list[str]:
    """Every constraint a set breaks (empty: the set is consistent). Used to double-check
    answers, and by the tests against brute force."""
    out = []
    for spec in specs:
        f = chosen.get(spec.key)
        if f is None or not spec.allows(f.version):
            out.append(f"entry '{spec.raw}' not met")
    for f in chosen.values():
        if f.incompatible is not None:
            out.append(f"{f.title()} cannot run here")
        for spec in f.requires:
            if spec.key == f.key:
                continue
            g = chosen.get(spec.key)
            if g is None or not spec.allows(g.version):
                out.append(f"{f.title()} requires '{spec.raw}'")
        for spec in f.conflicts_with:
            if spec.key == f.key:
                continue
            g = chosen.get(spec.key)
            if g is not None and spec.allows(g.version):
                out.append(f"{f.title()} conflicts with {g.title()}")
    return out
