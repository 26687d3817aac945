"""Discovery's answer: what the sources found (`mlx_platform.discovery`), judged by the rules
(can it run here, does it conflict with what is active, is it registered already) and, with
`auto_register`, registered.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from mlx_platform.composition import rules
from mlx_platform.core.audit import Origin
from mlx_platform.core.context import Core
from mlx_platform.core.registry import register_plugin
from mlx_platform.discovery.scan import collect
from mlx_platform.errors import MLXError
from mlx_platform.storage.repositories import PluginRepository
from mlx_platform.wire import RegisterPluginRequest

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
) -> dict[str, Any]:
    found, errors = collect(core.settings, sources, include_namespace)

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
                item["plugin_id"] = result.id
                known[key] = result.id
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
