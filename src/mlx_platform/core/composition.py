"""Validate a composition of plugins against the rules, from registered metadata only."""

from __future__ import annotations

import sys
from itertools import combinations
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from mlx_platform.core import rules
from mlx_platform.core.context import Core
from mlx_platform.core.resources import resource_shortfall
from mlx_platform.storage import PluginRow
from mlx_platform.storage.repositories import PluginRepository
from mlx_platform.wire import CompositionEntry


def _pick(
    entry: CompositionEntry, candidates: list[PluginRow]
) -> tuple[PluginRow | None, str | None]:
    """The registered row an entry names: exact version, newest satisfying specifier, or newest."""
    if not candidates:
        return None, f"no plugin named '{entry.name}' is registered"

    def vkey(r: PluginRow) -> Version:
        try:
            return Version(r.version)
        except InvalidVersion:
            return Version("0")

    ordered = sorted(candidates, key=vkey, reverse=True)
    if not entry.version:
        return ordered[0], None
    exact = [r for r in ordered if r.version == entry.version]
    if exact:
        return exact[0], None
    try:
        spec = (
            SpecifierSet(entry.version)
            if entry.version[0] in "<>=!~"
            else SpecifierSet(f"=={entry.version}")
        )
    except Exception:  # noqa: BLE001 - an unreadable specifier is reported, not raised
        return None, f"'{entry.version}' is neither a version nor a specifier"
    fitting = [r for r in ordered if spec.contains(vkey(r), prereleases=True)]
    if fitting:
        return fitting[0], None
    versions = ", ".join(r.version for r in ordered)
    return (
        None,
        f"no registered version of '{entry.name}' satisfies '{entry.version}' (registered: {versions})",
    )


def validate_composition(core: Core, entries: list[CompositionEntry]) -> dict[str, Any]:
    with core.db.read() as session:
        repo = PluginRepository(session)
        candidates = repo.by_names([e.name for e in entries])
    by_name: dict[str, list[PluginRow]] = {}
    for row in candidates:
        by_name.setdefault(row.name, []).append(row)

    conflicts: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    synergies: list[dict[str, Any]] = []
    recommendations: list[str] = []
    chosen: list[PluginRow] = []
    for entry in entries:
        picked, problem = _pick(entry, by_name.get(entry.name, []))
        if picked is None:
            conflicts.append(
                {
                    "type": "missing_dependency"
                    if entry.name not in by_name
                    else "version_conflict",
                    "plugins": [entry.name],
                    "message": problem,
                    "resolution_options": [
                        f"Register '{entry.name}'" + (f" {entry.version}" if entry.version else "")
                    ],
                }
            )
            continue
        chosen.append(picked)

    singleton_types = core.settings.singleton_type_set
    names = {r.name for r in chosen}
    for a, b in combinations(chosen, 2):
        if a.name == b.name:
            conflicts.append(
                {
                    "type": "version_conflict",
                    "plugins": [a.name],
                    "message": f"'{a.name}' appears twice ({a.version} and {b.version})",
                    "resolution_options": [f"Keep one version of '{a.name}'"],
                }
            )
            continue
        found = rules.find_conflicts(
            a.name, a.version, a.type, a.plugin_metadata or {}, [_as_active(b)], singleton_types
        )
        for c in found:
            conflicts.append(
                {
                    "type": c.conflict_type,
                    "plugins": [a.name, b.name],
                    "message": c.message,
                    "resolution_options": [
                        f"Remove '{b.name}' from the composition",
                        f"Remove '{a.name}' from the composition",
                    ],
                }
            )
    for row in chosen:
        meta = row.plugin_metadata or {}
        for spec in rules._specs(meta, "requires"):  # noqa: SLF001
            match = next((r for r in chosen if spec.matches_name(r.name)), None)
            if match is None:
                conflicts.append(
                    {
                        "type": "missing_dependency",
                        "plugins": [row.name],
                        "message": f"'{row.name}' requires '{spec.raw}', which the composition does not include",
                        "resolution_options": [f"Add '{spec.raw}' to the composition"],
                    }
                )
            elif not spec.allows(match.version):
                conflicts.append(
                    {
                        "type": "version_conflict",
                        "plugins": [row.name, match.name],
                        "message": f"'{row.name}' requires '{spec.raw}' but the composition has {match.name} {match.version}",
                        "resolution_options": [
                            f"Use a version of '{match.name}' satisfying '{spec.specifier}'"
                        ],
                    }
                )
        platforms = meta.get("supported_platforms") or []
        if (
            platforms
            and sys.platform not in platforms
            and not any(sys.platform.startswith(p) for p in platforms)
        ):
            conflicts.append(
                {
                    "type": "incompatible_platform",
                    "plugins": [row.name],
                    "message": f"'{row.name}' supports {', '.join(platforms)}, not {sys.platform}",
                    "resolution_options": [f"Run '{row.name}' on one of: {', '.join(platforms)}"],
                }
            )
        mpv = meta.get("min_python_version")
        if mpv:
            try:
                if Version(f"{sys.version_info.major}.{sys.version_info.minor}") < Version(
                    str(mpv)
                ):
                    conflicts.append(
                        {
                            "type": "incompatible_platform",
                            "plugins": [row.name],
                            "message": f"'{row.name}' needs Python {mpv}+",
                            "resolution_options": [f"Run on Python {mpv} or newer"],
                        }
                    )
            except InvalidVersion:
                pass
        for peer, spec_text in (meta.get("recommends") or {}).items():
            peer_row = next(
                (r for r in chosen if rules.parse_spec(peer).matches_name(r.name)), None
            )
            if peer_row is None:
                continue
            try:
                wanted = SpecifierSet(spec_text)
                ok = wanted.contains(Version(peer_row.version), prereleases=True)
            except Exception:  # noqa: BLE001
                continue
            if not ok:
                warnings.append(
                    {
                        "type": "version_mismatch",
                        "message": f"{peer_row.name} version {peer_row.version} does not match the {spec_text} that '{row.name}' recommends",
                        "severity": "low",
                        "plugins": [peer_row.name],
                    }
                )
                recommendations.append(
                    f"Consider moving {peer_row.name} to {spec_text} for better {row.name} integration"
                )
        for syn in meta.get("synergies") or []:
            partner = syn.get("with") or syn.get("plugin")
            if partner in names:
                synergies.append(
                    {
                        "plugins": [row.name, partner],
                        "integration_points": list(syn.get("integration_points") or []),
                        "benefits": list(syn.get("benefits") or []),
                    }
                )
    seen_pairs = {tuple(sorted(s["plugins"])) for s in synergies}
    for a, b in combinations(chosen, 2):
        shared = sorted(
            set((a.plugin_metadata or {}).get("integration_points") or [])
            & set((b.plugin_metadata or {}).get("integration_points") or [])
        )
        pair = tuple(sorted([a.name, b.name]))
        if shared and pair not in seen_pairs and a.name != b.name:
            synergies.append(
                {
                    "plugins": [a.name, b.name],
                    "integration_points": shared,
                    "benefits": [f"Both integrate through {', '.join(shared)}"],
                }
            )
            seen_pairs.add(pair)
    shortfall = (
        resource_shortfall(
            core.capacity(), [r.requirements for r in chosen[:-1]], chosen[-1].requirements
        )
        if chosen
        else None
    )
    if shortfall:
        conflicts.append(
            {
                "type": "insufficient_resources",
                "plugins": [r.name for r in chosen],
                "message": "The composition needs more resources than the machine has",
                "resolution_options": ["Remove plugins from the composition", "Raise the capacity"],
                "shortfall": shortfall,
            }
        )
    return {
        "composition_valid": not conflicts,
        "conflicts": conflicts,
        "warnings": warnings,
        "synergies": synergies,
        "recommendations": recommendations,
        "resolved": [{"name": r.name, "version": r.version, "id": r.id} for r in chosen],
    }


def _as_active(row: PluginRow) -> PluginRow:
    return row
