"""The Facts model: what plugin metadata says, read once.

A rule never names a particular plugin: everything comes from the metadata keys below, the
plugin's type (singleton types come from settings), its version and the environment.

- ``requires``, ``optional_deps``, ``conflicts_with``: plugin names with optional PEP 440
  specifiers (``mlflow>=2.0``), parsed with ``packaging``. Names compare canonicalised
  (``Foo_Bar`` == ``foo-bar``).
- ``recommends`` ({peer: specifier}), ``synergies`` ([{with, integration_points, benefits}]),
  ``integration_points``: read by composition validation (warnings and synergies).
- ``supported_platforms``, ``min_python_version``, ``platform_api``: whether a version can run
  here at all (:func:`platform_problems`).
- ``min_memory_mb``, ``min_cpu_cores``, ``gpu_required``: resource needs.
- ``display_name`` (optional, any extra key is kept): how messages name the plugin.

:class:`Facts` is one registered plugin version with all of that parsed; the composition
engine (``composition.resolver`` and ``composition.evaluate``), activation and registration
all reason over Facts, so the three apply the very same rules (``composition.rules``).
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from mlx_platform import __api_version__

# ---------------------------------------------------------------- versions and specifiers


def canonical_key(name: str) -> str:
    """The key plugins are matched by (`requires`, `conflicts_with`...): the name as PEP 503
    canonicalizes it (lower case, runs of - _ . as one -)."""
    return canonicalize_name(name)


@lru_cache(maxsize=65536)
def version_of(text: str) -> Version | None:
    """The parsed version, or None when `text` is not PEP 440 (cached: versions repeat)."""
    try:
        return Version(text)
    except InvalidVersion:
        return None


@lru_cache(maxsize=16384)
def specifier_set(text: str) -> SpecifierSet:
    return SpecifierSet(text)


@lru_cache(maxsize=262144)
def _allowed(spec_text: str, version: str) -> bool:
    v = version_of(version)
    if v is None:
        return False
    return specifier_set(spec_text).contains(v, prereleases=True)


def specifier_allows(spec_text: str, version: str) -> bool:
    """Whether `version` is inside the specifier (empty: every version). Cached per pair,
    as the same registry is asked the same questions on every validation."""
    if not spec_text:
        return True
    return _allowed(spec_text, version)


_NULL_VERSION = Version("0")


def sort_version(text: str) -> Version:
    return version_of(text) or _NULL_VERSION


@dataclass(frozen=True)
class Spec:
    """A plugin name with an optional version specifier: ``mlflow>=2.0``."""

    raw: str
    name: str
    specifier: SpecifierSet = field(default_factory=SpecifierSet)
    key: str = field(default="", compare=False)
    spec_text: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", canonicalize_name(self.name))
        if not self.spec_text and str(self.specifier):
            object.__setattr__(self, "spec_text", str(self.specifier))

    def matches_name(self, name: str) -> bool:
        return self.key == canonicalize_name(name)

    def allows(self, version: str) -> bool:
        return specifier_allows(self.spec_text, version)

    def matches(self, name: str, version: str) -> bool:
        return self.matches_name(name) and self.allows(version)


@lru_cache(maxsize=16384)
def parse_spec(text: str) -> Spec:
    """Parse ``name``, ``name>=1.0`` or ``name==1.2.0``; raises ValueError with the reason."""
    text = text.strip()
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(  # packaging's first line: its next ones draw a caret under the text
            f"'{text}' is not a plugin name with an optional version specifier, such as "
            f"mlflow>=2.0: {str(exc).splitlines()[0]}"
        ) from exc
    return Spec(raw=text, name=req.name, specifier=req.specifier)


def parse_specifier(text: str) -> SpecifierSet:
    try:
        return SpecifierSet(text)
    except InvalidSpecifier as exc:
        raise ValueError(f"'{text}' is not a version specifier: {exc}") from exc


def entry_spec(name: str, version: str | None) -> Spec:
    """What a composition entry asks for: any version, an exact version (``1.2.0``) or a
    specifier (``>=2,<3``). Raises ValueError when `version` is neither."""
    text = (version or "").strip()
    if not text:
        spec_text = ""
    elif text[0] in "<>=!~":
        spec_text = str(parse_specifier(text))
    elif version_of(text) is not None:
        spec_text = f"=={text}"
    else:
        raise ValueError(f"'{text}' is neither a version (1.2.0) nor a specifier (>=1.2)")
    raw = f"{name}{spec_text}" if spec_text else name
    return Spec(
        raw=raw, name=name, specifier=specifier_set(spec_text) if spec_text else SpecifierSet()
    )


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
            problems[f"metadata.python_requirements[{i}]"] = (
                f"not a PEP 508 requirement, such as pyarrow>=15: {str(exc).splitlines()[0]}"
            )
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


def _listed(meta: dict[str, Any], key: str) -> list[Any]:
    """A list-valued metadata key; a single string (manifests allow it) is a list of one."""
    value = meta.get(key) or []
    if isinstance(value, str):
        return [value]
    return list(value) if isinstance(value, list | tuple) else []


def specs_of(meta: dict[str, Any], key: str) -> list[Spec]:
    """The specs a list-valued key (``requires``, ``conflicts_with``, ``optional_deps``) names."""
    out = []
    for item in _listed(meta, key):
        try:
            out.append(parse_spec(str(item)))
        except ValueError:
            continue  # refused at registration; an old row must not break the rules
    return out


# ---------------------------------------------------------------- the environment


def platform_problems(meta: dict[str, Any]) -> list[str]:
    """Why a plugin version cannot run in this service (empty: it can): the platform it
    supports, the Python it needs, the platform API range it was written for."""
    problems = []
    platforms = [str(p) for p in _listed(meta, "supported_platforms")]
    if platforms and not any(sys.platform.startswith(p) for p in platforms):
        problems.append(f"supports {', '.join(platforms)}, not {sys.platform}")
    mpv = meta.get("min_python_version")
    if mpv:
        need = version_of(str(mpv))
        if need is None:
            problems.append(f"min_python_version '{mpv}' is not a version")
        elif sort_version(platform.python_version()) < need:
            problems.append(f"needs Python {mpv}+, this is {platform.python_version()}")
    api = meta.get("platform_api")
    if api:
        try:
            if not specifier_set(str(api)).contains(__api_version__, prereleases=True):
                problems.append(f"needs platform API {api}, this is {__api_version__}")
        except InvalidSpecifier:
            problems.append(f"platform_api '{api}' is not a version specifier")
    return problems


# ---------------------------------------------------------------- facts


@dataclass(frozen=True)
class DeclaredSynergy:
    key: str
    name: str
    integration_points: tuple[str, ...]
    benefits: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Facts:
    """One registered plugin version, its metadata parsed once. Compared by identity."""

    id: str
    name: str
    key: str
    version: str
    sort_key: Version
    type: str
    status: str
    label: str
    requires: tuple[Spec, ...]
    conflicts_with: tuple[Spec, ...]
    optional_deps: tuple[Spec, ...]
    recommends: tuple[tuple[str, str, str], ...]  # (peer key, peer name, specifier text)
    synergies: tuple[DeclaredSynergy, ...]
    integration_points: tuple[str, ...]
    memory_mb: int
    cpu_cores: float
    gpu: bool
    # Why this version cannot run here (platform, Python, platform API, class not loadable);
    # None when it can. Such versions are never chosen by the resolver.
    incompatible: str | None

    @property
    def required_keys(self) -> set[str]:
        """The canonical names of the plugins this version requires."""
        return {spec.key for spec in self.requires}

    @property
    def requirements(self) -> dict[str, Any]:
        return {
            "min_memory_mb": self.memory_mb,
            "min_cpu_cores": self.cpu_cores,
            "gpu_required": self.gpu,
        }

    def title(self) -> str:
        return f"'{self.name}' {self.version}"


def facts_from(
    *,
    id: str | None = None,
    name: str,
    version: str,
    type: str,
    meta: dict[str, Any] | None,
    status: str = "registered",
    loadable: bool = True,
    status_reason: str | None = None,
) -> Facts:
    meta = meta or {}
    recommends = []
    recommended = meta.get("recommends")
    for peer, spec in (recommended if isinstance(recommended, dict) else {}).items():
        try:
            text = str(parse_specifier(str(spec)))
        except ValueError:
            continue
        recommends.append((canonicalize_name(str(peer)), str(peer), text))
    synergies = []
    for item in _listed(meta, "synergies"):
        if not isinstance(item, dict):
            continue
        partner = item.get("with") or item.get("plugin")
        if not partner:
            continue
        synergies.append(
            DeclaredSynergy(
                canonicalize_name(str(partner)),
                str(partner),
                tuple(str(p) for p in item.get("integration_points") or []),
                tuple(str(b) for b in item.get("benefits") or []),
            )
        )
    problems = platform_problems(meta)
    if not loadable:
        problems.append(
            "its class cannot be loaded" + (f" ({status_reason})" if status_reason else "")
        )

    def number(key: str) -> float:
        try:
            return float(meta.get(key) or 0)
        except (TypeError, ValueError):
            return 0.0

    return Facts(
        id=id or f"\0candidate:{name}:{version}",  # not stored yet: an id no row has
        name=name,
        key=canonicalize_name(name),
        version=version,
        sort_key=sort_version(version),
        type=type,
        status=status,
        label=str(meta.get("display_name") or name),
        requires=tuple(specs_of(meta, "requires")),
        conflicts_with=tuple(specs_of(meta, "conflicts_with")),
        optional_deps=tuple(specs_of(meta, "optional_deps")),
        recommends=tuple(recommends),
        synergies=tuple(synergies),
        integration_points=tuple(
            dict.fromkeys(str(p) for p in _listed(meta, "integration_points"))
        ),
        memory_mb=int(number("min_memory_mb")),
        cpu_cores=number("min_cpu_cores"),
        gpu=bool(meta.get("gpu_required") or False),
        incompatible="; ".join(problems) or None,
    )


def facts_of_row(row: Any) -> Facts:
    """Facts of a PluginRow (or any object with its attributes: tests pass namespaces)."""
    return facts_from(
        id=row.id,
        name=row.name,
        version=row.version,
        type=getattr(row, "type", "") or "",
        meta=getattr(row, "plugin_metadata", None) or {},
        status=getattr(row, "status", "registered") or "registered",
        loadable=bool(getattr(row, "loadable", True)),
        status_reason=getattr(row, "status_reason", None),
    )
