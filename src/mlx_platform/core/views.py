"""Stored rows as the API shows them: secrets masked, figures measured or zero."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from mlx_platform.core import config_schema, integrity
from mlx_platform.core.context import Core
from mlx_platform.core.metrics import recent_performance
from mlx_platform.core.secrets import REDACTOR, mask
from mlx_platform.storage import PluginRow

_META_DEFAULTS: dict[str, Any] = {
    "capabilities": [],
    "data_formats": [],
    "integration_points": [],
    "conflicts_with": [],
    "requires": [],
    "optional_deps": [],
    "supported_platforms": [],
    "min_python_version": None,
}


def _words(text: str | None) -> str | None:
    """A message a plugin may have written (masked when stored; masked again here for rows
    written before that, or by a replica that did not know the secret yet)."""
    return REDACTOR.redact(text) if text else text


def health_summary(row: PluginRow, shown: tuple[str, str | None]) -> dict[str, Any]:
    """The last health check; for a plugin shown in `error` (no replica runs it), unhealthy
    with the reason."""
    if shown[0] == "error" and row.status == "active":
        return {
            "status": "unhealthy",
            "last_check": row.health_last_check,
            "response_time_ms": row.health_response_time_ms,
            "message": _words(shown[1]),
        }
    return {
        "status": row.health_status,
        "last_check": row.health_last_check,
        "response_time_ms": row.health_response_time_ms,
        "message": _words(row.health_message),
    }


def plugin_summary(row: PluginRow, shown: tuple[str, str | None]) -> dict[str, Any]:
    """`shown`: the status to show and its reason (registry.shown_status)."""
    meta = row.plugin_metadata or {}
    return {
        "id": row.id,
        "name": row.name,
        "type": row.type,
        "version": row.version,
        "status": shown[0],
        "description": row.description,
        "category": row.category,
        "capabilities": list(meta.get("capabilities") or []),
        "conflicts_with": list(meta.get("conflicts_with") or []),
        "integration_points": list(meta.get("integration_points") or []),
        "resource_requirements": row.requirements,
        "configuration": config_schema.summary(row.configuration_schema or {}),
        "health": health_summary(row, shown),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def plugin_detail(core: Core, row: PluginRow, shown: tuple[str, str | None]) -> dict[str, Any]:
    schema = row.configuration_schema or {}
    meta = {**_META_DEFAULTS, **(row.plugin_metadata or {})}
    return {
        "id": row.id,
        "name": row.name,
        "type": row.type,
        "version": row.version,
        "status": shown[0],
        "status_reason": _words(shown[1]),
        "description": row.description,
        "category": row.category,
        "class_path": row.class_path,
        "isolation": row.isolation,
        "metadata": meta,
        "configuration_schema": config_schema.public_schema(schema),
        "configuration": mask(row.configuration or {}, config_schema.secret_fields(schema)),
        "operations": sorted((row.class_info or {}).get("operations", {})),
        # the code pinned at registration: how many files, where (not every file)
        "code_digest": integrity.summary(row.code_digest),
        "performance_metrics": recent_performance(core.metrics, row.id, timedelta(hours=24)),
        "health": health_summary(row, shown),
        "documentation_url": row.documentation_url,
        "repository_url": row.repository_url,
        **{k: v for k, v in (row.extra or {}).items() if v not in (None, [], "")},
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "activated_at": row.activated_at,
    }
