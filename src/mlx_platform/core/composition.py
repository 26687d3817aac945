"""POST /v1/plugins/validate-composition: the rule engine over a set of plugins.

Everything comes from registered metadata (see ``core.rules`` for the keys); no plugin is
named in code. The answer is the spec's: ``composition_valid``, ``conflicts``, ``warnings``,
``synergies``, ``recommendations``, plus ``resolved`` (the chosen versions).

Decisions (also in the project notes):

- **Entries** name a plugin with a version (``1.2.0``: exactly that one), a specifier
  (``>=2,<3``) or nothing (any). An entry that is neither a version nor a specifier is a
  VALIDATION_ERROR; an unknown plugin is not: it is a ``missing_dependency`` conflict, and the
  answer is 200 with ``composition_valid`` false.
- **Versions are chosen by the resolver** (``core.resolver``): among the registered versions
  that can run here, the set that satisfies every entry, ``requires`` and ``conflicts_with``,
  newest first. A ``requires`` need not be in the composition: the resolver pulls in a
  registered plugin that satisfies it and reports it in ``resolved`` with
  ``"added_by_resolver": true`` (and ``required_by``). ``missing_dependency`` is reported
  only when no registered version satisfies the requirement.
- **Conflict types**: ``missing_dependency`` (one entry or requires that no registered version
  satisfies), ``version_conflict`` (constraints each satisfiable, not together),
  ``explicit_conflict`` (a ``conflicts_with`` takes part), ``incompatible_platform`` (the
  versions that would fit cannot run here: platform, Python, platform API, class not
  loadable), ``singleton_type`` (two plugins of a singleton type in the set: checked on the
  chosen set, one conflict per type naming every member), ``insufficient_resources`` (the
  set's summed needs against the capacity). Each is ``{type, plugins, message,
  resolution_options, ...}``; resolver failures add ``plugin``, ``registered_versions`` and
  ``explanation`` (the smallest explanation, see ``core.resolver``).
- **When no set exists** ``resolved`` is empty; warnings, synergies and the singleton and
  resource checks then run over a best-effort pick (the versions propagation settled, the
  newest candidate elsewhere), so one answer lists every problem it can see.
- **Warnings**: ``version_mismatch`` when a member is outside what another member
  ``recommends`` for it, or outside the specifier of another member's ``optional_deps``.
  Severity: ``low`` when the version is within one major version of the recommended range
  (the spec's example: 1.8.0 against 2.0.0+ is low), ``medium`` when two or more major
  versions away. ``resources_in_use`` (medium) when the set fits the capacity but not beside
  the active plugins outside it.
- **Synergies**: declared ``synergies`` between two members (either side; both sides'
  declarations merged), and members sharing integration points: one synergy per group of
  members sharing the same points (a pair already declared is not repeated), so the answer
  grows with the number of integration points, not with the square of the set.
- **Speed**: the registry is read into an in-memory index (parsed metadata, who mentions
  whom), reused while a cheap marker (row count, latest ``updated_at``/``created_at``) is
  unchanged; every write to a plugin row moves the marker.
"""

from __future__ import annotations

import platform
import sys
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from mlx_platform import __api_version__
from mlx_platform.composition import rules
from mlx_platform.composition.explain import chain, violations, why_fixed
from mlx_platform.composition.facts import Facts, Spec, specifier_allows, version_of
from mlx_platform.composition.model import Catalog, Constraint, Failure, Group, Outcome
from mlx_platform.composition.resolver import Solver
from mlx_platform.composition.resources import Capacity
from mlx_platform.core.context import Core
from mlx_platform.errors import ValidationError
from mlx_platform.storage import Database, PluginRow
from mlx_platform.wire import CompositionEntry

# ---------------------------------------------------------------- the registry index


@dataclass(frozen=True)
class RegistryIndex:
    """Every registered plugin version, parsed, as of `marker`."""

    marker: tuple[Any, ...]
    facts: tuple[Facts, ...]
    catalog: Catalog


_COLUMNS = (
    PluginRow.id,
    PluginRow.name,
    PluginRow.version,
    PluginRow.type,
    PluginRow.status,
    PluginRow.loadable,
    PluginRow.status_reason,
    PluginRow.plugin_metadata,
)
_indexes: weakref.WeakKeyDictionary[Database, RegistryIndex] = weakref.WeakKeyDictionary()
_index_lock = threading.Lock()


def build_index(facts: Iterable[Facts], marker: tuple[Any, ...] = ()) -> RegistryIndex:
    facts = tuple(facts)
    return RegistryIndex(marker, facts, Catalog(facts))


def _marker(session: Any) -> tuple[Any, ...]:
    stmt = select(func.count(), func.max(PluginRow.updated_at), func.max(PluginRow.created_at))
    return tuple(session.execute(stmt).one())


def registry_index(db: Database) -> RegistryIndex:
    """The index of `db`'s registry, rebuilt when the change marker moved.

    The marker is read before the rows, so a write landing between the two makes the next
    call rebuild again (never serve older data under a newer marker). Every write to a plugin
    row sets its ``updated_at`` (and an insert its ``created_at``; a delete lowers the count).
    Replicas sharing one database with clocks far apart could write an ``updated_at`` older
    than the current maximum; the count and ``created_at`` still catch registrations and
    deletions, and such a status change only affects the ``resources_in_use`` warning.
    """
    with db.read() as session:
        marker = _marker(session)
        current = _indexes.get(db)
        if current is not None and current.marker == marker:
            return current
        with _index_lock:
            current = _indexes.get(db)
            if current is not None and current.marker == marker:
                return current
            rows = session.execute(select(*_COLUMNS)).all()
            index = build_index(
                (
                    rules.facts_from(
                        id=id_,
                        name=name,
                        version=version,
                        type=type_,
                        meta=meta,
                        status=status,
                        loadable=bool(loadable),
                        status_reason=reason,
                    )
                    for id_, name, version, type_, status, loadable, reason, meta in rows
                ),
                marker,
            )
            _indexes[db] = index
            return index


# ---------------------------------------------------------------- entry point


def validate_composition(core: Core, entries: list[CompositionEntry]) -> dict[str, Any]:
    return evaluate(
        registry_index(core.db),
        [(e.name, e.version) for e in entries],
        singleton_types=core.settings.singleton_type_set,
        capacity=core.capacity(),
    )


def parse_entries(entries: Sequence[tuple[str, str | None]]) -> list[Spec]:
    specs: list[Spec] = []
    problems: dict[str, str] = {}
    for i, (name, version) in enumerate(entries):
        try:
            specs.append(rules.entry_spec(name, version))
        except ValueError as exc:
            problems[f"plugins[{i}].version"] = str(exc)
    if problems:
        first = next(iter(problems))
        raise ValidationError(f"Invalid composition: {first} {problems[first]}", problems)
    return specs


def evaluate(
    index: RegistryIndex,
    entries: Sequence[tuple[str, str | None]],
    *,
    singleton_types: frozenset[str],
    capacity: Capacity,
) -> dict[str, Any]:
    """The whole answer for `entries` (name, version-or-specifier-or-None) against `index`."""
    specs = parse_entries(entries)
    outcome = Solver(index.catalog).solve(specs)
    conflicts = [_failure_conflict(outcome, f) for f in outcome.failures]
    members = outcome.chosen if outcome.ok else outcome.fallback
    if outcome.ok:
        broken = violations(outcome.chosen, specs)
        if broken:  # the resolver's answer is double-checked; this would be a bug
            conflicts.append(
                {
                    "type": "version_conflict",
                    "plugins": sorted({f.name for f in outcome.chosen.values()}),
                    "message": "The chosen versions break: " + "; ".join(broken[:10]),
                    "resolution_options": ["Report this: the resolver chose an invalid set"],
                }
            )
    requested = {k for k, s in outcome.slots.items() if s.requested}
    conflicts += _singleton_conflicts(outcome, members, requested, singleton_types)
    warnings: list[dict[str, Any]] = []
    recommendations: list[str] = []
    resource_conflict, resource_warning = _resources(index, members, capacity)
    if resource_conflict is not None:
        conflicts.append(resource_conflict)
    if resource_warning is not None:
        warnings.append(resource_warning)
    _peer_warnings(index, members, warnings, recommendations)
    return {
        "composition_valid": not conflicts,
        "conflicts": conflicts,
        "warnings": warnings,
        "synergies": _synergies(members),
        "recommendations": list(dict.fromkeys(recommendations)),
        "resolved": _resolved(index, outcome, requested) if outcome.ok else [],
    }


# ---------------------------------------------------------------- resolver failures


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


def _failure_conflict(outcome: Outcome, failure: Failure) -> dict[str, Any]:
    """A resolver failure in the answer's terms: its plugins, why, and what would fix it."""
    slot = failure.slot
    name = slot.name
    requested = _requested(outcome)
    plugins: list[str] = []
    reasons: list[str] = []
    options: list[str] = []
    for group in failure.groups:
        c = group[0]
        text = "; ".join(dict.fromkeys(m.describe() for m in group))
        if c.kind == "root":
            options.append(
                _entry_option(c, name) if slot.rows else f"Remove '{name}' from the composition"
            )
            if c.spec is None or not c.spec.spec_text:
                continue  # "the composition asks for 'x'" says nothing the message does not
        elif c.kind in ("requires", "conflicts"):
            assert c.origin is not None
            plugins.append(c.origin.name)
            options.append(_removal(outcome, c.origin, requested))
        else:  # excludes: a plugin already settled rules these versions out
            culprit = c.origin
            assert culprit is not None
            plugins.append(name)
            settled = outcome.slots.get(culprit.key)
            why = why_fixed(settled) if settled is not None and settled.fixed is culprit else []
            for w in why:
                if w.kind == "root":
                    options.append(_entry_option(w, culprit.name))
                elif w.origin is not None:
                    plugins.append(w.origin.name)
                    options.append(_removal(outcome, w.origin, requested))
            plugins.append(culprit.name)
            because = [w.describe() for w in why]
            if settled is not None and len(settled.base) == 1:
                because.append(
                    f"it is the only registered version of '{culprit.name}' that can run here"
                )
            if because:
                text += f" (because {'; '.join(because)})"
            if not why:
                options.append(_removal(outcome, culprit, requested))
            options.append(f"Register a version of '{name}' that works with {culprit.title()}")
        reasons.append(text)
    plugins = list(dict.fromkeys([*plugins, name]))
    registered = _versions(slot.rows)
    runnable = _versions(slot.base)
    listing = f" (registered: {', '.join(registered)})" if registered else ""
    reason_text = "; ".join(dict.fromkeys(reasons)) or "; ".join(
        dict.fromkeys(g[0].describe() for g in failure.groups)
    )
    kind = failure.conflict_type
    first = failure.groups[0][0] if failure.groups else None
    if failure.gave_up:
        message = (
            f"The resolver gave up choosing versions for '{name}' and the plugins around it: "
            f"too many combinations to try ({reason_text})"
        )
        options.insert(0, "Pin versions in the composition (name and version) to narrow the search")
    elif kind == "missing_dependency":
        wanted = first.spec.raw if first is not None and first.spec is not None else name
        if first is not None and first.kind == "root":
            message = (
                f"No plugin named '{name}' is registered"
                if not slot.rows
                else f"No registered version of '{name}' satisfies '{wanted}'{listing}"
            )
        else:
            message = (
                f"{reason_text}, and no plugin named '{name}' is registered"
                if not slot.rows
                else f"{reason_text}, and no registered version satisfies it{listing}"
            )
        spec_text = first.spec.spec_text if first is not None and first.spec is not None else ""
        if not spec_text:
            register = f"Register '{name}'"
        elif spec_text.startswith("==") and "," not in spec_text and "*" not in spec_text:
            register = f"Register '{name}' {spec_text[2:]}"
        else:
            register = f"Register a version of '{name}' satisfying '{wanted}'"
        options.insert(0, register)
        if first is not None and first.kind == "root" and runnable:
            options.insert(1, f"Ask for a registered version of '{name}': {', '.join(runnable)}")
    elif kind == "incompatible_platform":
        cannot = "; ".join(
            dict.fromkeys(f"{f.version}: {f.incompatible}" for f in failure.incompatible)
        )
        here = f"{sys.platform}, Python {platform.python_version()}, platform API {__api_version__}"
        message = f"'{name}' cannot run here ({here}): {cannot}"
        if len(failure.groups) > 1 or (first is not None and first.kind != "root"):
            message += f"; wanted by: {reason_text}"
        options.insert(0, f"Register a version of '{name}' that can run here ({here})")
        if runnable:
            options.insert(
                1, f"Allow a version of '{name}' that can run here: {', '.join(runnable)}"
            )
    elif kind == "explicit_conflict":
        message = (
            f"'{plugins[0]}' conflicts with '{plugins[1]}': {reason_text}"
            if len(plugins) == 2
            else f"{', '.join(repr(p) for p in plugins)} conflict: {reason_text}"
        )
        blockers = [m for g in failure.groups for m in g if m.kind in ("conflicts", "excludes")]
        outside = [f.version for f in slot.base if all(m.allows(f) for m in blockers)]
        if outside:
            options.append(
                f"Use a version of '{name}' that is not in conflict: {', '.join(outside)}"
            )
    else:
        message = (
            f"No registered version of '{name}' satisfies every constraint: {reason_text}{listing}"
        )
        specs = list(
            dict.fromkeys(
                m.spec
                for g in failure.groups
                for m in g
                if m.positive and m.spec is not None and m.spec.spec_text
            )
        )
        if len(specs) > 1 and _jointly_satisfiable(specs):
            wanted = " and ".join(f"'{s.raw}'" for s in specs)
            options.append(f"Register a version of '{name}' satisfying {wanted}")
    return {
        "type": kind,
        "plugins": plugins,
        "message": message,
        "resolution_options": list(dict.fromkeys(options)),
        "plugin": name,
        "registered_versions": registered,
        "explanation": _explanation(outcome, failure.groups),
    }


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


# ---------------------------------------------------------------- rules over the chosen set


def _pulled_in_by(outcome: Outcome, key: str) -> str:
    slot = outcome.slots.get(key)
    if slot is None or slot.via is None or slot.via.kind == "root":
        return ""
    return "; ".join(chain(outcome.slots, slot.via) + [slot.via.describe()])


def _singleton_conflicts(
    outcome: Outcome,
    members: Mapping[str, Facts],
    requested: set[str],
    singleton_types: frozenset[str],
) -> list[dict[str, Any]]:
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


def _resources(
    index: RegistryIndex, members: Mapping[str, Facts], capacity: Capacity
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
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


def mismatch(spec_text: str, version: str) -> tuple[str, str, str | None]:
    """How `version` misses `spec_text`: (direction, severity, lower bound).

    direction: ``older`` (below a lower bound), ``newer`` (above an upper bound) or ``other``.
    Severity: ``low`` within one major version of the bound it misses, else ``medium``.
    """
    v = version_of(version)
    spec = rules.specifier_set(spec_text)
    if v is None:
        return "other", "medium", None
    direction = "other"
    gap = 0
    bound_text: str | None = None
    for clause in spec:
        if clause.contains(v, prereleases=True):
            continue
        bound = version_of(clause.version.rstrip(".*"))
        if bound is None:
            continue
        gap = max(gap, abs(bound.major - v.major))
        op = clause.operator
        if op in (">=", ">") or (op in ("==", "===", "~=") and v < bound):
            direction = "older"
            bound_text = clause.version
        elif op in ("<", "<=", "==", "===", "~=") and direction == "other":
            direction = "newer"
    return direction, ("medium" if gap >= 2 else "low"), bound_text


def _peer_warnings(
    index: RegistryIndex,
    members: Mapping[str, Facts],
    warnings: list[dict[str, Any]],
    recommendations: list[str],
) -> None:
    for f in members.values():
        for peer_key, _peer_name, spec_text in f.recommends:
            peer = members.get(peer_key)
            if peer is None or peer is f or specifier_allows(spec_text, peer.version):
                continue
            direction, severity, bound = mismatch(spec_text, peer.version)
            simple = bound is not None and spec_text in (f">={bound}", f"~={bound}")
            if direction == "older" and simple:
                message = f"{peer.label} version {peer.version} is older than recommended {bound}+"
                advice = f"Consider upgrading {peer.label} to version {bound}+ for better {f.label} integration"
            elif direction == "older":
                message = (
                    f"{peer.label} version {peer.version} is older than the recommended {spec_text}"
                )
                advice = f"Consider upgrading {peer.label} to {spec_text} for better {f.label} integration"
            elif direction == "newer":
                message = (
                    f"{peer.label} version {peer.version} is newer than the recommended {spec_text}"
                )
                advice = f"Consider {peer.label} {spec_text} for better {f.label} integration"
            else:
                message = f"{peer.label} version {peer.version} does not match the recommended {spec_text}"
                advice = f"Consider {peer.label} {spec_text} for better {f.label} integration"
            warnings.append(
                {
                    "type": "version_mismatch",
                    "message": message,
                    "severity": severity,
                    "plugins": [peer.name],
                    "recommended_by": f.name,
                    "recommended": spec_text,
                    "version": peer.version,
                }
            )
            recommendations.append(advice)
        for spec in f.optional_deps:
            peer = members.get(spec.key)
            if peer is None:
                offered = [
                    v
                    for v in index.catalog.versions(spec.key)
                    if v.incompatible is None and spec.allows(v.version)
                ]
                if offered:
                    recommendations.append(
                        f"Add '{spec.raw}' to the composition to enable {f.label}'s optional "
                        f"integration with {offered[0].label}"
                    )
                continue
            if peer is f or spec.allows(peer.version):
                continue
            direction, severity, _bound = mismatch(spec.spec_text, peer.version)
            warnings.append(
                {
                    "type": "version_mismatch",
                    "message": f"{peer.label} version {peer.version} is {direction if direction != 'other' else 'outside'}"
                    f"{' than' if direction != 'other' else ''} the {spec.spec_text} that {f.label} "
                    "supports as an optional dependency",
                    "severity": severity,
                    "plugins": [peer.name],
                    "recommended_by": f.name,
                    "recommended": spec.spec_text,
                    "version": peer.version,
                }
            )
            recommendations.append(
                f"Consider {peer.label} {spec.spec_text} to use it with {f.label}"
            )


def _synergies(members: Mapping[str, Facts]) -> list[dict[str, Any]]:
    declared: dict[frozenset[str], dict[str, Any]] = {}
    for f in members.values():
        for syn in f.synergies:
            partner = members.get(syn.key)
            if partner is None or partner is f:
                continue
            pair = frozenset((f.key, partner.key))
            entry = declared.get(pair)
            if entry is None:
                declared[pair] = {
                    "plugins": [f.name, partner.name],
                    "integration_points": list(syn.integration_points),
                    "benefits": list(syn.benefits),
                }
            else:
                entry["integration_points"] = list(
                    dict.fromkeys([*entry["integration_points"], *syn.integration_points])
                )
                entry["benefits"] = list(dict.fromkeys([*entry["benefits"], *syn.benefits]))
    out = list(declared.values())
    sharing: dict[str, list[Facts]] = {}
    for f in members.values():
        for point in f.integration_points:
            sharing.setdefault(point, []).append(f)
    groups: dict[tuple[str, ...], list[str]] = {}
    for point, group in sharing.items():
        if len(group) >= 2:
            groups.setdefault(tuple(f.key for f in group), []).append(point)
    for keys, points in groups.items():
        if len(keys) == 2 and frozenset(keys) in declared:
            continue
        group = [members[k] for k in keys]
        who = "Both" if len(group) == 2 else "All"
        out.append(
            {
                "plugins": [f.name for f in group],
                "integration_points": points,
                "benefits": [f"{who} integrate through {', '.join(points)}"],
            }
        )
    return out


def _resolved(index: RegistryIndex, outcome: Outcome, requested: set[str]) -> list[dict[str, Any]]:
    chosen = outcome.chosen
    out = []
    for key, f in chosen.items():
        item: dict[str, Any] = {
            "name": f.name,
            "version": f.version,
            "id": f.id,
            "type": f.type,
            "added_by_resolver": key not in requested,
        }
        if key not in requested:
            item["required_by"] = list(
                dict.fromkeys(
                    cand.name
                    for cand, kind, spec in index.catalog.mentions.get(key, ())
                    if kind == "requires"
                    and chosen.get(cand.key) is cand
                    and spec.allows(f.version)
                )
            )
        out.append(item)
    return out
