"""Discovery's answer: what the sources found (`mlx_platform.discovery`), judged by the rules
(can it run here, does it conflict with what is active, is it registered already) and, with
`auto_register`, registered.

A package index or git remote may be named with credentials (``https://user:token@host/...``):
their passwords are given to the secret redactor before the sources run, so the log lines of
the scan, the answer's locations and messages, and the repository URL of a plugin registered
from a git remote show them masked.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from mlx_platform.composition import rules
from mlx_platform.core.audit import Origin
from mlx_platform.core.context import Core
from mlx_platform.core.registry import register_plugin
from mlx_platform.core.secrets import REDACTOR, remember_url_credentials
from mlx_platform.discovery.common import Found
from mlx_platform.discovery.git import parse_repos
from mlx_platform.discovery.scan import collect
from mlx_platform.errors import MLXError
from mlx_platform.storage.repositories import PluginRepository
from mlx_platform.wire import (
    DiscoveredPlugin,
    DiscoveryError,
    DiscoveryResult,
    DiscoverySummary,
    RegisterPluginRequest,
)

log = logging.getLogger("mlx_platform.discovery")
_REGISTER_FIELDS = frozenset(RegisterPluginRequest.model_fields)


def compatibility(manifest: dict[str, Any]) -> str | None:
    """None when the plugin can run here, else the reason it cannot (the rule engine's)."""
    problems = rules.platform_problems(manifest.get("metadata") or {})
    return "; ".join(problems) or None


# ---------------------------------------------------------------------------- the answer


def discover(
    core: Core,
    sources: list[str],
    *,
    include_namespace: str | None,
    auto_register: bool,
    origin: Origin | None = None,
) -> DiscoveryResult:
    settings = core.settings
    remember_url_credentials(settings.plugin_index_url or "")
    for repo in parse_repos(settings.plugin_git_repos):
        remember_url_credentials(repo.url)
    found, scan_errors = collect(settings, sources, include_namespace)
    errors = [DiscoveryError(**e) for e in scan_errors]

    # the active plugins (for conflicts) and the registered versions of what was found
    names = {rules.canonical_key(str(f.manifest["name"])) for f in found}
    with core.db.read() as session:
        registered = PluginRepository(session).active_or_named(names)
    active = [rules.facts_of_row(r) for r in registered if r.status == "active"]
    known = {(r.name, r.version): r.id for r in registered}

    plugins: list[DiscoveredPlugin] = []
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
        already = key in known
        new_id: str | None = None
        registerable = f.installed and bool(manifest.get("class_path"))
        if auto_register and not reason and not already and registerable:
            new_id = _auto_register(core, f, origin, errors)
            if new_id is not None:
                known[key] = new_id
        plugins.append(
            DiscoveredPlugin(
                name=key[0],
                source=f.source,
                version=version or None,
                type=manifest.get("type"),
                description=manifest.get("description"),
                location=_shown(f.location),
                class_path=manifest.get("class_path"),
                installed=f.installed,
                compatible=not reason,
                incompatible_reason=_shown(reason) or None,
                conflicts=[c.conflicting_plugin for c in conflicts],
                already_registered=already,
                auto_registered=new_id is not None,
                plugin_id=known.get(key),
            )
        )
    summary = DiscoverySummary(
        total_discovered=len(plugins),
        compatible_plugins=sum(1 for p in plugins if p.compatible),
        incompatible_plugins=sum(1 for p in plugins if not p.compatible),
        auto_registered=sum(1 for p in plugins if p.auto_registered),
    )
    log.info(
        "discovery (%s%s): %d found, %d errors, %d auto-registered",
        ",".join(sources),
        f", namespace {include_namespace}" if include_namespace else "",
        len(plugins),
        len(errors),
        summary.auto_registered,
    )
    errors = [
        e.model_copy(update={"location": _shown(e.location), "message": REDACTOR.redact(e.message)})
        for e in errors
    ]
    return DiscoveryResult(discovered_plugins=plugins, discovery_summary=summary, errors=errors)


def _shown(text: str | None) -> str | None:
    """`text` with every known secret masked (a password in a source's URL among them)."""
    return REDACTOR.redact(text) if text else text


def _auto_register(
    core: Core, f: Found, origin: Origin | None, errors: list[DiscoveryError]
) -> str | None:
    """Register what `f` found; its id, or None with the reason added to `errors`."""
    try:
        fields = {k: v for k, v in f.manifest.items() if k in _REGISTER_FIELDS}
        if isinstance(fields.get("repository_url"), str):
            # a git remote's URL, kept and shown with the plugin: never its password
            fields["repository_url"] = _shown(fields["repository_url"])
        req = RegisterPluginRequest.model_validate(fields)
        return register_plugin(core, req, origin=origin, action="auto_register").id
    except (MLXError, PydanticValidationError) as exc:
        errors.append(
            DiscoveryError(
                source=f.source, location=f.location, message=f"auto_register failed: {exc}"
            )
        )
        return None
