"""Conflict and dependency rules, read from plugin metadata only.

A rule never names a particular plugin: everything comes from `conflicts_with`, `requires`,
the plugin's type (singleton types come from settings) and versions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from mlx_platform.storage import PluginRow


@dataclass(frozen=True)
class Spec:
    """A plugin name with an optional version specifier: ``mlflow>=2.0``."""

    raw: str
    name: str
    specifier: SpecifierSet = field(default_factory=SpecifierSet)

    def matches_name(self, name: str) -> bool:
        return canonicalize_name(self.name) == canonicalize_name(name)

    def allows(self, version: str) -> bool:
        if not str(self.specifier):
            return True
        try:
            return self.specifier.contains(Version(version), prereleases=True)
        except InvalidVersion:
            return False

    def matches(self, name: str, version: str) -> bool:
        return self.matches_name(name) and self.allows(version)


def parse_spec(text: str) -> Spec:
    """Parse ``name``, ``name>=1.0`` or ``name==1.2.0``; raises ValueError with the reason."""
    text = text.strip()
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(
            f"'{text}' is not a plugin name with an optional version specifier: {exc}"
        ) from exc
    return Spec(raw=text, name=req.name, specifier=req.specifier)


def parse_specifier(text: str) -> SpecifierSet:
    try:
        return SpecifierSet(text)
    except InvalidSpecifier as exc:
        raise ValueError(f"'{text}' is not a version specifier: {exc}") from exc


def check_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """Problems in a plugin's metadata that the rules could not read, by field."""
    problems: dict[str, str] = {}
    for key in ("requires", "conflicts_with", "optional_deps"):
        for i, item in enumerate(meta.get(key) or []):
            try:
                parse_spec(str(item))
            except ValueError as exc:
                problems[f"metadata.{key}[{i}]"] = str(exc)
    for i, item in enumerate(meta.get("python_requirements") or []):
        try:
            Requirement(str(item))
        except InvalidRequirement as exc:
            problems[f"metadata.python_requirements[{i}]"] = f"not a PEP 508 requirement: {exc}"
    for peer, spec in (meta.get("recommends") or {}).items():
        try:
            parse_specifier(str(spec))
        except ValueError as exc:
            problems[f"metadata.recommends.{peer}"] = str(exc)
    if meta.get("platform_api"):
        try:
            parse_specifier(str(meta["platform_api"]))
        except ValueError as exc:
            problems["metadata.platform_api"] = str(exc)
    if meta.get("min_python_version"):
        try:
            Version(str(meta["min_python_version"]))
        except InvalidVersion:
            problems["metadata.min_python_version"] = "is not a version"
    return problems


@dataclass
class Conflict:
    conflicting_plugin: str
    conflicting_plugin_id: str
    conflict_type: str
    message: str
    resolution_options: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "conflicting_plugin": self.conflicting_plugin,
            "conflicting_plugin_id": self.conflicting_plugin_id,
            "conflict_type": self.conflict_type,
            "message": self.message,
            "resolution_options": self.resolution_options,
        }


def _specs(meta: dict[str, Any], key: str) -> list[Spec]:
    out = []
    for item in meta.get(key) or []:
        try:
            out.append(parse_spec(str(item)))
        except ValueError:
            continue  # refused at registration; an old row must not break the rules
    return out


def find_conflicts(
    name: str,
    version: str,
    plugin_type: str,
    meta: dict[str, Any],
    active: list[PluginRow],
    singleton_types: frozenset[str],
    *,
    self_id: str | None = None,
) -> list[Conflict]:
    """Conflicts of a plugin (name, version, type, metadata) with the active plugins."""
    conflicts: list[Conflict] = []
    mine = _specs(meta, "conflicts_with")
    for other in active:
        if other.id == self_id:
            continue
        if canonicalize_name(other.name) == canonicalize_name(name):
            conflicts.append(
                Conflict(
                    other.name,
                    other.id,
                    "version_conflict",
                    f"Plugin '{name}' {version} conflicts with active '{other.name}' {other.version}: "
                    "one version of a plugin can be active at a time",
                    [
                        f"Deactivate '{other.name}' {other.version} ({other.id}) first",
                        f"Keep '{other.name}' {other.version} active and do not activate {version}",
                    ],
                )
            )
            continue
        theirs = _specs(other.plugin_metadata or {}, "conflicts_with")
        if any(s.matches(other.name, other.version) for s in mine) or any(
            s.matches(name, version) for s in theirs
        ):
            conflicts.append(
                Conflict(
                    other.name,
                    other.id,
                    "explicit_conflict",
                    f"Plugin '{name}' conflicts with active plugin '{other.name}'",
                    [
                        f"Deactivate '{other.name}' before activating '{name}'",
                        f"Keep '{other.name}' and choose another plugin than '{name}'",
                    ],
                )
            )
            continue
        if plugin_type in singleton_types and other.type == plugin_type:
            conflicts.append(
                Conflict(
                    other.name,
                    other.id,
                    "singleton_type",
                    f"Plugin '{name}' conflicts with active plugin '{other.name}': "
                    f"only one '{plugin_type}' can be active",
                    [
                        f"Deactivate '{other.name}' before activating '{name}'",
                        f"Use '{other.name}' for {plugin_type.replace('_', ' ')} instead",
                    ],
                )
            )
    return conflicts


@dataclass
class MissingDependency:
    requirement: str
    name: str
    active_version: str | None
    registered_versions: list[str]
    satisfiable_by_registered: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "requirement": self.requirement,
            "name": self.name,
            "active_version": self.active_version,
            "registered_versions": self.registered_versions,
            "registered_version_satisfies": self.satisfiable_by_registered,
        }


def missing_dependencies(
    meta: dict[str, Any], registered: list[PluginRow], *, need_active: bool
) -> list[MissingDependency]:
    """The `requires` entries not met: by any registered version, or (need_active) an active one."""
    missing: list[MissingDependency] = []
    for spec in _specs(meta, "requires"):
        same_name = [r for r in registered if spec.matches_name(r.name)]
        satisfying = [r for r in same_name if spec.allows(r.version)]
        active = next((r for r in same_name if r.status == "active"), None)
        ok = bool(satisfying) if not need_active else any(r.status == "active" for r in satisfying)
        if not ok:
            missing.append(
                MissingDependency(
                    requirement=spec.raw,
                    name=spec.name,
                    active_version=active.version if active else None,
                    registered_versions=sorted({r.version for r in same_name}),
                    satisfiable_by_registered=bool(satisfying),
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


def requirement_names(meta: dict[str, Any]) -> list[str]:
    return [s.name for s in _specs(meta, "requires")]


def dependents_of(row: PluginRow, active: list[PluginRow]) -> list[PluginRow]:
    """Active plugins whose `requires` names `row`."""
    out = []
    for other in active:
        if other.id == row.id:
            continue
        if any(
            s.matches(row.name, row.version)
            for s in _specs(other.plugin_metadata or {}, "requires")
        ):
            out.append(other)
    return out
