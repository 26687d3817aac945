"""Every source asked for, run side by side (see the package's docstring)."""

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

from mlx_platform.discovery.common import Found, Scan
from mlx_platform.discovery.entry_points import scan_entry_points
from mlx_platform.discovery.filesystem import scan_filesystem
from mlx_platform.discovery.git import parse_repos, scan_repo
from mlx_platform.discovery.namespace import check_namespace_name, scan_namespace
from mlx_platform.errors import MLXError
from mlx_platform.settings import Settings
from mlx_platform.wire import RegisterPluginRequest

log = logging.getLogger("mlx_platform.discovery")
SOURCES = ("filesystem", "pypi", "git")
_REGISTER_FIELDS = frozenset(RegisterPluginRequest.model_fields)


# Here, not in `entry_points`: that module also runs as the throwaway process reading the
# targets, which should import no more than it needs (no pydantic).
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
        try:
            dist = (canonicalize_name(ep.distribution), str(Version(ep.version)))
        except InvalidVersion:
            dist = (canonicalize_name(ep.distribution), ep.version)
        scan.add("pypi", manifest, where, distribution=dist)
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
    settings: Settings, sources: list[str], include_namespace: str | None
) -> tuple[list[Found], list[dict[str, Any]]]:
    """Every source asked for, run side by side; found plugins and errors in source order."""
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
                # imported here: the index reader loads httpx (~60 ms, which loads its own
                # command line's rich and pygments when they are installed), and the service
                # imports this module as it starts
                from mlx_platform.discovery.index import scan_index

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
