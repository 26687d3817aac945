"""The answer to POST /v1/plugins/validate-composition, pure: :func:`evaluate` runs the rule
engine over a set of plugins against a :class:`RegistryIndex` (``core.composition`` reads
the index from the database and calls it).

Everything comes from registered metadata (see ``composition.facts`` for the keys); no
plugin is named in code. The answer is the spec's: ``composition_valid``, ``conflicts``,
``warnings``, ``synergies``, ``recommendations``, plus ``resolved`` (the chosen versions).

Decisions (also in the project notes):

- **Entries** name a plugin with a version (``1.2.0``: exactly that one), a specifier
  (``>=2,<3``) or nothing (any). An entry that is neither a version nor a specifier is a
  VALIDATION_ERROR; an unknown plugin is not: it is a ``missing_dependency`` conflict, and the
  answer is 200 with ``composition_valid`` false.
- **Versions are chosen by the resolver** (``composition.resolver``): among the registered versions
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
  ``explanation`` (the smallest explanation, see ``composition.resolver``).
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
- **Speed**: ``core.composition`` reads the registry into a :class:`RegistryIndex` (parsed
  metadata, who mentions whom) and reuses it while the registry is unchanged.

Where: the resolver and its explanations in ``composition.resolver``; conflicts in words in
``composition.conflicts``; warnings, recommendations and synergies in
``composition.advice``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlx_platform.composition import rules
from mlx_platform.composition.advice import peer_warnings, synergies
from mlx_platform.composition.conflicts import (
    failure_conflict,
    resource_check,
    singleton_conflicts,
)
from mlx_platform.composition.explain import violations
from mlx_platform.composition.facts import Spec
from mlx_platform.composition.model import Outcome, RegistryIndex
from mlx_platform.composition.resolver import Solver
from mlx_platform.composition.resources import Capacity
from mlx_platform.errors import ValidationError


def parse_entries(entries: Sequence[tuple[str, str | None]]) -> list[Spec]:
    """The entries as specs. An entry that is neither a version nor a specifier is a
    VALIDATION_ERROR (every such entry in its details)."""
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
    conflicts = [failure_conflict(outcome, f) for f in outcome.failures]
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
    conflicts += singleton_conflicts(outcome, members, requested, singleton_types)
    warnings: list[dict[str, Any]] = []
    recommendations: list[str] = []
    resource_conflict, resource_warning = resource_check(index, members, capacity)
    if resource_conflict is not None:
        conflicts.append(resource_conflict)
    if resource_warning is not None:
        warnings.append(resource_warning)
    peer_warnings(index, members, warnings, recommendations)
    return {
        "composition_valid": not conflicts,
        "conflicts": conflicts,
        "warnings": warnings,
        "synergies": synergies(members),
        "recommendations": list(dict.fromkeys(recommendations)),
        "resolved": _resolved(index, outcome, requested) if outcome.ok else [],
    }


def _resolved(index: RegistryIndex, outcome: Outcome, requested: set[str]) -> list[dict[str, Any]]:
    """The chosen versions; those the resolver pulled in say which members require them."""
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
