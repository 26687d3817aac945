"""The refusals of the state changes, by name: each builds the API error with its wording and
details, so the rules that raise them read as rules (`raise refusals.already_active(row)`).
"""

from __future__ import annotations

from collections.abc import Sequence

from mlx_platform.errors import (
    InvalidStateError,
    PluginAlreadyExistsError,
    PluginConflictError,
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
