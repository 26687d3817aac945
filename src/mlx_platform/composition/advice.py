"""What a valid or invalid composition could do better: ``version_mismatch`` warnings and
recommendations from what members ``recommends`` and declare as ``optional_deps``
(:func:`peer_warnings`, severity by :func:`mismatch`), and the synergies between members
(:func:`synergies`: declared ones, and members sharing integration points).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlx_platform.composition import rules
from mlx_platform.composition.facts import Facts, specifier_allows, version_of
from mlx_platform.composition.model import RegistryIndex


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


def peer_warnings(
    index: RegistryIndex,
    members: Mapping[str, Facts],
    warnings: list[dict[str, Any]],
    recommendations: list[str],
) -> None:
    """Append a ``version_mismatch`` warning (and its advice) for each member outside what
    another member ``recommends`` for it or names in its ``optional_deps``; and advise adding
    a registered optional dependency that is not in the set."""
    for f in members.values():
        for peer_key, _peer_name, spec_text in f.recommends:
            peer = members.get(peer_key)
            if peer is None or peer is f or specifier_allows(spec_text, peer.version):
                continue
            warning, advice = _not_recommended(f, peer, spec_text)
            warnings.append(warning)
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
            warnings.append(_optional_outside(f, peer, spec.spec_text))
            recommendations.append(
                f"Consider {peer.label} {spec.spec_text} to use it with {f.label}"
            )


def _not_recommended(f: Facts, peer: Facts, spec_text: str) -> tuple[dict[str, Any], str]:
    """The warning and the advice for `peer`, outside what `f` recommends for it."""
    direction, severity, bound = mismatch(spec_text, peer.version)
    simple = bound is not None and spec_text in (f">={bound}", f"~={bound}")
    if direction == "older" and simple:
        message = f"{peer.label} version {peer.version} is older than recommended {bound}+"
        advice = (
            f"Consider upgrading {peer.label} to version {bound}+ for better {f.label} integration"
        )
    elif direction == "older":
        message = f"{peer.label} version {peer.version} is older than the recommended {spec_text}"
        advice = f"Consider upgrading {peer.label} to {spec_text} for better {f.label} integration"
    elif direction == "newer":
        message = f"{peer.label} version {peer.version} is newer than the recommended {spec_text}"
        advice = f"Consider {peer.label} {spec_text} for better {f.label} integration"
    else:
        message = f"{peer.label} version {peer.version} does not match the recommended {spec_text}"
        advice = f"Consider {peer.label} {spec_text} for better {f.label} integration"
    return _mismatch_warning(f, peer, spec_text, message, severity), advice


def _optional_outside(f: Facts, peer: Facts, spec_text: str) -> dict[str, Any]:
    """The warning for `peer`, outside the specifier of `f`'s optional dependency on it."""
    direction, severity, _bound = mismatch(spec_text, peer.version)
    how = f"{direction} than" if direction != "other" else "outside"
    message = (
        f"{peer.label} version {peer.version} is {how} the {spec_text} that {f.label} "
        "supports as an optional dependency"
    )
    return _mismatch_warning(f, peer, spec_text, message, severity)


def _mismatch_warning(
    f: Facts, peer: Facts, spec_text: str, message: str, severity: str
) -> dict[str, Any]:
    return {
        "type": "version_mismatch",
        "message": message,
        "severity": severity,
        "plugins": [peer.name],
        "recommended_by": f.name,
        "recommended": spec_text,
        "version": peer.version,
    }


def synergies(members: Mapping[str, Facts]) -> list[dict[str, Any]]:
    """Declared synergies between two members (both sides' declarations merged), then one
    per group of members sharing the same integration points (a declared pair not again)."""
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
