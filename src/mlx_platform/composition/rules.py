"""The rules over :class:`Facts`: the one API activation, registration, discovery and the
composition engine share.

:func:`pair_conflicts` is the one place that decides whether two plugin versions may be
active (or composed) together; :func:`conflicts_with_active` and :func:`unmet_requirements`
apply it (and ``requires``) to one version against the active or registered ones, and
:class:`Conflict`'s named constructors hold the wording. The Facts model and the metadata
keys are in ``composition.facts``; its names are re-exported here, so a caller needs this
module only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from mlx_platform.composition.facts import (
    DeclaredSynergy,
    Facts,
    Spec,
    canonical_key,
    check_metadata,
    entry_spec,
    facts_from,
    facts_of_row,
    parse_spec,
    parse_specifier,
    platform_problems,
    sort_version,
    specifier_allows,
    specifier_set,
    version_of,
)

__all__ = [
    # the Facts model (composition.facts)
    "DeclaredSynergy",
    "Facts",
    "Spec",
    "canonical_key",
    "check_metadata",
    "entry_spec",
    "facts_from",
    "facts_of_row",
    "parse_spec",
    "parse_specifier",
    "platform_problems",
    "sort_version",
    "specifier_allows",
    "specifier_set",
    "version_of",
    # the rules
    "Conflict",
    "MissingDependency",
    "PairConflict",
    "conflicts_with_active",
    "dependents_of",
    "missing_python_requirements",
    "pair_conflicts",
    "type_words",
    "unmet_requirements",
]

# ---------------------------------------------------------------- pairwise rules


@dataclass(frozen=True)
class PairConflict:
    """Why `a` and `b` cannot be active (or composed) together."""

    conflict_type: str  # version_conflict | explicit_conflict | singleton_type
    declared_by: str | None = None  # explicit conflicts: the name whose metadata says so
    specifier: str | None = None  # ... and the entry of its conflicts_with that matched


def pair_conflicts(a: Facts, b: Facts, singleton_types: frozenset[str]) -> PairConflict | None:
    """The rule for two plugin versions, the first that applies: another version of the same
    plugin (one version of a plugin at a time), an explicit conflict declared by either side
    (``conflicts_with``, specifier included), two plugins of one singleton type."""
    if a.id == b.id:
        return None
    if a.key == b.key:
        return PairConflict("version_conflict")
    for spec in a.conflicts_with:
        if spec.key == b.key and spec.allows(b.version):
            return PairConflict("explicit_conflict", a.name, spec.raw)
    for spec in b.conflicts_with:
        if spec.key == a.key and spec.allows(a.version):
            return PairConflict("explicit_conflict", b.name, spec.raw)
    if a.type and a.type == b.type and a.type in singleton_types:
        return PairConflict("singleton_type")
    return None


def type_words(plugin_type: str) -> str:
    """What a plugin of that type is used for, in words: `experiment_tracker` ->
    "experiment tracking" (as the spec's example says), `data_source` -> "data source"."""
    words = plugin_type.replace("_", " ").split()
    if words and words[-1].endswith("er") and len(words[-1]) > 4:
        words[-1] = words[-1][:-2] + "ing"
    return " ".join(words)


# ---------------------------------------------------------------- activation and registration


@dataclass
class Conflict:
    """Why a plugin cannot be active beside another that is; built by the named constructors
    below (one per `conflict_type`), which hold the wording."""

    conflicting_plugin: str
    conflicting_plugin_id: str | None
    conflict_type: str
    message: str
    resolution_options: list[str]
    declared_by: str | None = None
    specifier: str | None = None

    @classmethod
    def between(cls, me: Facts, other: Facts, found: PairConflict) -> Conflict:
        """The conflict :func:`pair_conflicts` found between `me` and the active `other`."""
        if found.conflict_type == "version_conflict":
            return cls.other_version(me, other)
        if found.conflict_type == "explicit_conflict":
            return cls.declared(me, other, found.declared_by, found.specifier)
        return cls.singleton(me.name, me.type, other.name, other.id)

    @classmethod
    def other_version(cls, me: Facts, other: Facts) -> Conflict:
        return cls(
            other.name,
            other.id,
            "version_conflict",
            f"Plugin '{me.name}' {me.version} conflicts with active '{other.name}' "
            f"{other.version}: one version of a plugin can be active at a time",
            [
                f"Deactivate '{other.name}' {other.version} ({other.id}) first",
                f"Keep '{other.name}' {other.version} active and do not activate {me.version}",
            ],
        )

    @classmethod
    def declared(
        cls, me: Facts, other: Facts, declared_by: str | None, specifier: str | None
    ) -> Conflict:
        message = f"Plugin '{me.name}' conflicts with active plugin '{other.name}'"
        if declared_by is not None:
            message += f" ('{declared_by}' declares conflicts_with '{specifier}')"
        return cls(
            other.name,
            other.id,
            "explicit_conflict",
            message,
            [
                f"Deactivate '{other.name}' before activating '{me.name}'",
                f"Keep '{other.name}' and choose another plugin than '{me.name}'",
            ],
            declared_by=declared_by,
            specifier=specifier,
        )

    @classmethod
    def singleton(
        cls, name: str, plugin_type: str, other_name: str, other_id: str | None
    ) -> Conflict:
        """`name` and the active `other_name` are both of the singleton type `plugin_type`."""
        return cls(
            other_name,
            other_id,
            "singleton_type",
            f"Plugin '{name}' conflicts with active plugin '{other_name}': "
            f"only one '{plugin_type}' can be active",
            [
                f"Deactivate '{other_name}' before activating '{name}'",
                f"Use '{other_name}' for {type_words(plugin_type)} instead",
            ],
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "conflicting_plugin": self.conflicting_plugin,
            "conflicting_plugin_id": self.conflicting_plugin_id,
            "conflict_type": self.conflict_type,
            "message": self.message,
            "resolution_options": self.resolution_options,
        }
        if self.declared_by is not None:
            out["declared_by"] = self.declared_by
            out["specifier"] = self.specifier
        return out


def conflicts_with_active(
    me: Facts, active: list[Facts], singleton_types: frozenset[str]
) -> list[Conflict]:
    """Conflicts of one plugin version with the active ones, by :func:`pair_conflicts`."""
    conflicts = []
    for other in active:
        found = pair_conflicts(me, other, singleton_types)
        if found is not None:
            conflicts.append(Conflict.between(me, other, found))
    return conflicts


@dataclass
class MissingDependency:
    requirement: str
    name: str
    active_version: str | None
    registered_versions: list[str]
    satisfiable_by_registered: bool
    satisfying: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requirement": self.requirement,
            "name": self.name,
            "active_version": self.active_version,
            "registered_versions": self.registered_versions,
            "registered_version_satisfies": self.satisfiable_by_registered,
            "satisfying_registered": self.satisfying,
        }


def unmet_requirements(
    me: Facts, registered: list[Facts], *, need_active: bool
) -> list[MissingDependency]:
    """The `requires` of `me` not met: by any registered version, or (need_active) by an
    active one. Each says which registered versions would satisfy it."""
    by_key: dict[str, list[Facts]] = {}
    for r in registered:
        by_key.setdefault(r.key, []).append(r)
    missing: list[MissingDependency] = []
    for spec in me.requires:
        same_name = by_key.get(spec.key, [])
        satisfying = [r for r in same_name if spec.allows(r.version)]
        active = next((r for r in same_name if r.status == "active"), None)
        ok = any(r.status == "active" for r in satisfying) if need_active else bool(satisfying)
        if ok:
            continue
        missing.append(
            MissingDependency(
                requirement=spec.raw,
                name=spec.name,
                active_version=active.version if active else None,
                registered_versions=sorted({r.version for r in same_name}, key=sort_version),
                satisfiable_by_registered=bool(satisfying),
                satisfying=[
                    {"id": r.id, "version": r.version, "status": r.status}
                    for r in sorted(satisfying, key=lambda r: r.sort_key, reverse=True)
                ],
            )
        )
    return missing


def missing_python_requirements(meta: dict[str, Any]) -> list[str]:
    """`python_requirements` entries not installed (or installed at a version outside the
    specifier) in the environment the plugin runs in, each with the reason."""
    from importlib.metadata import PackageNotFoundError, version

    missing = []
    for item in meta.get("python_requirements") or []:
        try:
            req = Requirement(str(item))
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            missing.append(f"{item} (not installed)")
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            missing.append(f"{item} (installed: {installed})")
    return missing


def dependents_of(me: Facts, active: list[Facts]) -> list[Facts]:
    """Active plugins whose `requires` names `me` (unregistering it would break them)."""
    return [
        other
        for other in active
        if other.id != me.id and any(s.matches(me.name, me.version) for s in other.requires)
    ]
