"""The refusals of the state changes, by name: each builds the API error with its wording and
details, so the rules that raise them read as rules (`raise refusals.already_active(row)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlx_platform.composition import rules
from mlx_platform.core import integrity
from mlx_platform.errors import (
    DependencyMissingError,
    InsufficientResourcesError,
    InvalidConfigurationError,
    InvalidStateError,
    MLXError,
    OperationTimeoutError,
    PluginAlreadyExistsError,
    PluginCodeChangedError,
    PluginConflictError,
    PluginHealthCheckFailedError,
    PluginNotFoundError,
    ValidationError,
)
from mlx_platform.storage import PluginRow

# ---------------------------------------------------------------- any plugin


def not_found(plugin_id: str) -> PluginNotFoundError:
    return PluginNotFoundError(f"Plugin '{plugin_id}' does not exist", {"plugin_id": plugin_id})


# ---------------------------------------------------------------- registration


def invalid_definition(problems: dict[str, str]) -> ValidationError:
    """VALIDATION_ERROR naming the first problem; every problem in the details."""
    first = next(iter(problems))
    return ValidationError(f"Invalid plugin definition: {first} {problems[first]}", problems)


def already_registered(
    name: str, version: str, existing_id: str, *, class_error: str | None = None
) -> PluginAlreadyExistsError:
    """PLUGIN_ALREADY_EXISTS; `class_error`: the stored one's class still cannot be loaded."""
    message = f"Plugin '{name}' version {version} is already registered as {existing_id}"
    if class_error is not None:
        message += f", and its class still cannot be loaded: {class_error}"
    return PluginAlreadyExistsError(
        message, {"existing_id": existing_id, "name": name, "version": version}
    )


def active_with_new_code(existing: PluginRow) -> InvalidStateError:
    """Registering again (new code on disk) while the stored one is active."""
    return InvalidStateError(
        f"Plugin '{existing.name}' version {existing.version} ({existing.id}) is active: "
        "deactivate it before registering it again with its new code",
        {"plugin_id": existing.id, "status": existing.status},
    )


# ---------------------------------------------------------------- unregistration


def required_by_active(row: PluginRow, dependents: Sequence[PluginRow]) -> PluginConflictError:
    names = [f"{d.name} ({d.id})" for d in dependents]
    return PluginConflictError(
        f"Plugin '{row.name}' is required by active plugin(s): {', '.join(names)}",
        {
            "conflicting_plugin": dependents[0].name,
            "conflict_type": "required_by_active_plugin",
            "required_by": [d.id for d in dependents],
            "resolution_options": [f"Deactivate '{d.name}' first" for d in dependents],
        },
    )


def active_without_force(row: PluginRow) -> InvalidStateError:
    return InvalidStateError(
        f"Plugin '{row.id}' is active: deactivate it first, or pass force=true",
        {"plugin_id": row.id, "status": row.status},
    )


# ---------------------------------------------------------------- configuration


def invalid_configuration(row: PluginRow, problems: dict[str, str]) -> InvalidConfigurationError:
    listing = "; ".join(f"{k} {v}" for k, v in problems.items())
    return InvalidConfigurationError(
        f"Configuration of plugin '{row.name}' is invalid: {listing}", problems
    )


# ---------------------------------------------------------------- activation


def already_active(row: PluginRow) -> InvalidStateError:
    return InvalidStateError(
        f"Plugin '{row.id}' is already active", {"plugin_id": row.id, "status": row.status}
    )


def not_loadable(row: PluginRow) -> InvalidStateError:
    return InvalidStateError(
        f"Plugin '{row.id}' cannot be activated until it is registered again "
        f"with a loadable class: {row.status_reason}",
        {"plugin_id": row.id, "status": row.status, "reason": row.status_reason},
    )


def code_changed(row: PluginRow, diff: integrity.Changes) -> PluginCodeChangedError:
    """PLUGIN_CODE_CHANGED naming what differs from the files pinned at registration."""
    return PluginCodeChangedError(
        f"Plugin '{row.name}' {row.version} ({row.id}) cannot be activated: its code changed "
        f"since it was registered ({diff.describe()}): register the plugin again to accept "
        "the new code, or restore the registered files",
        {
            "plugin_id": row.id,
            "root": (row.code_digest or {}).get("root"),
            **diff.as_details(),
            "resolution_options": [
                "Register the plugin again (POST /v1/plugins, same name and version) to pin "
                "the code now on disk, then activate it",
                "Restore the files the plugin was registered with",
            ],
        },
    )


def incompatible_platform(row: PluginRow, problems: list[str]) -> PluginConflictError:
    return PluginConflictError(
        f"Plugin '{row.name}' cannot run in this service: {'; '.join(problems)}",
        {
            "conflicting_plugin": None,
            "conflict_type": "incompatible_platform",
            "problems": problems,
            "resolution_options": [
                "Run the service where the plugin's supported_platforms, min_python_version "
                "and platform_api allow it",
                "Register a version of the plugin that supports this platform",
            ],
        },
    )


def conflict(conflicts: Sequence[rules.Conflict]) -> PluginConflictError:
    """PLUGIN_CONFLICT: the first conflict's message and fields, and all of them."""
    first = conflicts[0]
    return PluginConflictError(
        first.message,
        {
            "conflicting_plugin": first.conflicting_plugin,
            "conflicting_plugin_id": first.conflicting_plugin_id,
            "conflict_type": first.conflict_type,
            "resolution_options": first.resolution_options,
            "conflicts": [c.as_dict() for c in conflicts],
        },
    )


def dependencies_missing(
    row: PluginRow, missing: Sequence[rules.MissingDependency]
) -> DependencyMissingError:
    """DEPENDENCY_MISSING: each requirement, and whether a registered version would meet it
    (activate that one) or none does (register one)."""
    parts = []
    options = []
    for m in missing:
        if m.satisfiable_by_registered:
            best = m.satisfying[0]
            parts.append(f"'{m.requirement}' (a registered version satisfies it: activate it)")
            options.append(f"Activate '{m.name}' {best['version']} ({best['id']})")
        else:
            parts.append(f"'{m.requirement}' (no registered version satisfies it: register one)")
            options.append(f"Register and activate a plugin satisfying '{m.requirement}'")
    return DependencyMissingError(
        f"Plugin '{row.name}' requires {', '.join(parts)}",
        {
            "missing_dependencies": [m.as_dict() for m in missing],
            "resolution_options": options,
        },
    )


def shortfall_text(shortfall: dict[str, Any]) -> str:
    """`memory_mb: needs 512, 256 available, ...`: what a resource shortfall lacks."""
    return ", ".join(
        f"{k}: needs {v['required']}, {v['available']} available" for k, v in shortfall.items()
    )


def insufficient_resources(row: PluginRow, shortfall: dict[str, Any]) -> InsufficientResourcesError:
    return InsufficientResourcesError(
        f"Not enough resources to activate plugin '{row.name}': {shortfall_text(shortfall)}",
        {
            "shortfall": shortfall,
            "requirements": row.requirements,
            "resolution_options": [
                "Deactivate plugins that claim resources",
                "Raise the capacity settings (MLX_CAPACITY_MEMORY_MB, MLX_CAPACITY_CPU_CORES, "
                "MLX_CAPACITY_GPUS) or run on a larger machine",
            ],
        },
    )


# ---------------------------------------------------------------- deactivation


def not_active(row: PluginRow) -> InvalidStateError:
    return InvalidStateError(
        f"Plugin '{row.id}' is not active (status: {row.status})",
        {"plugin_id": row.id, "status": row.status},
    )


def never_activated(row: PluginRow) -> InvalidStateError:
    return InvalidStateError(
        f"Plugin '{row.id}' was never activated: {row.status_reason}",
        {"plugin_id": row.id, "status": row.status},
    )


# ---------------------------------------------------------------- invocation


def not_active_for_calls(row: PluginRow) -> InvalidStateError:
    return InvalidStateError(
        f"Plugin '{row.id}' is not active (status: {row.status}): activate it first",
        {"plugin_id": row.id, "status": row.status},
    )


def not_running_here(plugin_id: str, node_id: str, reason: str) -> InvalidStateError:
    return InvalidStateError(
        f"Plugin '{plugin_id}' is active but not running on this replica: {reason}",
        {"plugin_id": plugin_id, "status": "error", "node_id": node_id, "reason": reason},
    )


def failed_to_start(row: PluginRow, exc: MLXError) -> PluginHealthCheckFailedError:
    return PluginHealthCheckFailedError(f"Plugin '{row.name}' failed to start: {exc.message}")


def call_did_not_start(operation: str, timeout: float) -> OperationTimeoutError:
    return OperationTimeoutError(
        f"operation '{operation}' did not start within its {timeout:g} s timeout: the "
        "plugin's call slots were busy (MLX_CALLS_PER_PLUGIN) or it was starting",
        {"operation": operation, "timeout": timeout},
    )


def call_slots_busy(operation: str, timeout: float) -> OperationTimeoutError:
    return OperationTimeoutError(
        f"operation '{operation}' did not start within its {timeout:g} s timeout: "
        "the plugin's call slots were busy (MLX_CALLS_PER_PLUGIN)",
        {"operation": operation, "timeout": timeout},
    )


def call_timed_out(operation: str, timeout: float) -> OperationTimeoutError:
    return OperationTimeoutError(
        f"operation '{operation}' did not finish within its {timeout:g} s timeout",
        {"operation": operation, "timeout": timeout},
    )
