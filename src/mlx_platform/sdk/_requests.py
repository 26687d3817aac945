"""The `/v1/plugins`, `/v1/nodes` and `/v1/audit` calls as `APIRequest`s, built once for the
sync and the async resource.

Request bodies are sent as given: the service validates them with the wire request models
and answers a `VALIDATION_ERROR` naming each bad field, so a newer service that accepts a
new field is not refused by an older client. Answers are read into the wire models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel

from mlx_platform.sdk._base import APIRequest, parse_data, parse_json_object, parse_page
from mlx_platform.sdk._exceptions import InvalidResponseError
from mlx_platform.wire import (
    ActivateResult,
    AuditEvent,
    CompositionEntry,
    CompositionResult,
    ConfigurationUpdateResult,
    DeactivateResult,
    DeleteResult,
    DiscoveryResult,
    HealthReport,
    InvokeResult,
    MetricsReport,
    Node,
    Pagination,
    PluginDetail,
    PluginSummary,
    RegisterResult,
    WireModel,
)

PREFIX = "/plugins"
NODES = "/nodes"
AUDIT = "/audit"
# An invoke waits for the plugin up to its own timeout: the HTTP read waits this much longer.
INVOKE_TIMEOUT_MARGIN = 10.0

Body = Mapping[str, Any] | BaseModel
M = TypeVar("M", bound=WireModel)


def _path(plugin_id: str, suffix: str = "") -> str:
    if not isinstance(plugin_id, str) or not plugin_id:
        raise ValueError(f"plugin_id must be a non-empty string, not {plugin_id!r}")
    return f"{PREFIX}/{quote(plugin_id, safe='')}{suffix}"


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _body(body: Body | None, **overrides: Any) -> dict[str, Any]:
    """A dict or a request model, with the keyword arguments that were given laid over it."""
    if body is None:
        merged: dict[str, Any] = {}
    elif isinstance(body, BaseModel):
        merged = body.model_dump(mode="json", exclude_unset=True)
    elif isinstance(body, Mapping):
        merged = dict(body)
    else:
        raise TypeError(f"expected a dict or a request model, not {type(body).__name__}")
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return merged


def _parse_list(model: type[M]) -> Callable[[Any], list[M]]:
    """Read `{"success": true, "data": [...]}`: a listing without pages."""

    def parse(body: Any) -> list[M]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise InvalidResponseError("the answer is not the API's envelope of a list")
        return [model.model_validate(item) for item in data]

    return parse


def _time(name: str, value: datetime | str | None) -> tuple[str, str] | None:
    """ISO 8601 for a query parameter; a naive datetime is taken as UTC, as the service does."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        text = value.isoformat()
        if text.endswith("+00:00"):
            text = text[: -len("+00:00")] + "Z"
        return name, text
    return name, str(value)


def list_plugins(
    *,
    type: str | None,
    status: str | None,
    category: str | None,
    search: str | None,
    page: int,
    limit: int | None,
    sort: str | None,
) -> APIRequest[tuple[list[PluginSummary], Pagination]]:
    params = [
        (key, str(value))
        for key, value in (
            ("type", type),
            ("status", status),
            ("category", category),
            ("search", search),
            ("sort", sort),
            ("page", page),
            ("limit", limit),
        )
        if value is not None
    ]
    return APIRequest(
        "GET", PREFIX, parse_page(PluginSummary), params=tuple(params), idempotent=True
    )


def get_plugin(plugin_id: str) -> APIRequest[PluginDetail]:
    return APIRequest("GET", _path(plugin_id), parse_data(PluginDetail), idempotent=True)


def register_plugin(
    body: Body | None, fields: Mapping[str, Any], *, dry_run: bool
) -> APIRequest[RegisterResult]:
    return APIRequest(
        "POST",
        PREFIX,
        parse_data(RegisterResult),
        params=(("dry_run", "true"),) if dry_run else (),
        body=_body(body, **fields),
        has_body=True,
    )


def delete_plugin(plugin_id: str, *, force: bool) -> APIRequest[DeleteResult]:
    return APIRequest(
        "DELETE",
        _path(plugin_id),
        parse_data(DeleteResult),
        params=(("force", _flag(force)),),
    )


def configuration_schema(plugin_id: str) -> APIRequest[dict[str, Any]]:
    return APIRequest(
        "GET", _path(plugin_id, "/configuration-schema"), parse_json_object, idempotent=True
    )


def activate_plugin(
    plugin_id: str,
    body: Body | None,
    *,
    configuration: Mapping[str, Any] | None,
    auto_start: bool | None,
    dry_run: bool,
) -> APIRequest[ActivateResult]:
    return APIRequest(
        "POST",
        _path(plugin_id, "/activate"),
        parse_data(ActivateResult),
        params=(("dry_run", "true"),) if dry_run else (),
        body=_body(
            body,
            configuration=dict(configuration) if configuration is not None else None,
            auto_start=auto_start,
        ),
        has_body=True,
    )


def deactivate_plugin(
    plugin_id: str, *, force: bool, graceful_shutdown_timeout: float
) -> APIRequest[DeactivateResult]:
    return APIRequest(
        "POST",
        _path(plugin_id, "/deactivate"),
        parse_data(DeactivateResult),
        body={"force": force, "graceful_shutdown_timeout": graceful_shutdown_timeout},
        has_body=True,
    )


def update_configuration(
    plugin_id: str,
    configuration: Mapping[str, Any],
    *,
    restart_required: bool,
    dry_run: bool,
) -> APIRequest[ConfigurationUpdateResult]:
    return APIRequest(
        "PATCH",
        _path(plugin_id, "/configuration"),
        parse_data(ConfigurationUpdateResult),
        params=(("dry_run", "true"),) if dry_run else (),
        body={"configuration": dict(configuration), "restart_required": restart_required},
        has_body=True,
    )


def health_check(plugin_id: str) -> APIRequest[HealthReport]:
    return APIRequest("GET", _path(plugin_id, "/health"), parse_data(HealthReport), idempotent=True)


def plugin_metrics(
    plugin_id: str,
    *,
    start_time: datetime | str | None,
    end_time: datetime | str | None,
    granularity: str | None,
) -> APIRequest[MetricsReport]:
    params = [
        p
        for p in (
            _time("start_time", start_time),
            _time("end_time", end_time),
            ("granularity", granularity) if granularity is not None else None,
        )
        if p is not None
    ]
    return APIRequest(
        "GET",
        _path(plugin_id, "/metrics"),
        parse_data(MetricsReport),
        params=tuple(params),
        idempotent=True,
    )


def discover_plugins(
    *,
    sources: Sequence[str] | str | None,
    include_namespace: str | None,
    auto_register: bool,
) -> APIRequest[DiscoveryResult]:
    params: list[tuple[str, str]] = []
    if isinstance(sources, str):
        sources = [sources]
    params += [("sources", s) for s in sources or ()]
    if include_namespace is not None:
        params.append(("include_namespace", include_namespace))
    if auto_register:
        params.append(("auto_register", "true"))
    return APIRequest(
        "GET",
        f"{PREFIX}/discover",
        parse_data(DiscoveryResult),
        params=tuple(params),
        # A GET, but one that registers plugins when auto_register is on: not retried then.
        idempotent=not auto_register,
    )


def _composition_entry(entry: Mapping[str, Any] | CompositionEntry | str) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"name": entry}
    if isinstance(entry, BaseModel):
        return entry.model_dump(mode="json", exclude_none=True)
    return dict(entry)


def validate_composition(
    plugins: Iterable[Mapping[str, Any] | CompositionEntry | str],
) -> APIRequest[CompositionResult]:
    return APIRequest(
        "POST",
        f"{PREFIX}/validate-composition",
        parse_data(CompositionResult),
        body={"plugins": [_composition_entry(p) for p in plugins]},
        has_body=True,
    )


def invoke_plugin(
    plugin_id: str,
    operation: str,
    arguments: Mapping[str, Any] | None,
    *,
    timeout: float | None,
) -> APIRequest[InvokeResult]:
    body: dict[str, Any] = {"operation": operation, "arguments": dict(arguments or {})}
    if timeout is not None:
        body["timeout"] = timeout
    return APIRequest(
        "POST",
        _path(plugin_id, "/invoke"),
        parse_data(InvokeResult),
        body=body,
        has_body=True,
        min_read_timeout=timeout + INVOKE_TIMEOUT_MARGIN if timeout is not None else None,
    )


def list_nodes() -> APIRequest[list[Node]]:
    return APIRequest("GET", NODES, _parse_list(Node), idempotent=True)


def list_audit(
    *,
    plugin_id: str | None,
    actor: str | None,
    action: str | None,
    outcome: str | None,
    since: datetime | str | None,
    until: datetime | str | None,
    page: int,
    limit: int | None,
) -> APIRequest[tuple[list[AuditEvent], Pagination]]:
    params = [
        (key, str(value))
        for key, value in (
            ("plugin_id", plugin_id),
            ("actor", actor),
            ("action", action),
            ("outcome", outcome),
        )
        if value is not None
    ]
    params += [p for p in (_time("since", since), _time("until", until)) if p is not None]
    params.append(("page", str(page)))
    if limit is not None:
        params.append(("limit", str(limit)))
    return APIRequest("GET", AUDIT, parse_page(AuditEvent), params=tuple(params), idempotent=True)
