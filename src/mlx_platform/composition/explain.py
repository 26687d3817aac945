"""Why no set exists, as the smallest explanation, and the questions the answer's text asks
of a solve (``why_fixed``, ``chain``, ``violations``).

For the plugin that ran out of candidates: its constraints (from propagation, and from
resolvelib's ``ResolutionImpossible`` causes after a search), de-duplicated (what one
plugin's versions impose counts once, as the union of what they allow), then reduced by
deletion (:func:`minimize`): remove any one constraint left and some registered version
fits. When no single plugin's constraints explain the failure (a chain through several
plugins' versions), the same deletion runs over every constraint of the group with the
complete search (``search.exhaustive``) as the judge. :func:`classify` names the conflict
type the explanation points at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from resolvelib.structs import RequirementInformation

from mlx_platform.composition.facts import Facts, Spec
from mlx_platform.composition.model import Constraint, Failure, Group, Limits, Slot
from mlx_platform.composition.search import Unsolved, exhaustive

# ---------------------------------------------------------------- failures of a search


def explain(slots: Mapping[str, Slot], unsolved: Unsolved, limits: Limits) -> Failure:
    """The failure to report for a group the search found no set for."""
    if unsolved.causes is not None:
        return _explain_causes(slots, unsolved.causes, unsolved.members, limits)
    return _unsolved(slots, unsolved.members, unsolved.verdict, limits)


def _explain_causes(
    slots: Mapping[str, Slot],
    causes: Iterable[RequirementInformation[Any, Any]],
    members: list[Slot],
    limits: Limits,
) -> Failure:
    """From resolvelib's causes: the plugin whose constraints alone leave no candidate (the
    best ranked when several do), else the group's smallest explanation."""
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
        slot = slots[key]
        own = [[c] for c in dedupe(slot.constraints)]
        groups = own + [dedupe(g) for g in dep_groups.values()]
        if not _fails(slot, groups):
            continue
        failure = failure_of(slot, groups)
        failure.search = True
        if first is None or _rank(failure) < _rank(first):
            first = failure
    if first is not None:
        return first
    core = _core(slots, members, limits)
    if core is not None:
        return core
    if not by_key:
        return _unsolved(slots, members, "budget", limits)
    # The search could not tell within its budget: report the causes unminimized.
    key = next(iter(by_key))
    slot = slots[key]
    all_groups = [[c] for c in dedupe(slot.constraints)] + [
        dedupe(g) for k in by_key for g in by_key[k].values()
    ]
    return Failure(slot, "version_conflict", all_groups, [], search=True)


def _unsolved(
    slots: Mapping[str, Slot], members: list[Slot], verdict: str | None, limits: Limits
) -> Failure:
    """A group without a set (`verdict` None) or one the search could not finish."""
    if verdict is None:
        core = _core(slots, members, limits)
        if core is not None:
            return core
    # Too large to cut down: the constraints of the group's plugins, the first 50.
    groups = [[c] for c in dedupe(c for s in members for c in s.constraints)][:50]
    return Failure(
        members[0], "version_conflict", groups, [], search=True, gave_up=verdict == "budget"
    )


def _core(slots: Mapping[str, Slot], members: list[Slot], limits: Limits) -> Failure | None:
    """The smallest explanation of a group with no solution when no single plugin's
    constraints explain it: a deletion filter over every constraint of the group (what
    propagation put on its plugins, and what each author's versions require or exclude),
    with the complete search as the judge. None when the search cannot tell."""
    atoms: dict[Any, Group] = {}
    for slot in members:
        for c in dedupe(slot.constraints):
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
    if len(atoms) > limits.core_limit or exhaustive(members, limits.search_budget) is not None:
        return None
    kept = list(atoms)
    i = 0
    while i < len(kept):
        trial = kept[:i] + kept[i + 1 :]
        ignore = frozenset(a for a in atoms if a not in trial)
        verdict = exhaustive(members, limits.search_budget, ignore)
        if verdict == "budget":
            break
        if verdict is None:
            kept = trial
        else:
            i += 1
    groups = [dedupe(atoms[a]) for a in kept]
    targets = [g[0].target for g in groups]
    focus = max(dict.fromkeys(targets), key=targets.count) if targets else members[0].key
    kinds = {c.kind for g in groups for c in g}
    blames = {c.blame for g in groups for c in g}
    kind = (
        "explicit_conflict"
        if "conflicts" in kinds or "explicit_conflict" in blames
        else "version_conflict"
    )
    return Failure(slots[focus], kind, groups, [], search=True)


# ---------------------------------------------------------------- minimal explanations


def failure_of(slot: Slot, groups: list[Group]) -> Failure:
    """The failure of a plugin the constraints `groups` leave without a candidate, cut down
    to the smallest explanation."""
    minimal = minimize(slot, groups)
    incompatible = [
        r
        for r in slot.rows
        if r.incompatible is not None and all(_group_allows(g, r) for g in minimal)
    ]
    return Failure(slot, classify(slot, minimal, incompatible), minimal, incompatible)


def dedupe(constraints: Iterable[Constraint]) -> list[Constraint]:
    """Each constraint once: same kind, same author version, same specifier or note."""
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
    cons = dedupe(slot.constraints)

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
