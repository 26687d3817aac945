"""Core's typed results as the API shows them: stored plugins (PluginSummary, PluginDetail:
secrets masked, figures measured or zero), a page's pagination block, a configuration change.

Core hands over frozen dataclasses (`registry.ListedPlugin`, `registry.ShownPlugin`,
`registry.PluginDetails`, `paging.Page`, `configuration.ConfigurationChange`); each is
turned into its wire model here, once, by the model's validating constructor
(pydantic-core builds it; FastAPI then serialises the instance without validating it
again). A list item is the exception (issue 13): a plain dict of PluginSummary's fields, in
its order and with its JSON's types, which the list route writes with orjson in one pass
(tests/integration/test_list_bytes.py holds the bytes to the model's own).
"""

from __future__ import annotations

from typing import Any

from mlx_platform.core import config_schema, integrity
from mlx_platform.core.configuration import ConfigurationChange
from mlx_platform.core.paging import Page
from mlx_platform.core.registry import ListedPlugin, PluginDetails, ShownPlugin
from mlx_platform.core.secrets import REDACTOR, mask
from mlx_platform.wire import (
    ConfigurationUpdateResult,
    HealthSummary,
    Pagination,
    PluginDetail,
)

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


def page_fields(page: Page[Any]) -> dict[str, Any]:
    """A page's pagination block: Pagination's fields, in its order."""
    return {
        "page": page.page,
        "limit": page.limit,
        "total": page.total,
        "has_next": page.has_next,
        "total_is_estimate": page.total_is_estimate,
    }


def pagination(page: Page[Any]) -> Pagination:
    return Pagination(**page_fields(page))


def health_summary(plugin: ShownPlugin | ListedPlugin) -> dict[str, Any]:
    """The last health check, as HealthSummary's fields; for a plugin shown in `error` (no
    replica runs it), unhealthy with the reason."""
    row, shown = plugin.row, plugin.shown
    if shown.status == "error" and row.status == "active":
        status, message = "unhealthy", shown.reason
    else:
        status, message = row.health_status, row.health_message
    took = row.health_response_time_ms
    return {
        "status": status,
        "last_check": row.health_last_check,  # UTC (UTCDateTime): orjson's OPT_UTC_Z writes Z
        "response_time_ms": None if took is None else float(took),
        "message": _words(message),
    }


def plugin_summary(plugin: ListedPlugin) -> dict[str, Any]:
    """A list item: PluginSummary's fields, in its order, each as the model holds it (floats
    float, lists fresh), from the columns the list reads (storage/listing.py ListedRow)."""
    row = plugin.row
    meta = row.plugin_metadata or {}
    return {
        "id": row.id,
        "name": row.name,
        "type": row.type,
        "version": row.version,
        "status": plugin.shown.status,
        "description": row.description,
        "category": row.category,
        "capabilities": list(meta.get("capabilities") or []),
        "conflicts_with": list(meta.get("conflicts_with") or []),
        "integration_points": list(meta.get("integration_points") or []),
        "resource_requirements": row.requirements,  # ResourceRequirements' fields, typed
        "configuration": config_schema.summary(row.configuration_schema or {}),
        "health": health_summary(plugin),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def plugin_detail(details: PluginDetails) -> PluginDetail:
    plugin = details.plugin
    row = plugin.row
    schema = row.configuration_schema or {}
    # beyond the model's fields (kept, as every answer keeps unknown fields): the code pinned
    # at registration (how many files, where; not every file), then author, license, tags
    extras: dict[str, Any] = {
        "code_digest": integrity.summary(row.code_digest),
        **{k: v for k, v in (row.extra or {}).items() if v not in (None, [], "")},
    }
    return PluginDetail(
        id=row.id,
        name=row.name,
        type=row.type,
        version=row.version,
        status=plugin.shown.status,
        status_reason=_words(plugin.shown.reason),
        description=row.description,
        category=row.category,
        class_path=row.class_path,
        isolation=row.isolation,
        metadata={**_META_DEFAULTS, **(row.plugin_metadata or {})},
        configuration_schema=config_schema.public_schema(schema),
        configuration=mask(row.configuration or {}, config_schema.secret_fields(schema)),
        pending_restart=details.pending_restart,
        operations=sorted((row.class_info or {}).get("operations", {})),
        performance_metrics=details.performance,
        health=HealthSummary(**health_summary(plugin)),
        documentation_url=row.documentation_url,
        repository_url=row.repository_url,
        created_at=row.created_at,
        updated_at=row.updated_at,
        activated_at=row.activated_at,
        **extras,
    )


def configuration_update(change: ConfigurationChange) -> ConfigurationUpdateResult:
    # beyond the model's fields, present only when they say something (kept, as every answer
    # keeps unknown fields): the changed hot_reload false fields, and those waiting for a
    # restart the request did not allow
    extras: dict[str, Any] = {}
    if change.restart_fields:
        extras["restart_fields"] = change.restart_fields
    if change.pending_restart is not None:
        extras["pending_restart"] = change.pending_restart
    return ConfigurationUpdateResult(
        id=change.plugin_id,
        configuration_updated=change.configuration_updated,
        restart_required=change.restart_required,
        restarted=change.restarted,
        updated_fields=change.updated_fields,
        effective_time=change.effective_time,
        dry_run=change.dry_run,
        **extras,
    )
