"""Find plugins where users keep them, without running plugin code in the service.

Sources (each one's failures are per-item entries of ``errors``, never a failed scan):

- ``filesystem``: the folders of `MLX_PLUGIN_PATH`; a folder holding ``mlx-plugin.toml`` is a
  plugin, and so is each direct subfolder that holds one.
- ``pypi``: installed distributions declaring the entry-point group ``mlx_platform.plugins``
  (`runtime.manifests`: enumerated with importlib.metadata, targets read in one throwaway
  process per scan, cached), and the ``mlx-plugin-*`` projects of the package index
  `MLX_PLUGIN_INDEX_URL` (`discovery_index`).
- ``git``: the repositories of `MLX_PLUGIN_GIT_REPOS` (`discovery_git`).
- ``include_namespace``: `Plugin` subclasses in the modules under a package, read from source
  with `ast` (`discovery_namespace`).

The sources run side by side; the answer lists them in the order above.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import ValidationError as PydanticValidationError

from mlx_platform.core import rules
from mlx_platform.core.audit import Origin
from mlx_platform.core.context import Core
from mlx_platform.core.discovery_common import Found, Scan, check_manifest, manifest_folders
from mlx_platform.core.discovery_git import parse_repos, scan_repo
from mlx_platform.core.discovery_index import scan_index
from mlx_platform.core.discovery_namespace import check_namespace_name, scan_namespace
from mlx_platform.core.registry import register_plugin
from mlx_platform.errors import MLXError
from mlx_platform.plugins import ManifestError, load_manifest
from mlx_platform.plugins._manifest import MANIFEST_FILENAME
from mlx_platform.runtime.manifests import scan_entry_points
from mlx_platform.storage.repositories import PluginRepository
from mlx_platform.wire import RegisterPluginRequest

log = logging.getLogger("mlx_platform.discovery")
SOURCES = ("filesystem", "pypi", "git")
_REGISTER_FIELDS = frozenset(RegisterPluginRequest.model_fields)


def compatibility(manifest: dict[str, Any]) -> str | None:
    """None when the plugin can run here, else the reason it cannot (the rule engine's)."""
    problems = rules.platform_problems(manifest.get("metadata") or {})
    return "; ".join(problems) or None


# ---------------------------------------------------------------------------- sources


def scan_filesystem(dirs: list[Path]) -> Scan:
    scan = Scan()
    for base in dirs:
        if not base.is_dir():
            scan.error("filesystem", str(base), "not a folder")
            continue
        for folder in manifest_folders(base):
            location = str(Path(folder) / MANIFEST_FILENAME)
            try:
                manifest = load_manifest(folder)
            except (ManifestError, OSError, UnicodeDecodeError) as exc:
                scan.error("filesystem", folder, str(exc))
                continue
            problem = check_manifest(manifest)
            if problem:
                scan.error("filesystem", folder, f"{location}: {problem}")
                continue
            scan.found.append(Found("filesystem", manifest, location))
    return scan


def scan_installed(cache_path: Path | None, timeout: float) -> Scan:
    scan = Scan()
    eps = scan_entry_points(cache_path, timeout)
    log.info(
        "entry points: %d found, %d from the cache, %d read in %d throwaway process(es)",
        len(eps.items),
        eps.cached,
        eps.read,
        eps.throwaway_runs,
    )
    for item in sorted(eps.items, key=lambda i: (i.entry_point.name, i.distribution)):
        ep = item.entry_point
        where = f"{item.distribution} {ep.version} (entry point {ep.name} = {ep.value})"
        if item.manifest is None:
            scan.error("pypi", where, item.error or "unreadable")
            continue
        manifest = {k: v for k, v in item.manifest.items() if k in _REGISTER_FIELDS}
        if not manifest.get("version") or manifest["version"] == "0.0.0":
            manifest["version"] = ep.version
        problem = check_manifest(manifest)
        if problem:
            scan.error("pypi", where, problem)
            continue
        try:
            dist = (canonicalize_name(ep.distribution), str(Version(ep.version)))
        except InvalidVersion:
            dist = (canonicalize_name(ep.distribution), ep.version)
        scan.found.append(Found("pypi", manifest, where, distribution=dist))
    return scan


def _safely(source: str, label: str | None, func: Callable[[], Scan]) -> Scan:
    """A source that fails in a way nobody foresaw costs an error entry, not the scan."""
    try:
        return func()
    except MLXError:
        raise
    except Exception as exc:  # noqa: BLE001
        log.exception("discovery source %s failed", source)
        scan = Scan()
        scan.error(source, label, f"{type(exc).__name__}: {exc}")
        return scan


def collect(
    core: Core, sources: list[str], include_namespace: str | None
) -> tuple[list[Found], list[dict[str, Any]]]:
    """Every source asked for, run side by side; found plugins and errors in source order."""
    settings = core.settings
    cache = settings.home / "cache"
    if include_namespace:
        check_namespace_name(include_namespace)
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="mlx-discover") as pool:
        fs = installed = index = None
        if "filesystem" in sources:
            fs = pool.submit(
                _safely, "filesystem", None, lambda: scan_filesystem(settings.plugin_dirs)
            )
        if "pypi" in sources:
            installed = pool.submit(
                _safely,
                "pypi",
                None,
                lambda: scan_installed(cache / "entry_points.json", settings.class_check_timeout),
            )
            if settings.plugin_index_url:
                url = settings.plugin_index_url
                index = pool.submit(_safely, "pypi", url, lambda: scan_index(url, cache / "index"))
        repos = []
        if "git" in sources:
            for spec in parse_repos(settings.plugin_git_repos):
                repos.append(
                    pool.submit(
                        _safely,
                        "git",
                        spec.label,
                        functools.partial(scan_repo, spec, cache / "git"),
                    )
                )
        namespace = None
        if include_namespace:
            search = [*sys.path, *(str(p) for p in settings.plugin_dirs)]
            namespace = pool.submit(
                _safely,
                "namespace",
                include_namespace,
                lambda: scan_namespace(include_namespace, search),
            )
        total = Scan()
        if fs is not None:
            total.extend(fs.result())
        if installed is not None:
            total.extend(installed.result())
        if index is not None:
            # The index's copy of a distribution installed here is reported once, installed.
            have = {f.distribution for f in total.found if f.source == "pypi"}
            listed = index.result()
            total.found += [f for f in listed.found if f.distribution not in have]
            total.errors += listed.errors
        for repo in repos:
            total.extend(repo.result())
        if namespace is not None:
            ns = namespace.result()
            # A class another source already names (an entry point, a manifest) is reported once.
            named = {f.manifest.get("class_path") for f in total.found}
            total.found += [f for f in ns.found if f.manifest.get("class_path") not in named]
            total.errors += ns.errors
    return total.found, total.errors


# ---------------------------------------------------------------------------- the answer


def discover(
    core: Core,
    sources: list[str],
    *,
    include_namespace: str | None,
    auto_register: bool,
    origin: Origin | None = None,
) -> dict[str, Any]:

    found, errors = collect(core, sources, include_namespace)

    with core.db.read() as session:
        registered = PluginRepository(session).all()
    active = [rules.facts_of_row(r) for r in registered if r.status == "active"]
    known = {(r.name, r.version): r.id for r in registered}

    plugins: list[dict[str, Any]] = []
    for f in found:
        manifest = f.manifest
        reason = "; ".join(f.reasons) or compatibility(manifest)
        version = str(manifest.get("version") or "")
        key = (str(manifest["name"]), version)
        me = rules.facts_from(
            id=known.get(key),
            name=key[0],
            version=version,
            type=str(manifest.get("type") or ""),
            meta=manifest.get("metadata") or {},
        )
        conflicts = rules.conflicts_with_active(me, active, core.settings.singleton_type_set)
        item: dict[str, Any] = {
            "name": key[0],
            "source": f.source,
            "version": version or None,
            "type": manifest.get("type"),
            "description": manifest.get("description"),
            "location": f.location,
            "class_path": manifest.get("class_path"),
            "installed": f.installed,
            "compatible": not reason,
            "incompatible_reason": reason or None,
            "conflicts": [c.conflicting_plugin for c in conflicts],
            "already_registered": key in known,
            "auto_registered": False,
            "plugin_id": known.get(key),
        }
        registerable = f.installed and bool(manifest.get("class_path"))
        if auto_register and not reason and key not in known and registerable:
            try:
                req = RegisterPluginRequest.model_validate(
                    {k: v for k, v in manifest.items() if k in _REGISTER_FIELDS}
                )
                result = register_plugin(core, req, origin=origin, action="auto_register")
                item["auto_registered"] = True
                item["plugin_id"] = result["id"]
                known[key] = result["id"]
            except (MLXError, PydanticValidationError) as exc:
                errors.append(
                    {
                        "source": f.source,
                        "location": f.location,
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
    log.info(
        "discovery (%s%s): %d found, %d errors, %d auto-registered",
        ",".join(sources),
        f", namespace {include_namespace}" if include_namespace else "",
        len(plugins),
        len(errors),
        summary["auto_registered"],
    )
    return {"discovered_plugins": plugins, "discovery_summary": summary, "errors": errors}
