"""`/v1/plugins`: every endpoint of the spec, plus unregister, configuration schema, invoke."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import anyio.to_thread
import orjson
from fastapi import Body, Path, Query, Response
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from mlx_platform.core import activation, composition, configuration, discovery, lifecycle, registry
from mlx_platform.core.context import Core
from mlx_platform.core.metrics import GRANULARITY_SECONDS, query_metrics
from mlx_platform.discovery.scan import SOURCES
from mlx_platform.errors import (
    DependencyMissingError,
    InsufficientResourcesError,
    InvalidArgumentsError,
    InvalidConfigurationError,
    InvalidStateError,
    OperationNotFoundError,
    OperationTimeoutError,
    PluginAlreadyExistsError,
    PluginCodeChangedError,
    PluginConflictError,
    PluginExecutionError,
    PluginHealthCheckFailedError,
    PluginNotFoundError,
    RateLimitedError,
    ValidationError,
)
from mlx_platform.server import views
from mlx_platform.server.auth import require
from mlx_platform.server.deps import Admin, CoreDep, Reader, Writer
from mlx_platform.server.invocation import invoke
from mlx_platform.server.openapi import errors_for
from mlx_platform.server.routes.audit import origin_of
from mlx_platform.server.routing import api_router
from mlx_platform.storage.repositories import PluginFilter
from mlx_platform.wire import (
    ActivateRequest,
    ActivateResult,
    CompositionResult,
    ConfigurationJsonSchema,
    ConfigurationUpdateRequest,
    ConfigurationUpdateResult,
    DeactivateRequest,
    DeactivateResult,
    DeleteResult,
    DiscoveryResult,
    Envelope,
    HealthReport,
    InvokeRequest,
    InvokeResult,
    MetricsReport,
    PageEnvelope,
    PluginDetail,
    PluginSort,
    PluginSummary,
    RegisterPluginRequest,
    RegisterResult,
    ValidateCompositionRequest,
)

router = api_router("/v1/plugins", "plugins")

# C0 and C1 control characters and DEL: never part of a name, a type or a search, and
# PostgreSQL refuses NUL in text outright.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# The list's query bounds, the route's and server/fast_list.py's (which answers plain lists in
# front of the framework and must take exactly what this route takes).
LIST_TEXT_LIMITS = {"type": 64, "category": 100, "search": 200}  # max_length of each
ListStatus = Literal["registered", "active", "inactive", "error"]
LIST_PAGE_MAX = 1_000_000
LIST_LIMIT_MAX = 100


def _no_control_characters(value: str | None) -> str | None:
    if value is not None and CONTROL.search(value):
        raise PydanticCustomError("control_character", "must not contain control characters")
    return value


Text = AfterValidator(_no_control_characters)

PluginId = Annotated[
    str,
    Path(min_length=1, max_length=160, description="Plugin id, e.g. plugin_snowflake_001"),
    Text,
]
DryRun = Annotated[
    bool, Query(description="Run every check and answer what would happen; change nothing")
]


def ok(data: object) -> dict[str, object]:
    """The envelope of an answer the route encodes itself (or whose core result is untyped)."""
    return {"success": True, "data": data}


@router.get(
    "",
    operation_id="plugins_list",
    response_model=PageEnvelope[PluginSummary],
    summary="List plugins",
    description="Scope: `plugins:read`. Filters combine.\n\n"
    "`search` finds the plugins whose name or description contains the term, ignoring case, "
    "from the search index: any text of 1 to 200 characters, spaces and punctuation "
    "included, anywhere within the name or within the description (`db` finds `mongodb`, "
    "`ows fr` finds `rows from`). Ranked: the plugins whose name contains it first, then "
    "those whose description alone does, each in registration order. Without `search`, the "
    "order is `sort`'s (an extension of the spec):\n\n"
    "- `created_at` (the default): creation time, then id;\n"
    "- `name`: name, then id (plugins of one name, one per version, by id); names compare "
    "as the database orders text (SQLite: by character code, upper case first);\n"
    "- `type`: type, then name, then id;\n"
    "- `-created_at`, `-name`, `-type`: the same order reversed, ties included.\n\n"
    "Every order combines with every filter, and a deep page costs what the first one does "
    "(each order and filter is read from an index of its own). A search is ranked and takes "
    "no `sort`: both together are a 422 naming `sort`.\n\n"
    "`pagination.total` is exact up to 10,000 matching plugins. Beyond, the service stops "
    "counting: `total_is_estimate` is true and `total` is a lower bound (more than `total` "
    "match: 10,000, or the end of this page when it lies further); `has_next` is always "
    "exact.",
    responses=errors_for(ValidationError),
)
async def list_plugins(
    core: CoreDep,
    _p: Reader,
    type: Annotated[
        str | None,
        Query(max_length=LIST_TEXT_LIMITS["type"], description="e.g. data_source"),
        Text,
    ] = None,
    status: Annotated[ListStatus | None, Query()] = None,
    category: Annotated[str | None, Query(max_length=LIST_TEXT_LIMITS["category"]), Text] = None,
    page: Annotated[int, Query(ge=1, le=LIST_PAGE_MAX)] = 1,
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 20,
    search: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=LIST_TEXT_LIMITS["search"],
            description="Text within the name or the description, case ignored; ranked",
        ),
        Text,
    ] = None,
    sort: Annotated[
        PluginSort | None,
        Query(
            description="The order without `search`: `created_at` (the default), `name`, "
            "`type`, each reversed by a leading `-`; ties by id"
        ),
    ] = None,
) -> Response:
    if sort is not None and search is not None:
        raise ValidationError(
            "Invalid query parameter 'sort': a search is ranked (name matches first, then "
            "description matches) and takes no sort; leave out sort or search",
            {"sort": "cannot be combined with search: search results are ranked"},
        )
    flt = PluginFilter(type=type, status=status, category=category, search=search)
    # One hop to a thread, which reads and writes the answer's bytes: a sync route took a
    # second one, where FastAPI checks what it returned against `response_model` (issue 13)
    content = await anyio.to_thread.run_sync(list_page, core, flt, page, limit, sort)
    return Response(content, media_type="application/json")


def list_page(core: Core, flt: PluginFilter, page: int, limit: int, sort: str | None) -> bytes:
    """The page's JSON, as FastAPI writes `PageEnvelope[PluginSummary]` by alias (the route's
    response_model, kept for the OpenAPI), written once by orjson from plain dicts (issue 13):
    the items' datetimes are UTC, which OPT_UTC_Z writes with a Z as pydantic does."""
    found = registry.list_plugins(core, flt, page=page, limit=limit, sort=sort)
    return orjson.dumps(
        {
            "success": True,
            "data": [views.plugin_summary(p) for p in found.items],
            "pagination": views.page_fields(found),
        },
        option=orjson.OPT_UTC_Z,
    )


@router.post(
    "",
    operation_id="plugins_register",
    status_code=201,
    response_model=Envelope[RegisterResult],
    summary="Register a plugin",
    description="Scope: `plugins:admin`. Checks the definition, imports `class_path` in a throwaway "
    "process, looks for missing dependencies and conflicts with active plugins. A plugin whose class "
    "cannot be loaded is recorded with status `error`. `dry_run=true` checks only.",
    responses=errors_for(
        PluginAlreadyExistsError, InvalidStateError, ValidationError, RateLimitedError
    ),
)
def register_plugin(
    core: CoreDep,
    principal: Admin,
    body: RegisterPluginRequest,
    response: Response,
    dry_run: DryRun = False,
) -> Envelope[RegisterResult]:
    if dry_run:
        response.status_code = 200  # nothing was created
    result = registry.register_plugin(core, body, dry_run=dry_run, origin=origin_of(principal))
    return Envelope[RegisterResult](data=result)


@router.get(
    "/discover",
    operation_id="plugins_discover",
    response_model=Envelope[DiscoveryResult],
    summary="Discover plugins",
    description="Scope: `plugins:write`; with `auto_register=true`, `plugins:admin`. Reads manifests "
    "and package metadata; plugin code never runs in the service.",
    responses=errors_for(ValidationError),
)
def discover_plugins(
    core: CoreDep,
    principal: Writer,
    sources: Annotated[
        list[str] | None, Query(description="filesystem, pypi, git (repeat or comma-separate)")
    ] = None,
    include_namespace: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
            description="A (namespace) package name, e.g. mlx_plugins",
        ),
    ] = None,
    auto_register: bool = False,
) -> Envelope[DiscoveryResult]:
    if auto_register:
        require(principal, "plugins:admin")
    chosen: list[str] = []
    for item in sources or list(SOURCES):
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            if part not in SOURCES:
                raise ValidationError(
                    f"Invalid query parameter 'sources': '{part}' is not one of {', '.join(SOURCES)}",
                    {"sources": f"'{part}' is not one of {', '.join(SOURCES)}"},
                )
            chosen.append(part)
    result = discovery.discover(
        core,
        chosen,
        include_namespace=include_namespace,
        auto_register=auto_register,
        origin=origin_of(principal),
    )
    return Envelope[DiscoveryResult](data=result)


@router.post(
    "/validate-composition",
    operation_id="plugins_validate_composition",
    response_model=Envelope[CompositionResult],
    summary="Validate a composition of plugins",
    description="Scope: `plugins:write`.",
    responses=errors_for(ValidationError, RateLimitedError),
)
def validate_composition(
    core: CoreDep, _p: Writer, body: ValidateCompositionRequest
) -> Envelope[CompositionResult]:
    return Envelope[CompositionResult](data=composition.validate_composition(core, body.plugins))


@router.get(
    "/{plugin_id}",
    operation_id="plugins_get",
    response_model=Envelope[PluginDetail],
    summary="Get plugin details",
    description="Scope: `plugins:read`. Secret configuration values show as `********`.",
    responses=errors_for(PluginNotFoundError, ValidationError),
)
def get_plugin(core: CoreDep, _p: Reader, plugin_id: PluginId) -> Envelope[PluginDetail]:
    return Envelope[PluginDetail](data=views.plugin_detail(registry.get_plugin(core, plugin_id)))


@router.delete(
    "/{plugin_id}",
    operation_id="plugins_delete",
    response_model=Envelope[DeleteResult],
    summary="Unregister a plugin",
    description="Scope: `plugins:admin`. Refused while the plugin is active (unless `force=true`, "
    "which deactivates it first) or while an active plugin requires it.",
    responses=errors_for(
        PluginNotFoundError,
        PluginConflictError,
        InvalidStateError,
        ValidationError,
        RateLimitedError,
    ),
)
def delete_plugin(
    core: CoreDep, principal: Admin, plugin_id: PluginId, force: Annotated[bool, Query()] = False
) -> Envelope[DeleteResult]:
    result = registry.delete_plugin(core, plugin_id, force=force, origin=origin_of(principal))
    return Envelope[DeleteResult](data=result)


@router.get(
    "/{plugin_id}/configuration-schema",
    operation_id="plugins_configuration_schema",
    summary="The configuration schema as standard JSON Schema",
    description="Scope: `plugins:read`. Draft 2020-12, for forms and editors.",
    responses=errors_for(PluginNotFoundError, ValidationError),
)
def configuration_schema(core: CoreDep, _p: Reader, plugin_id: PluginId) -> ConfigurationJsonSchema:
    return registry.configuration_json_schema(core, plugin_id)


@router.post(
    "/{plugin_id}/activate",
    operation_id="plugins_activate",
    response_model=Envelope[ActivateResult],
    summary="Activate a plugin",
    description="Scope: `plugins:write`. Validates the configuration, checks conflicts, dependencies "
    "and resources, starts the instance and runs a first health check.",
    responses=errors_for(
        PluginNotFoundError,
        PluginConflictError,
        DependencyMissingError,
        InsufficientResourcesError,
        InvalidStateError,
        PluginCodeChangedError,
        ValidationError,
        InvalidConfigurationError,
        PluginHealthCheckFailedError,
        RateLimitedError,
    ),
)
def activate_plugin(
    core: CoreDep,
    principal: Writer,
    plugin_id: PluginId,
    body: Annotated[ActivateRequest | None, Body()] = None,
    dry_run: DryRun = False,
) -> Envelope[ActivateResult]:
    req = body or ActivateRequest()
    result = activation.activate_plugin(
        core,
        plugin_id,
        req.configuration,
        auto_start=req.auto_start,
        dry_run=dry_run,
        origin=origin_of(principal),
    )
    return Envelope[ActivateResult](data=result)


@router.post(
    "/{plugin_id}/deactivate",
    operation_id="plugins_deactivate",
    response_model=Envelope[DeactivateResult],
    summary="Deactivate a plugin",
    description="Scope: `plugins:write`. Waits up to `graceful_shutdown_timeout` for calls in flight "
    "unless `force` is true.",
    responses=errors_for(PluginNotFoundError, InvalidStateError, ValidationError, RateLimitedError),
)
def deactivate_plugin(
    core: CoreDep,
    principal: Writer,
    plugin_id: PluginId,
    body: Annotated[DeactivateRequest | None, Body()] = None,
) -> Envelope[DeactivateResult]:
    req = body or DeactivateRequest()
    result = lifecycle.deactivate_plugin(
        core,
        plugin_id,
        force=req.force,
        graceful_timeout=req.graceful_shutdown_timeout,
        origin=origin_of(principal),
    )
    return Envelope[DeactivateResult](data=result)


@router.patch(
    "/{plugin_id}/configuration",
    operation_id="plugins_update_configuration",
    response_model=Envelope[ConfigurationUpdateResult],
    summary="Update a plugin's configuration",
    description="Scope: `plugins:write`. Applied hot when every changed field allows it; a secret sent "
    "as `********` keeps its stored value.",
    responses=errors_for(
        PluginNotFoundError,
        ValidationError,
        InvalidConfigurationError,
        PluginHealthCheckFailedError,
        PluginExecutionError,
        RateLimitedError,
    ),
)
def update_configuration(
    core: CoreDep,
    principal: Writer,
    plugin_id: PluginId,
    body: ConfigurationUpdateRequest,
    dry_run: DryRun = False,
) -> Envelope[ConfigurationUpdateResult]:
    change = configuration.update_configuration(
        core,
        plugin_id,
        body.configuration,
        allow_restart=body.restart_required,
        dry_run=dry_run,
        origin=origin_of(principal),
    )
    return Envelope[ConfigurationUpdateResult](data=views.configuration_update(change))


@router.get(
    "/{plugin_id}/health",
    operation_id="plugins_health_check",
    response_model=Envelope[HealthReport],
    summary="Plugin health",
    description="Scope: `plugins:read`. Runs the plugin's health check now, under a timeout.",
    responses=errors_for(PluginNotFoundError, ValidationError),
)
def plugin_health(core: CoreDep, _p: Reader, plugin_id: PluginId) -> Envelope[HealthReport]:
    return Envelope[HealthReport](data=lifecycle.plugin_health(core, plugin_id))


# Metrics are recorded in UTC from the service's clock: a date outside these is a mistake,
# and one near datetime's own ends (year 1 or 9999) would overflow the range arithmetic.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(3000, 1, 1, tzinfo=UTC)


def _parse_time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        raise ValidationError(
            f"Invalid query parameter '{name}': not an ISO 8601 date-time (e.g. 2024-01-15T09:00:00Z)",
            {name: "not an ISO 8601 date-time"},
        ) from None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if not EARLIEST_TIME <= parsed < LATEST_TIME:  # compared in UTC, without overflow
        raise ValidationError(
            f"Invalid query parameter '{name}': must be from 1970-01-01 to 2999-12-31 (UTC)",
            {name: "must be from 1970-01-01 to 2999-12-31 (UTC)"},
        )
    return parsed


@router.get(
    "/{plugin_id}/metrics",
    operation_id="plugins_metrics",
    response_model=Envelope[MetricsReport],
    summary="Plugin metrics",
    description="Scope: `plugins:read`. Merged from recorded per-minute buckets; default range: the "
    "last 24 hours, granularity hour.",
    responses=errors_for(PluginNotFoundError, ValidationError),
)
def plugin_metrics(
    core: CoreDep,
    _p: Reader,
    plugin_id: PluginId,
    start_time: Annotated[
        str | None, Query(description="ISO 8601", json_schema_extra={"format": "date-time"})
    ] = None,
    end_time: Annotated[
        str | None, Query(description="ISO 8601", json_schema_extra={"format": "date-time"})
    ] = None,
    granularity: Literal["minute", "hour", "day"] = "hour",
) -> Envelope[MetricsReport]:
    registry.get_row(core, plugin_id)
    end = _parse_time("end_time", end_time) or datetime.now(UTC)
    start = _parse_time("start_time", start_time) or end - timedelta(hours=24)
    if start >= end:
        raise ValidationError(
            "Invalid query parameter 'start_time': must be before end_time",
            {"start_time": "must be before end_time"},
        )
    points = (end - start).total_seconds() / GRANULARITY_SECONDS[granularity]
    if points > 50_000:
        raise ValidationError(
            f"Invalid query parameter 'granularity': {int(points)} {granularity}s is too many points; "
            "choose a coarser granularity or a shorter range",
            {"granularity": "too many points for the range"},
        )
    return Envelope[MetricsReport](
        data=query_metrics(core.metrics, plugin_id, start, end, granularity)
    )


@router.post(
    "/{plugin_id}/invoke",
    operation_id="plugins_invoke",
    response_model=Envelope[InvokeResult],
    summary="Invoke an operation of an active plugin",
    description="Scope: `plugins:write`.",
    responses=errors_for(
        PluginNotFoundError,
        OperationNotFoundError,
        InvalidStateError,
        ValidationError,
        InvalidArgumentsError,
        PluginHealthCheckFailedError,
        PluginExecutionError,
        OperationTimeoutError,
    ),
)
async def invoke_plugin(
    core: CoreDep, _p: Writer, plugin_id: PluginId, body: InvokeRequest
) -> Response:
    """See server/invocation.py: where the call runs, and how its timeout counts."""
    timeout = body.timeout if body.timeout is not None else core.settings.invoke_timeout
    content = await invoke(core, plugin_id, body.operation, body.arguments, timeout)
    return Response(content, media_type="application/json")
