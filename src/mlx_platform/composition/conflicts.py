"""The conflicts of a composition's answer, in words: resolver failures
(:func:`failure_conflict`: its plugins, why, what would fix it, and the smallest
explanation), two members of one singleton type (:func:`singleton_conflicts`), and the set's
resource needs against the capacity (:func:`resource_check`). Conflict types are listed in
``composition.evaluate``.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlx_platform import __api_version__
from mlx_platform.composition import rules
from mlx_platform.composition.explain import chain, why_fixed
from mlx_platform.composition.facts import Facts, Spec, version_of
from mlx_platform.composition.model import (
    Constraint,
    Failure,
    Group,
    Outcome,
    RegistryIndex,
    Slot,
)
from mlx_platform.composition.resources import Capacity

# ---------------------------------------------------------------- resolver failures


@dataclass
class _Draft:
    """A resolver failure being put in words: who takes part, the reasons, and the fixes
    found so far (in the order they are offered)."""

    outcome: Outcome
    failure: Failure
    requested: set[str]
    plugins: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    @property
    def slot(self) -> Slot:
        return self.failure.slot

    @property
    def name(self) -> str:
        return self.failure.slot.name

    @property
    def first(self) -> Constraint | None:
        return self.failure.groups[0][0] if self.failure.groups else None

    @property
    def registered(self) -> list[str]:
        return _versions(self.slot.rows)

    @property
    def runnable(self) -> list[str]:
        return _versions(self.slot.base)

    @property
    def listing(self) -> str:
        registered = self.registered
        return f" (registered: {', '.join(registered)})" if registered else ""

    @property
    def reason_text(self) -> str:
        return "; ".join(dict.fromkeys(self.reasons)) or "; ".join(
            dict.fromkeys(g[0].describe() for g in self.failure.groups)
        )


def failure_conflict(outcome: Outcome, failure: Failure) -> dict[str, Any]:
    """A resolver failure in the answer's terms: its plugins, why, and what would fix it."""
    draft = _Draft(outcome, failure, _requested(outcome))
    for group in failure.groups:
        reason = _read_group(draft, group)
        if reason is not None:
            draft.reasons.append(reason)
    draft.plugins = list(dict.fromkeys([*draft.plugins, draft.name]))
    kind = failure.conflict_type
    if failure.gave_up:
        message = _gave_up(draft)
    else:
        message = _MESSAGES.get(kind, _version_conflict)(draft)
    return {
        "type": kind,
        "plugins": draft.plugins,
        "message": message,
        "resolution_options": list(dict.fromkeys(draft.options)),
        "plugin": draft.name,
        "registered_versions": draft.registered,
        "explanation": _explanation(outcome, failure.groups),
    }


def _read_group(draft: _Draft, group: Group) -> str | None:
    """One author's constraints: the plugins they bring in, the fixes they suggest, and the
    reason to give (None: nothing the message does not say)."""
    c = group[0]
    name = draft.name
    text = "; ".join(dict.fromkeys(m.describe() for m in group))
    if c.kind == "root":
        draft.options.append(
            _entry_option(c, name) if draft.slot.rows else f"Remove '{name}' from the composition"
        )
        if c.spec is None or not c.spec.spec_text:
            return None  # "the composition asks for 'x'" says nothing the message does not
        return text
    if c.kind in ("requires", "conflicts"):
        assert c.origin is not None
        draft.plugins.append(c.origin.name)
        draft.options.append(_removal(draft.outcome, c.origin, draft.requested))
        return text
    return text + _read_exclusion(draft, c)


def _read_exclusion(draft: _Draft, c: Constraint) -> str:
    """An ``excludes`` constraint: a plugin already settled rules these versions out. What
    settled it takes part too; returns the "because ..." to add to the reason."""
    name = draft.name
    outcome = draft.outcome
    culprit = c.origin
    assert culprit is not None
    draft.plugins.append(name)
    settled = outcome.slots.get(culprit.key)
    why = why_fixed(settled) if settled is not None and settled.fixed is culprit else []
    for w in why:
        if w.kind == "root":
            draft.options.append(_entry_option(w, culprit.name))
        elif w.origin is not None:
            draft.plugins.append(w.origin.name)
            draft.options.append(_removal(outcome, w.origin, draft.requested))
    draft.plugins.append(culprit.name)
    because = [w.describe() for w in why]
    if settled is not None and len(settled.base) == 1:
        because.append(f"it is the only registered version of '{culprit.name}' that can run here")
    if not why:
        draft.options.append(_removal(outcome, culprit, draft.requested))
    draft.options.append(f"Register a version of '{name}' that works with {culprit.title()}")
    return f" (because {'; '.join(because)})" if because else ""


def _gave_up(draft: _Draft) -> str:
    draft.options.insert(
        0, "Pin versions in the composition (name and version) to narrow the search"
    )
    return (
        f"The resolver gave up choosing versions for '{draft.name}' and the plugins around "
        f"it: too many combinations to try ({draft.reason_text})"
    )


def _missing_dependency(draft: _Draft) -> str:
    name, first, slot = draft.name, draft.first, draft.slot
    wanted = first.spec.raw if first is not None and first.spec is not None else name
    if first is not None and first.kind == "root":
        message = (
            f"No plugin named '{name}' is registered"
            if not slot.rows
            else f"No registered version of '{name}' satisfies '{wanted}'{draft.listing}"
        )
    else:
        message = (
            f"{draft.reason_text}, and no plugin named '{name}' is registered"
            if not slot.rows
            else f"{draft.reason_text}, and no registered version satisfies it{draft.listing}"
        )
    spec_text = first.spec.spec_text if first is not None and first.spec is not None else ""
    if not spec_text:
        register = f"Register '{name}'"
    elif spec_text.startswith("==") and "," not in spec_text and "*" not in spec_text:
        register = f"Register '{name}' {spec_text[2:]}"
    else:
        register = f"Register a version of '{name}' satisfying '{wanted}'"
    draft.options.insert(0, register)
    runnable = draft.runnable
    if first is not None and first.kind == "root" and runnable:
        draft.options.insert(1, f"Ask for a registered version of '{name}': {', '.join(runnable)}")
    return message


def _incompatible_platform(draft: _Draft) -> str:
    name, first, failure = draft.name, draft.first, draft.failure
    cannot = "; ".join(
        dict.fromkeys(f"{f.version}: {f.incompatible}" for f in failure.incompatible)
    )
    here = f"{sys.platform}, Python {platform.python_version()}, platform API {__api_version__}"
    message = f"'{name}' cannot run here ({here}): {cannot}"
    if len(failure.groups) > 1 or (first is not None and first.kind != "root"):
        message += f"; wanted by: {draft.reason_text}"
    draft.options.insert(0, f"Register a version of '{name}' that can run here ({here})")
    runnable = draft.runnable
    if runnable:
        draft.options.insert(
            1, f"Allow a version of '{name}' that can run here: {', '.join(runnable)}"
        )
    return message


def _explicit_conflict(draft: _Draft) -> str:
    plugins, reason_text = draft.plugins, draft.reason_text
    message = (
        f"'{plugins[0]}' conflicts with '{plugins[1]}': {reason_text}"
        if len(plugins) == 2
        else f"{', '.join(repr(p) for p in plugins)} conflict: {reason_text}"
    )
    blockers = [m for g in draft.failure.groups for m in g if m.kind in ("conflicts", "excludes")]
    outside = [f.version for f in draft.slot.base if all(m.allows(f) for m in blockers)]
    if outside:
        draft.options.append(
            f"Use a version of '{draft.name}' that is not in conflict: {', '.join(outside)}"
        )
    return message


def _version_conflict(draft: _Draft) -> str:
    name = draft.name
    message = (
        f"No registered version of '{name}' satisfies every constraint: "
        f"{draft.reason_text}{draft.listing}"
    )
    specs = list(
        dict.fromkeys(
            m.spec
            for g in draft.failure.groups
            for m in g
            if m.positive and m.spec is not None and m.spec.spec_text
        )
    )
    if len(specs) > 1 and _jointly_satisfiable(specs):
        wanted = " and ".join(f"'{s.raw}'" for s in specs)
        draft.options.append(f"Register a version of '{name}' satisfying {wanted}")
    return message


# The message (and the options it puts first) by conflict type; any other: version_conflict.
_MESSAGES = {
    "missing_dependency": _missing_dependency,
    "incompatible_platform": _incompatible_platform,
    "explicit_conflict": _explicit_conflict,
}


def _versions(facts: Iterable[Facts]) -> list[str]:
    return sorted({f.version for f in facts}, key=rules.sort_version)


def _author(c: Constraint) -> str | None:
    return c.origin.name if c.origin is not None else None


def _explanation(outcome: Outcome, groups: list[Group]) -> list[dict[str, Any]]:
    out = []
    for group in groups:
        c = group[0]
        item: dict[str, Any] = {
            "constraint": c.describe()
            if len(group) == 1
            else "; ".join(dict.fromkeys(m.describe() for m in group)),
            "kind": c.kind,
            "imposed_by": _author(c),
            "imposed_by_versions": list(dict.fromkeys(m.origin.version for m in group if m.origin))
            if c.origin is not None
            else [],
            "chain": chain(outcome.slots, c),
        }
        if c.kind == "excludes" and c.origin is not None:
            culprit = outcome.slots.get(c.origin.key)
            if culprit is not None and culprit.fixed is c.origin:
                item["because"] = [x.describe() for x in why_fixed(culprit)]
        out.append(item)
    return out


def _removal(outcome: Outcome, plugin: Facts, requested: set[str]) -> str:
    if plugin.key in requested:
        return f"Remove '{plugin.name}' from the composition"
    pulled = _pulled_in_by(outcome, plugin.key)
    return (
        f"Remove what pulls in '{plugin.name}' ({pulled})"
        if pulled
        else (f"Remove '{plugin.name}' from the composition")
    )


def _entry_option(c: Constraint, name: str) -> str:
    if c.spec is not None and c.spec.spec_text:
        return f"Change the composition's entry '{c.spec.raw}'"
    return f"Remove '{name}' from the composition"


def _jointly_satisfiable(specs: list[Spec]) -> bool:
    """Whether some version could meet every one of these requirements (probed at their own
    bounds and just above them): a "register a version satisfying all of them" option is
    only offered when one could exist."""
    probes: list[str] = []
    for spec in specs:
        for clause in spec.specifier:
            base = version_of(clause.version.rstrip(".*"))
            if base is not None:
                probes += [str(base), f"{base}.1", f"{base.major}.{base.minor + 1}"]
    return any(all(spec.allows(p) for spec in specs) for p in probes)


def _requested(outcome: Outcome) -> set[str]:
    return {k for k, s in outcome.slots.items() if s.requested}


# ---------------------------------------------------------------- rules over the chosen set: singletons, resources


def _pulled_in_by(outcome: Outcome, key: str) -> str:
    slot = outcome.slots.get(key)
    if slot is None or slot.via is None or slot.via.kind == "root":
        return ""
    return "; ".join(chain(outcome.slots, slot.via) + [slot.via.describe()])


def singleton_conflicts(
    outcome: Outcome,
    members: Mapping[str, Facts],
    requested: set[str],
    singleton_types: frozenset[str],
) -> list[dict[str, Any]]:
    """One conflict per singleton type the set has two or more members of, naming them all;
    each option keeps one and says how to drop the others."""
    by_type: dict[str, list[Facts]] = {}
    for f in members.values():
        if f.type in singleton_types:
            by_type.setdefault(f.type, []).append(f)
    out = []
    for plugin_type, group in by_type.items():
        if len(group) < 2:
            continue
        names = [f.name for f in group]
        words = rules.type_words(plugin_type)
        options = []
        for keep in group:
            drop = [f for f in group if f is not keep]
            how = []
            for f in drop:
                if f.key in requested:
                    how.append(f"remove '{f.name}'")
                else:
                    pulled = _pulled_in_by(outcome, f.key) or "pulled in by the resolver"
                    how.append(f"drop what pulls in '{f.name}' ({pulled})")
            options.append(f"Use '{keep.name}' for {words}: {', '.join(how)}")
        out.append(
            {
                "type": "singleton_type",
                "plugins": names,
                "message": f"Only one '{plugin_type}' can be active, and the composition has "
                f"{len(group)}: {', '.join(repr(n) for n in names)}",
                "resolution_options": options,
                "plugin_type": plugin_type,
            }
        )
    return out


def resource_check(
    index: RegistryIndex, members: Mapping[str, Facts], capacity: Capacity
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The set's needs against the capacity: (an ``insufficient_resources`` conflict when
    they exceed it, a ``resources_in_use`` warning when they fit it but not beside the active
    plugins outside the set); None for what does not apply."""
    # Memory and GPUs add up on a replica; CPU cores are a minimum each replica must have
    # (plugins share CPU time), so the composition needs its largest claim, not the sum.
    need_mem = sum(f.memory_mb for f in members.values())
    need_cpu = max((f.cpu_cores for f in members.values()), default=0.0)
    need_gpu = sum(1 for f in members.values() if f.gpu)
    figures = {
        "memory_mb": (need_mem, capacity.memory_mb),
        "cpu_cores": (need_cpu, capacity.cpu_cores),
        "gpus": (need_gpu, capacity.gpus),
    }
    shortfall = {
        k: {"required": need, "available": cap, "capacity": cap}
        for k, (need, cap) in figures.items()
        if need > cap + 1e-9
    }
    if shortfall:
        biggest = sorted(members.values(), key=lambda f: (f.memory_mb, f.cpu_cores), reverse=True)
        heavy = ", ".join(
            f"'{f.name}' ({f.memory_mb} MB, {f.cpu_cores:g} CPU{', GPU' if f.gpu else ''})"
            for f in biggest[:3]
        )
        what = ", ".join(
            f"{k}: needs {v['required']}, capacity {v['capacity']}" for k, v in shortfall.items()
        )
        return (
            {
                "type": "insufficient_resources",
                "plugins": [f.name for f in members.values()],
                "message": f"The composition needs more than the capacity: {what}",
                "resolution_options": [
                    f"Remove plugins from the composition; the largest claims: {heavy}",
                    "Raise the capacity settings (MLX_CAPACITY_MEMORY_MB, MLX_CAPACITY_CPU_CORES, "
                    "MLX_CAPACITY_GPUS) or run on a larger machine",
                ],
                "shortfall": shortfall,
            },
            None,
        )
    outside = [f for f in index.facts if f.status == "active" and members.get(f.key) is not f]
    used = {
        "memory_mb": sum(f.memory_mb for f in outside),
        "cpu_cores": 0.0,  # not a claim that adds up: see above
        "gpus": sum(1 for f in outside if f.gpu),
    }
    tight = {
        k: {
            "required": need,
            "available": max(round(cap - used[k], 3), 0),
            "capacity": cap,
            "claimed_by_active_plugins": used[k],
        }
        for k, (need, cap) in figures.items()
        if need and need > cap - used[k] + 1e-9
    }
    if not tight:
        return None, None
    return None, {
        "type": "resources_in_use",
        "message": "The composition fits the capacity, but not beside the active plugins "
        "outside it: "
        + ", ".join(f"{k}: needs {v['required']}, {v['available']} free" for k, v in tight.items()),
        "severity": "medium",
        "plugins": sorted({f.name for f in outside}),
        "shortfall": tight,
    }
