"""Find plugins where users keep them, without running plugin code in the service."""

from __future__ import annotations

import logging
import platform
import sys
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import ValidationError as PydanticValidationError

from mlx_platform import __api_version__
from mlx_platform.core import rules
from mlx_platform.core.context import Core
from mlx_platform.errors import MLXError
from mlx_platform.plugins import ManifestError, load_manifest
from mlx_platform.plugins._manifest import MANIFEST_FILENAME
from mlx_platform.runtime.manifests import read_entry_point_manifests
from mlx_platform.storage.repositories import PluginRepository
from mlx_platform.wire import RegisterPluginRequest

log = logging.getLogger("mlx_platform.discovery")
SOURCES = ("filesystem", "pypi", "git")


def compatibility(manifest: dict[str, Any]) -> str | None:
    """None when the plugin can run here, else the reason it cannot."""
    meta = manifest.get("metadata") or {}
    mpv = meta.get("min_python_version")
    if mpv:
        try:
            if Version(platform.python_version()) < Version(str(mpv)):
                return f"needs Python {mpv}+, this is {platform.python_version()}"
        except InvalidVersion:
            return f"min_python_version '{mpv}' is not a version"
    platforms = meta.get("supported_platforms") or []
    if platforms and not any(sys.platform.startswith(p) for p in platforms):
        return f"supports {', '.join(platforms)}, not {sys.platform}"
    api = meta.get("platform_api")
    if api:
        try:
            if not SpecifierSet(str(api)).contains(__api_version__, prereleases=True):
                return f"needs platform API {api}, this is {__api_version__}"
        except InvalidSpecifier:
            return f"platform_api '{api}' is not a version specifier"
    return None


def _filesystem(dirs: list[Path]) -> tuple[list[tuple[dict[str, Any], str]], list[dict[str, Any]]]:
    found: list[tuple[dict[str, Any], str]] = []
    errors: list[dict[str, Any]] = []
    for base in dirs:
        if not base.is_dir():
            errors.append(
                {"source": "filesystem", "location": str(base), "message": "not a folder"}
            )
            continue
        candidates = [base] if (base / MANIFEST_FILENAME).is_file() else []
        candidates += sorted(p for p in base.iterdir() if (p / MANIFEST_FILENAME).is_file())
        for folder in candidates:
            try:
                found.append((load_manifest(folder), str(folder / MANIFEST_FILENAME)))
            except ManifestError as exc:
                errors.append(
                    {"source": "filesystem", "location": str(folder), "message": str(exc)}
                )
    return found, errors


def _installed(timeout: float) -> tuple[list[tuple[dict[str, Any], str]], list[dict[str, Any]]]:
    items, failure = read_entry_point_manifests(timeout)
    if failure:
        return [], [{"source": "pypi", "location": None, "message": failure}]
    found, errors = [], []
    for item in items:
        where = f"{item.get('distribution')} {item.get('dist_version')} (entry point {item['entry_point']} = {item['value']})"
        if "manifest" in item:
            manifest = item["manifest"]
            if not manifest.get("version") or manifest["version"] == "0.0.0":
                manifest["version"] = item.get("dist_version") or "0.0.0"
            found.append((manifest, where))
        else:
            errors.append(
                {"source": "pypi", "location": where, "message": item.get("error", "unreadable")}
            )
    return found, errors


def discover(
    core: Core, sources: list[str], *, include_namespace: str | None, auto_register: bool
) -> dict[str, Any]:
    from mlx_platform.core.registry import register_plugin

    raw: list[tuple[str, dict[str, Any], str]] = []
    errors: list[dict[str, Any]] = []
    if "filesystem" in sources:
        found, errs = _filesystem(core.settings.plugin_dirs)
        raw += [("filesystem", m, loc) for m, loc in found]
        errors += errs
    if "pypi" in sources:
        found, errs = _installed(core.settings.class_check_timeout)
        raw += [("pypi", m, loc) for m, loc in found]
        errors += errs
    if "git" in sources:
        pass  # git repositories (MLX_PLUGIN_GIT_REPOS) arrive with the discovery issue
    if include_namespace:
        raw = [r for r in raw if True]  # namespace scanning arrives with the discovery issue

    with core.db.read() as session:
        repo = PluginRepository(session)
        registered = repo.all()
    active = [r for r in registered if r.status == "active"]
    known = {(r.name, r.version): r.id for r in registered}

    plugins: list[dict[str, Any]] = []
    for source, manifest, location in raw:
        reason = compatibility(manifest)
        conflicts = rules.find_conflicts(
            manifest["name"],
            str(manifest["version"]),
            manifest.get("type") or "",
            manifest.get("metadata") or {},
            active,
            core.settings.singleton_type_set,
        )
        key = (manifest["name"], str(manifest["version"]))
        item: dict[str, Any] = {
            "name": manifest["name"],
            "source": source,
            "version": str(manifest["version"]),
            "type": manifest.get("type"),
            "description": manifest.get("description"),
            "location": location,
            "class_path": manifest.get("class_path"),
            "installed": True,
            "compatible": reason is None,
            "incompatible_reason": reason,
            "conflicts": [c.conflicting_plugin for c in conflicts],
            "already_registered": key in known,
            "auto_registered": False,
            "plugin_id": known.get(key),
        }
        if auto_register and reason is None and key not in known:
            try:
                req = RegisterPluginRequest.model_validate(manifest)
                result = register_plugin(core, req)
                item["auto_registered"] = True
                item["plugin_id"] = result["id"]
                known[key] = result["id"]
            except (MLXError, PydanticValidationError) as exc:
                errors.append(
                    {
                        "source": source,
                        "location": location,
                        "message": f"auto_register failed: {exc}",
                    }
                )
        plugins.append(item)
    summary = {
        "total_discovered": len(plugins),
        "compatible_plugins": sum(1 for p in plugins if p["compatible"]),
        "incompatible_plugins": sum(1 for p in plugins if not p["compatible"]),
        "auto_registered": sum(1 for p in plugins if p["auto_registered"]),
    }
    return {"discovered_plugins": plugins, "discovery_summary": summary, "errors": errors}
