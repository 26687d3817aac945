"""Request and response shapes of the API, shared by the server and the SDK.

The server validates requests and serialises answers with these models; the SDK builds
requests and parses answers with the very same ones, so the two cannot drift. Every model
accepts fields it does not know (``extra="allow"``): a field added on the server reaches an
older client instead of breaking it. Request models are the exception: they forbid unknown
fields, so a typo in a request is answered with a ``VALIDATION_ERROR`` naming it.

One module of over 500 lines on purpose: it is declarative (pydantic models, their limits and
validators, and the helpers that attach examples), read as the API's one reference, used by the
server, the SDK and the CLI alike; split, a model and the models it nests would sit apart.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from mlx_platform import wire_examples as ex

SECRET_MASK = "********"

FieldType = Literal["string", "integer", "number", "boolean", "array", "object"]
IsolationMode = Literal["process", "inprocess"]
# The orders of the plugin list (`GET /v1/plugins?sort=`): `name` is (name, id), `type` is
# (type, name, id), `created_at` (the default) is (created_at, id); `-` reverses the whole.
PluginSort = Literal["created_at", "-created_at", "name", "-name", "type", "-type"]
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.\-]{0,99}$"
CLASS_PATH_PATTERN = (
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*([.:][A-Za-z_][A-Za-z0-9_]*)$"
)


# ---------------------------------------------------------------- size limits of requests
# The body as a whole is capped by the service before it is read (MLX_MAX_BODY_BYTES, 1 MiB);
# these keep what is stored, and shown in every list page, small.
MAX_JSON_DEPTH = 32
MAX_METADATA_BYTES = 64 * 1024
MAX_SCHEMA_BYTES = 64 * 1024
MAX_CONFIGURATION_BYTES = 64 * 1024
MAX_LIST_ITEMS = 50

ShortStr = Annotated[str, StringConstraints(max_length=200)]
ShortList = Annotated[list[ShortStr], Field(max_length=MAX_LIST_ITEMS)]


def _too_deep(value: Any, limit: int) -> bool:
    """True when `value` nests lists and objects deeper than `limit` levels. Iterative: a
    recursive walk would itself overflow the stack on the input it is meant to refuse."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _json_size(value: Any) -> int:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return len(json.dumps(value, default=str, ensure_ascii=False).encode())


def _check_depth(value: Any) -> Any:
    if _too_deep(value, MAX_JSON_DEPTH):
        raise PydanticCustomError(
            "too_deep", "is nested deeper than {limit} levels", {"limit": MAX_JSON_DEPTH}
        )
    return value


def _check_size(value: Any, limit: int) -> Any:
    _check_depth(value)  # before json.dumps walks it recursively
    if _json_size(value) > limit:
        raise PydanticCustomError(
            "too_large", "is larger than {limit} KiB as JSON", {"limit": limit // 1024}
        )
    return value


def _example(example: dict[str, Any]) -> ConfigDict:
    """The model's example in the OpenAPI document (`wire_examples.py`); pydantic merges this
    config with the one the model inherits."""
    return ConfigDict(json_schema_extra={"examples": [example]})


def _example_of(annotation: Any) -> Any:
    """The example of a model (or a list of one), None when it has none."""
    if get_origin(annotation) is list:
        item = _example_of(get_args(annotation)[0])
        return None if item is None else [item]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        extra = annotation.model_config.get("json_schema_extra")
        examples = extra.get("examples") if isinstance(extra, dict) else None
        return examples[0] if isinstance(examples, list) and examples else None
    return None


def _envelope_example(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """`Envelope[X]`'s example: X's example wrapped the way the service answers (so no example
    is written twice); `PageEnvelope[X]`'s holds a page of one X."""
    args = model.__pydantic_generic_metadata__["args"]
    data = _example_of(args[0]) if args else None
    if data is None:
        return
    if "pagination" in model.model_fields:
        schema["examples"] = [{"success": True, "data": [data], "pagination": ex.PAGINATION}]
    else:
        schema["examples"] = [{"success": True, "data": data}]


class WireModel(BaseModel):
    """A response model: unknown fields are kept, so newer servers never break older clients."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class RequestModel(BaseModel):
    """A request model: unknown fields are refused, naming the field; no field's value nests
    deeper than `MAX_JSON_DEPTH` levels."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _limit_depth(cls, value: Any) -> Any:
        return _check_depth(value)


# ---------------------------------------------------------------- plugin definitions


class ConfigField(BaseModel):
    """One field of a plugin's configuration schema."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [ex.CONFIG_FIELD]})

    type: FieldType = "string"
    required: bool = False
    default: Any = None
    secret: bool = False
    description: str | None = Field(default=None, max_length=4000)
    enum: list[Any] | None = Field(default=None, max_length=1000)
    minimum: int | float | None = None
    maximum: int | float | None = None
    pattern: str | None = Field(default=None, max_length=1000)
    items: dict[str, Any] | None = Field(
        default=None, description="JSON Schema of the items, for `array` fields"
    )
    hot_reload: bool = Field(
        default=True,
        description="False: a change to this field needs the instance restarted",
    )


class PluginMetadata(BaseModel):
    """What the rules read about a plugin. Unknown keys are kept as they are."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [ex.PLUGIN_METADATA]})

    category: str | None = Field(default=None, max_length=100)
    capabilities: ShortList = Field(default_factory=list)
    data_formats: ShortList = Field(default_factory=list)
    integration_points: ShortList = Field(default_factory=list)
    conflicts_with: ShortList = Field(default_factory=list)
    requires: ShortList = Field(default_factory=list)
    optional_deps: ShortList = Field(default_factory=list)
    supported_platforms: ShortList = Field(default_factory=list)
    min_python_version: str | None = Field(default=None, max_length=32)
    platform_api: str | None = Field(
        default=None,
        max_length=200,
        description="PEP 440 specifier of the platform API the plugin supports",
    )
    python_requirements: ShortList = Field(
        default_factory=list,
        description="PEP 508 requirements on Python packages (`pyarrow>=15`); health checks them",
    )
    recommends: dict[ShortStr, ShortStr] = Field(default_factory=dict, max_length=MAX_LIST_ITEMS)
    synergies: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    min_memory_mb: int = Field(default=0, ge=0)
    min_cpu_cores: float = Field(default=0, ge=0)
    gpu_required: bool = False


def _from_json_schema(schema: Any) -> Any:
    """Accept a configuration schema written as JSON Schema (`{"type": "object",
    "properties": {...}, "required": [...]}`) as well as the spec's field map."""
    if not (
        isinstance(schema, dict)
        and schema.get("type") == "object"
        and isinstance(schema.get("properties"), dict)
    ):
        return schema
    required = set(schema.get("required") or [])
    out: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        if not isinstance(prop, dict):
            return schema  # not JSON Schema after all: let validation name the problem
        field = {k: prop[k] for k in _JSON_SCHEMA_KEYS if k in prop}
        if prop.get("writeOnly") or prop.get("format") == "password":
            field["secret"] = True
        field["required"] = name in required
        out[name] = field
    return out


_JSON_SCHEMA_KEYS = (
    "type",
    "default",
    "description",
    "enum",
    "minimum",
    "maximum",
    "pattern",
    "items",
)


_FROM_CLASS = (
    "; left out, read from the manifest the class carries (its class attributes, or the "
    "mlx-plugin.toml beside its module): 422 when neither gives it"
)


class RegisterPluginRequest(RequestModel):
    """A plugin's definition. `class_path` alone is enough when the class carries its
    manifest: the fields left out (name, type, version, description, configuration_schema,
    metadata...) are read from it when the class is imported; the fields sent win."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [ex.REGISTER_PLUGIN_REQUEST, ex.REGISTER_BY_CLASS_PATH_REQUEST]
        }
    )

    # "" (the default) is "not given": a value sent must match
    name: str = Field(
        default="",
        pattern=NAME_PATTERN,
        description="Plugin name, unique with its version" + _FROM_CLASS,
    )
    type: str = Field(
        default="",
        min_length=1,
        max_length=64,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Plugin type, e.g. data_source" + _FROM_CLASS,
    )
    version: str = Field(
        default="", min_length=1, max_length=64, description="PEP 440 version" + _FROM_CLASS
    )
    description: str = Field(default="", max_length=4000)
    class_path: str = Field(
        max_length=300,
        pattern=CLASS_PATH_PATTERN,
        description="Dotted path of the Plugin subclass: `package.module.Class`",
    )
    configuration_schema: dict[Annotated[str, StringConstraints(max_length=100)], ConfigField] = (
        Field(
            default_factory=dict,
            max_length=200,
            description=f"At most 200 fields, {MAX_SCHEMA_BYTES // 1024} KiB as JSON",
        )
    )
    metadata: PluginMetadata = Field(
        default_factory=PluginMetadata,
        description=f"At most {MAX_METADATA_BYTES // 1024} KiB as JSON",
    )
    category: str | None = Field(default=None, max_length=100)
    isolation: IsolationMode | None = None
    documentation_url: str | None = Field(default=None, max_length=2000)
    repository_url: str | None = Field(default=None, max_length=2000)
    author: str | None = Field(default=None, max_length=200)
    license: str | None = Field(default=None, max_length=200)
    tags: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list, max_length=MAX_LIST_ITEMS
    )

    @field_validator("configuration_schema", mode="before")
    @classmethod
    def _accept_json_schema(cls, value: Any) -> Any:
        return _from_json_schema(_check_size(value, MAX_SCHEMA_BYTES))

    @field_validator("metadata", mode="before")
    @classmethod
    def _limit_metadata(cls, value: Any) -> Any:
        return _check_size(value, MAX_METADATA_BYTES)


class ActivateRequest(RequestModel):
    model_config = _example(ex.ACTIVATE_REQUEST)

    configuration: dict[str, Any] = Field(
        default_factory=dict, description=f"At most {MAX_CONFIGURATION_BYTES // 1024} KiB as JSON"
    )
    auto_start: bool = True

    @field_validator("configuration", mode="before")
    @classmethod
    def _limit_configuration(cls, value: Any) -> Any:
        return _check_size(value, MAX_CONFIGURATION_BYTES)


class DeactivateRequest(RequestModel):
    model_config = _example(ex.DEACTIVATE_REQUEST)

    force: bool = False
    graceful_shutdown_timeout: float = Field(default=30, ge=0, le=3600)


class ConfigurationUpdateRequest(RequestModel):
    model_config = _example(ex.CONFIGURATION_UPDATE_REQUEST)

    configuration: dict[str, Any] = Field(
        description=f"At most {MAX_CONFIGURATION_BYTES // 1024} KiB as JSON"
    )
    restart_required: bool = Field(
        default=False,
        description="True allows the service to restart the instance when a changed field "
        "cannot be applied hot",
    )

    @field_validator("configuration", mode="before")
    @classmethod
    def _limit_configuration(cls, value: Any) -> Any:
        return _check_size(value, MAX_CONFIGURATION_BYTES)


class CompositionEntry(RequestModel):
    model_config = _example(ex.COMPOSITION_ENTRY)

    name: str = Field(min_length=1)
    version: str | None = Field(default=None, description="A version or a PEP 440 specifier")


class ValidateCompositionRequest(RequestModel):
    model_config = _example(ex.VALIDATE_COMPOSITION_REQUEST)

    plugins: list[CompositionEntry] = Field(min_length=1, max_length=10000)


class InvokeRequest(RequestModel):
    model_config = _example(ex.INVOKE_REQUEST)

    operation: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = Field(default=None, gt=0, le=3600)


# ---------------------------------------------------------------- answers


class ResourceRequirements(WireModel):
    min_memory_mb: int = 0
    min_cpu_cores: float = 0
    gpu_required: bool = False


class ConfigurationSummary(WireModel):
    required_fields: list[str] = Field(default_factory=list)
    optional_fields: list[str] = Field(default_factory=list)


class HealthSummary(WireModel):
    status: str = "unknown"
    last_check: datetime | None = None
    response_time_ms: float | None = None
    message: str | None = None


class PluginSummary(WireModel):
    model_config = _example(ex.PLUGIN_SUMMARY)

    id: str
    name: str
    type: str
    version: str
    status: str
    description: str = ""
    category: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    conflicts_with: list[str] = Field(default_factory=list)
    integration_points: list[str] = Field(default_factory=list)
    resource_requirements: ResourceRequirements = Field(default_factory=ResourceRequirements)
    configuration: ConfigurationSummary = Field(default_factory=ConfigurationSummary)
    health: HealthSummary = Field(default_factory=HealthSummary)
    created_at: datetime | None = None
    updated_at: datetime | None = None


_NO_CALLS = "null when no call was recorded (a rate of nothing is not 0)"


class PerformanceMetrics(WireModel):
    execution_count: int = 0
    avg_execution_time_ms: float = 0
    success_rate: float | None = Field(default=None, description=f"0 to 1; {_NO_CALLS}")
    error_rate: float | None = Field(default=None, description=f"0 to 1; {_NO_CALLS}")
    throughput_ops_per_second: float = 0
    window_seconds: int = 0


_PENDING = (
    "Configuration fields stored but not yet run by the active plugin (a hot_reload false "
    "field changed without restart_required, and what changed with it): the next allowed "
    "restart applies them (PATCH configuration with restart_required, or deactivate and "
    "activate)"
)


class PluginDetail(WireModel):
    model_config = _example(ex.PLUGIN_DETAIL)

    id: str
    name: str
    type: str
    version: str
    status: str
    status_reason: str | None = None
    description: str = ""
    category: str | None = None
    class_path: str | None = None
    isolation: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    configuration_schema: dict[str, Any] = Field(default_factory=dict)
    configuration: dict[str, Any] = Field(default_factory=dict)
    pending_restart: list[str] = Field(default_factory=list, description=_PENDING)
    operations: list[str] = Field(default_factory=list)
    performance_metrics: PerformanceMetrics = Field(default_factory=PerformanceMetrics)
    health: HealthSummary = Field(default_factory=HealthSummary)
    documentation_url: str | None = None
    repository_url: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    activated_at: datetime | None = None


ConfigurationJsonSchema = Annotated[
    dict[str, Any],
    Field(
        description="A plugin's configuration schema as standard JSON Schema (draft 2020-12)",
        examples=[ex.CONFIGURATION_JSON_SCHEMA],
    ),
]


class ValidationResults(WireModel):
    schema_valid: bool
    class_loadable: bool
    dependencies_available: bool
    conflicts_detected: bool
    class_error: str | None = None
    missing_dependencies: list[str] = Field(default_factory=list)
    conflicts: list[dict[str, Any]] = Field(default_factory=list)


class RegisterResult(WireModel):
    model_config = _example(ex.REGISTER_RESULT)

    id: str
    name: str
    version: str | None = None
    status: str
    validation_results: ValidationResults
    next_steps: list[str] = Field(default_factory=list)
    dry_run: bool = False


class HealthCheckSummary(WireModel):
    status: str
    response_time_ms: float | None = None
    last_check: datetime | None = None
    message: str | None = None


class ActivateResult(WireModel):
    model_config = _example(ex.ACTIVATE_RESULT)

    id: str
    status: str
    activation_time: datetime | None = None
    health_check: HealthCheckSummary | None = None
    started: bool = True
    dry_run: bool = False


class DeactivateResult(WireModel):
    model_config = _example(ex.DEACTIVATE_RESULT)

    id: str
    status: str
    deactivation_time: datetime | None = None
    pending_operations: int = 0


class ConfigurationUpdateResult(WireModel):
    model_config = _example(ex.CONFIGURATION_UPDATE_RESULT)

    id: str
    configuration_updated: bool
    restart_required: bool
    restarted: bool = False
    updated_fields: list[str] = Field(default_factory=list)
    effective_time: datetime | None = None
    dry_run: bool = False
    pending_restart: list[str] = Field(default_factory=list, description=_PENDING)


class ConnectivityCheck(WireModel):
    status: str
    response_time_ms: float | None = None
    last_check: datetime | None = None
    message: str | None = None


class ResourceUsageCheck(WireModel):
    status: str
    memory_usage_mb: float | None = None
    cpu_usage_percent: float | None = None


class DependenciesCheck(WireModel):
    status: str
    missing_dependencies: list[str] = Field(default_factory=list)


class HealthChecks(WireModel):
    connectivity: ConnectivityCheck
    resource_usage: ResourceUsageCheck
    dependencies: DependenciesCheck


class HealthMetrics(WireModel):
    uptime_seconds: float = 0
    total_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0
    avg_response_time_ms: float = 0


class ReplicaView(WireModel):
    """One live replica's view of a plugin (its observed state)."""

    node_id: str
    state: str = Field(
        description="starting, running, not_started (auto_start false), error or stopping"
    )
    pid: int | None = None
    health_status: str = "unknown"
    message: str | None = None
    last_check: datetime | None = None
    config_version: int = 0
    generation: int = 0
    last_error: str | None = None
    restarts: int = 0


class HealthReport(WireModel):
    model_config = _example(ex.HEALTH_REPORT)

    plugin_id: str
    status: str
    checks: HealthChecks
    metrics: HealthMetrics = Field(default_factory=HealthMetrics)
    node_id: str | None = Field(default=None, description="The replica that answered")
    replicas: list[ReplicaView] = Field(
        default_factory=list, description="Every live replica's view of the plugin"
    )


class AuditEvent(WireModel):
    """One state change in the audit trail."""

    model_config = _example(ex.AUDIT_EVENT)

    id: int
    at: datetime
    actor: str = Field(description="The token's subject, or `service` for the service itself")
    action: str = Field(
        description="register, activate, deactivate, configure, delete or auto_register"
    )
    plugin_id: str | None = None
    outcome: str = Field(description="success or failure")
    error_code: str | None = None
    request_id: str | None = None
    node_id: str | None = Field(default=None, description="The replica that made the change")
    details: dict[str, Any] = Field(default_factory=dict)


class NodeInstance(WireModel):
    plugin_id: str
    state: str
    pid: int | None = None
    generation: int = 0
    config_version: int = 0
    health_status: str = "unknown"
    last_error: str | None = None


class NodeCapacity(WireModel):
    memory_mb: int = 0
    cpu_cores: float = 0
    gpus: int = 0


class Node(WireModel):
    """One replica of the service on the shared database."""

    model_config = _example(ex.NODE)

    id: str
    host: str
    pid: int
    address: str | None = None
    version: str = ""
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    this_node: bool = False
    capacity: NodeCapacity = Field(default_factory=NodeCapacity)
    instances: list[NodeInstance] = Field(default_factory=list)


class TimeRange(WireModel):
    start: datetime
    end: datetime


class ResourceUsageMetrics(WireModel):
    avg_memory_mb: float = 0
    peak_memory_mb: float = 0
    avg_cpu_percent: float = 0
    samples: int = 0


class MetricsFigures(WireModel):
    execution_count: int = 0
    success_rate: float | None = Field(default=None, description=f"0 to 1; {_NO_CALLS}")
    avg_execution_time_ms: float = 0
    p50_execution_time_ms: float = 0
    p95_execution_time_ms: float = 0
    p99_execution_time_ms: float = 0
    error_count: int = 0
    resource_usage: ResourceUsageMetrics = Field(default_factory=ResourceUsageMetrics)


# A minute series reads the minute buckets' latency sketches only up to this many buckets
# (6 hours): a day by minute (1,440 sketches to decode) must stay cheap; its points' quantiles
# are null, and hour or day series (hourly roll-ups) carry them at any range.
MINUTE_SERIES_SKETCH_LIMIT = 360

_POINT_QUANTILE = (
    "latency quantile of this bucket's calls (ms, within 1% of the exact value, from the "
    "buckets' latency sketches); null when the bucket had no calls, and null in every point "
    f"of a minute series whose range holds more than {MINUTE_SERIES_SKETCH_LIMIT} minute "
    f"buckets ({MINUTE_SERIES_SKETCH_LIMIT // 60} hours: such a series reads no sketches; ask "
    "for hour or day granularity, or a shorter range)"
)


class TimeseriesPoint(WireModel):
    timestamp: datetime
    execution_count: int = 0
    avg_execution_time_ms: float = 0
    success_rate: float | None = Field(
        default=None, description=f"0 to 1; {_NO_CALLS} in this bucket (memory samples only)"
    )
    error_count: int = 0
    p50_execution_time_ms: float | None = Field(default=None, description=_POINT_QUANTILE)
    p95_execution_time_ms: float | None = Field(default=None, description=_POINT_QUANTILE)
    p99_execution_time_ms: float | None = Field(default=None, description=_POINT_QUANTILE)
    avg_memory_mb: float | None = Field(
        default=None,
        description="mean of the bucket's memory samples (MB); null when it has no samples",
    )
    peak_memory_mb: float | None = Field(
        default=None,
        description="largest of the bucket's memory samples (MB); null when it has no samples",
    )


class MetricsReport(WireModel):
    model_config = _example(ex.METRICS_REPORT)

    plugin_id: str
    time_range: TimeRange
    granularity: str = "hour"
    metrics: MetricsFigures
    timeseries: list[TimeseriesPoint] = Field(default_factory=list)


class DiscoveredPlugin(WireModel):
    name: str
    source: str
    version: str | None = None
    type: str | None = None
    description: str | None = None
    location: str | None = None
    class_path: str | None = None
    installed: bool = True
    compatible: bool = True
    incompatible_reason: str | None = None
    conflicts: list[str] = Field(default_factory=list)
    already_registered: bool = False
    auto_registered: bool = False
    plugin_id: str | None = None


class DiscoveryError(WireModel):
    source: str
    location: str | None = None
    message: str


class DiscoverySummary(WireModel):
    total_discovered: int = 0
    compatible_plugins: int = 0
    incompatible_plugins: int = 0
    auto_registered: int = 0


class DiscoveryResult(WireModel):
    model_config = _example(ex.DISCOVERY_RESULT)

    discovered_plugins: list[DiscoveredPlugin] = Field(default_factory=list)
    discovery_summary: DiscoverySummary = Field(default_factory=DiscoverySummary)
    errors: list[DiscoveryError] = Field(default_factory=list)


class CompositionConflict(WireModel):
    type: str
    plugins: list[str]
    message: str
    resolution_options: list[str] = Field(default_factory=list)


class CompositionWarning(WireModel):
    type: str
    message: str
    severity: str = "low"
    plugins: list[str] = Field(default_factory=list)


class Synergy(WireModel):
    plugins: list[str]
    integration_points: list[str] = Field(default_factory=list)
    benefits: list[str] = Field(default_factory=list)


class CompositionResult(WireModel):
    model_config = _example(ex.COMPOSITION_RESULT)

    composition_valid: bool
    conflicts: list[CompositionConflict] = Field(default_factory=list)
    warnings: list[CompositionWarning] = Field(default_factory=list)
    synergies: list[Synergy] = Field(default_factory=list)
    recommendations: list[str] = Field(default_factory=list)
    resolved: list[dict[str, Any]] = Field(default_factory=list)


class InvokeResult(WireModel):
    model_config = _example(ex.INVOKE_RESULT)

    plugin_id: str
    operation: str
    result: Any = None
    duration_ms: float = 0


class DeleteResult(WireModel):
    model_config = _example(ex.DELETE_RESULT)

    id: str
    deleted: bool
    deactivated: bool = False


class Pagination(WireModel):
    model_config = _example(ex.PAGINATION)

    page: int
    limit: int
    total: int = Field(
        description="How many items match. Exact unless `total_is_estimate`: the plugin list "
        "counts up to 10,000 matches and no further; past that, more than `total` match "
        "(10,000, or the end of this page when it lies further)."
    )
    has_next: bool = Field(description="Whether a next page holds items (exact, estimate or not)")
    total_is_estimate: bool = Field(
        default=False,
        description="true: `total` is a lower bound, not a count (more than `total` match)",
    )


T = TypeVar("T")


class Envelope(WireModel, Generic[T]):
    model_config = ConfigDict(json_schema_extra=_envelope_example)

    success: bool = True
    data: T


class PageEnvelope(WireModel, Generic[T]):
    model_config = ConfigDict(json_schema_extra=_envelope_example)

    success: bool = True
    data: list[T]
    pagination: Pagination


class ErrorBody(WireModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    request_id: str | None = None


class ErrorEnvelope(WireModel):
    model_config = _example(ex.ERROR_ENVELOPE)

    success: bool = False
    error: ErrorBody
