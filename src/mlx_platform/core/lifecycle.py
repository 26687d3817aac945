"""State changes of a plugin: activate, deactivate, configure; and its health and calls.

registered -> active <-> inactive; error reachable from each. Each change checks first,
touches the live instance next, and records the new state last, in one transaction; a
failed change leaves the stored state as it was and says why.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from mlx_platform.core import config_schema, rules
from mlx_platform.core.context import Core
from mlx_platform.core.registry import get_row
from mlx_platform.core.resources import resource_shortfall
from mlx_platform.core.secrets import REDACTOR, redact_value
from mlx_platform.errors import (
    DependencyMissingError,
    InsufficientResourcesError,
    InvalidConfigurationError,
    InvalidStateError,
    MLXError,
    PluginConflictError,
    PluginHealthCheckFailedError,
)
from mlx_platform.runtime.loading import ClassLoadError
from mlx_platform.storage import PluginRow
from mlx_platform.storage.repositories import PluginRepository
from mlx_platform.wire import SECRET_MASK

log = logging.getLogger("mlx_platform.lifecycle")


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- configuration


def merged_configuration(
    core: Core, row: PluginRow, incoming: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Stored configuration updated by `incoming`, in clear, and the fields that changed.

    A secret field sent as the mask means "keep the stored value" (a client round-tripping a
    GET sends the mask back), never "store the mask".
    """
    schema = row.configuration_schema or {}
    secrets = config_schema.secret_fields(schema)
    current = core.box.open(row.configuration or {})
    merged = dict(current)
    changed: list[str] = []
    for key, value in incoming.items():
        if value == SECRET_MASK and (key in secrets or key in current):
            continue
        if key in secrets and value is not None:
            REDACTOR.remember(value)
        if current.get(key, _MISSING) != value:
            changed.append(key)
        merged[key] = value
    return merged, changed


_MISSING = object()


def effective_configuration(core: Core, row: PluginRow, config: dict[str, Any]) -> dict[str, Any]:
    """What the plugin instance receives: `config` (in clear) with the schema's defaults."""
    return config_schema.apply_defaults(
        core.box.open_schema(row.configuration_schema or {}), config
    )


def _validate_configuration(core: Core, row: PluginRow, config: dict[str, Any]) -> dict[str, Any]:
    schema = row.configuration_schema or {}
    full = effective_configuration(core, row, config)
    problems = config_schema.validate_configuration(schema, full)
    if problems:
        listing = "; ".join(f"{k} {v}" for k, v in problems.items())
        raise InvalidConfigurationError(
            f"Configuration of plugin '{row.name}' is invalid: {listing}", problems
        )
    return full


# ---------------------------------------------------------------- activation checks


def _check_activation(core: Core, row: PluginRow) -> None:
    """Conflicts, dependencies and resources of `row` against the active plugins.

    The rules are the composition engine's (``rules.pair_conflicts`` for every active plugin,
    ``rules.unmet_requirements`` for ``requires``), read from fresh rows: activation must see
    the latest states. A requirement counts as met only by an active plugin (activation never
    starts other plugins); each missing one says which registered versions would satisfy it.
    The singleton rule is also a database constraint (``singleton_slot``), which decides when
    two activations race past this check.
    """
    with core.db.read() as session:
        repo = PluginRepository(session)
        registered = repo.all()
    active = [r for r in registered if r.status == "active" and r.id != row.id]
    cannot_run = rules.platform_problems(row.plugin_metadata or {})
    if cannot_run:
        raise PluginConflictError(
            f"Plugin '{row.name}' cannot run in this service: {'; '.join(cannot_run)}",
            {
                "conflicting_plugin": None,
                "conflict_type": "incompatible_platform",
                "problems": cannot_run,
                "resolution_options": [
                    "Run the service where the plugin's supported_platforms, min_python_version "
                    "and platform_api allow it",
                    "Register a version of the plugin that supports this platform",
                ],
            },
        )
    me = rules.facts_of_row(row)
    conflicts = rules.conflicts_with_active(
        me, [rules.facts_of_row(r) for r in active], core.settings.singleton_type_set
    )
    if conflicts:
        first = conflicts[0]
        raise PluginConflictError(
            first.message,
            {
                "conflicting_plugin": first.conflicting_plugin,
                "conflicting_plugin_id": first.conflicting_plugin_id,
                "conflict_type": first.conflict_type,
                "resolution_options": first.resolution_options,
                "conflicts": [c.as_dict() for c in conflicts],
            },
        )
    missing = rules.unmet_requirements(
        me, [rules.facts_of_row(r) for r in registered if r.id != row.id], need_active=True
    )
    if missing:
        parts = []
        options = []
        for m in missing:
            if m.satisfiable_by_registered:
                best = m.satisfying[0]
                parts.append(f"'{m.requirement}' (a registered version satisfies it: activate it)")
                options.append(f"Activate '{m.name}' {best['version']} ({best['id']})")
            else:
                parts.append(
                    f"'{m.requirement}' (no registered version satisfies it: register one)"
                )
                options.append(f"Register and activate a plugin satisfying '{m.requirement}'")
        raise DependencyMissingError(
            f"Plugin '{row.name}' requires {', '.join(parts)}",
            {
                "missing_dependencies": [m.as_dict() for m in missing],
                "resolution_options": options,
            },
        )
    capacity = core.capacity()
    shortfall = resource_shortfall(capacity, [a.requirements for a in active], row.requirements)
    if shortfall:
        what = ", ".join(
            f"{k}: needs {v['required']}, {v['available']} available" for k, v in shortfall.items()
        )
        raise InsufficientResourcesError(
            f"Not enough resources to activate plugin '{row.name}': {what}",
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


def _start_instance(core: Core, row: PluginRow, config: dict[str, Any], *, start: bool) -> Any:
    """A configured (and, with `start`, started) instance of the plugin, or the reason why not."""
    timeout = core.settings.health_timeout * 6
    try:
        instance = core.host.create(
            row.id,
            row.class_path,
            isolation=core.isolation_of(row.isolation),
            on_exit=core.supervisor.on_exit,
            extra_paths=[str(p) for p in core.settings.plugin_dirs],
            load_timeout=core.settings.class_check_timeout,
        )
    except (ClassLoadError, MLXError) as exc:
        reason = exc.message if isinstance(exc, MLXError) else str(exc)
        raise PluginHealthCheckFailedError(
            f"Plugin '{row.name}' could not be loaded: {reason}",
            {"stage": "load", "reason": reason},
        ) from exc
    try:
        instance.configure(config, timeout)
        instance.applied_config = dict(config)
        if start:
            instance.start(timeout)
    except MLXError as exc:
        instance.stop(graceful_timeout=0, force=True)
        raise PluginHealthCheckFailedError(
            f"Plugin '{row.name}' failed to start: {exc.message}",
            {"stage": "start", "reason": exc.message},
        ) from exc
    return instance


def restart_plugin(core: Core, row: PluginRow) -> bool:
    """Start a plugin whose instance died, from its stored configuration (the supervisor's
    restart). Back to `active` when it starts and passes a health check."""
    try:
        full = effective_configuration(core, row, core.box.open(row.configuration or {}))
        instance = _start_instance(core, row, full, start=True)
    except MLXError as exc:
        core.supervisor.failed(row.id, f"restart failed: {exc.message}")
        return False
    outcome = instance.health(core.settings.health_timeout)
    if not outcome.healthy:
        instance.stop(graceful_timeout=0, force=True)
        core.supervisor.failed(row.id, f"restart failed its health check: {outcome.message}")
        return False
    # Serve from the new instance first, then say so: a call that sees `active` must find it.
    core.host.put(instance)
    with core.db.transaction() as session:
        fresh = PluginRepository(session).get(row.id)
        if fresh is None or fresh.status != "error":
            if core.host.get(row.id) is instance:
                core.host.remove(row.id)
            instance.stop(graceful_timeout=0, force=True)
            return False
        fresh.status = "active"
        fresh.status_reason = None
        fresh.health_status = "healthy"
        fresh.health_last_check = _now()
        fresh.health_response_time_ms = round(outcome.response_time_ms, 3)
        fresh.health_message = outcome.message
    log.info("plugin %s restarted", row.id)
    return True


def activate_plugin(
    core: Core,
    plugin_id: str,
    configuration: dict[str, Any],
    *,
    auto_start: bool = True,
    dry_run: bool = False,
) -> dict[str, Any]:
    with core.plugin_lock(plugin_id):
        row = get_row(core, plugin_id)
        if row.status == "active":
            raise InvalidStateError(
                f"Plugin '{plugin_id}' is already active",
                {"plugin_id": plugin_id, "status": row.status},
            )
        if not row.loadable:
            raise InvalidStateError(
                f"Plugin '{plugin_id}' cannot be activated until it is registered again with a "
                f"loadable class: {row.status_reason}",
                {"plugin_id": plugin_id, "status": row.status, "reason": row.status_reason},
            )
        merged, _changed = merged_configuration(core, row, configuration)
        full = _validate_configuration(core, row, merged)
        _check_activation(core, row)
        if dry_run:
            return {
                "id": plugin_id,
                "status": row.status,
                "would_become": "active",
                "activation_time": None,
                "health_check": None,
                "started": False,
                "dry_run": True,
            }

        instance = None
        health: dict[str, Any]
        try:
            instance = _start_instance(core, row, full, start=auto_start)
            if auto_start:
                outcome = instance.health(core.settings.health_timeout)
                health = {
                    "status": "healthy" if outcome.healthy else "unhealthy",
                    "response_time_ms": round(outcome.response_time_ms, 3),
                    "last_check": _now(),
                    "message": outcome.message,
                }
                if not outcome.healthy:
                    instance.stop(graceful_timeout=0, force=True)
                    raise PluginHealthCheckFailedError(
                        f"Plugin '{row.name}' failed its first health check: {outcome.message}",
                        {
                            "stage": "health_check",
                            "reason": outcome.message,
                            "health_check": {
                                **health,
                                "last_check": health["last_check"].isoformat(),
                            },
                        },
                    )
            else:
                health = {
                    "status": "not_started",
                    "response_time_ms": None,
                    "last_check": None,
                    "message": "auto_start is false: the first invocation starts the plugin",
                }
        except PluginHealthCheckFailedError as exc:
            _record_failed_activation(core, plugin_id, exc.message)
            raise

        schema = row.configuration_schema or {}
        sealed = core.box.seal(merged, config_schema.secret_fields(schema))
        activated = _now()
        singleton = row.type if row.type in core.settings.singleton_type_set else None
        try:
            with core.db.transaction() as session:
                fresh = PluginRepository(session).get(plugin_id)
                if fresh is None:
                    raise InvalidStateError(f"Plugin '{plugin_id}' was unregistered meanwhile")
                fresh.status = "active"
                fresh.status_reason = None
                fresh.configuration = sealed
                fresh.config_version = (fresh.config_version or 0) + 1
                fresh.activated_at = activated
                fresh.singleton_slot = singleton
                fresh.health_status = health["status"]
                fresh.health_last_check = health["last_check"]
                fresh.health_response_time_ms = health["response_time_ms"]
                fresh.health_message = health["message"]
                session.flush()
        except IntegrityError:
            # Another activation of the same singleton type won the race (the unique index
            # on singleton_slot): undo the instance and answer the conflict.
            instance.stop(graceful_timeout=0, force=True)
            with core.db.read() as session:
                winner = PluginRepository(session).active_singleton(row.type)
            name = winner.name if winner else "another plugin"
            message = (
                f"Plugin '{row.name}' conflicts with active plugin '{name}': only one "
                f"'{row.type}' can be active"
            )
            options = [
                f"Deactivate '{name}' before activating '{row.name}'",
                f"Use '{name}' for {rules.type_words(row.type)} instead",
            ]
            conflict = {
                "conflicting_plugin": name,
                "conflicting_plugin_id": winner.id if winner else None,
                "conflict_type": "singleton_type",
                "message": message,
                "resolution_options": options,
            }
            raise PluginConflictError(message, {**conflict, "conflicts": [conflict]}) from None
        except BaseException:
            instance.stop(graceful_timeout=0, force=True)
            raise
        core.host.put(instance)
        core.supervisor.reset(plugin_id)
    log.info("activated plugin %s", plugin_id)
    return {
        "id": plugin_id,
        "status": "active",
        "activation_time": activated,
        "health_check": health,
        "started": auto_start,
        "dry_run": False,
    }


def _record_failed_activation(core: Core, plugin_id: str, reason: str) -> None:
    """Keep the status as it was, but say what happened (reason and health)."""
    with core.db.transaction() as session:
        row = PluginRepository(session).get(plugin_id)
        if row is not None:
            row.status_reason = f"activation failed at {_now().isoformat()}: {reason}"
            row.health_status = "unhealthy"
            row.health_last_check = _now()
            row.health_message = reason


def deactivate_plugin(
    core: Core, plugin_id: str, *, force: bool = False, graceful_timeout: float = 30
) -> dict[str, Any]:
    with core.plugin_lock(plugin_id):
        row = get_row(core, plugin_id)
        if row.status not in ("active", "error"):
            raise InvalidStateError(
                f"Plugin '{plugin_id}' is not active (status: {row.status})",
                {"plugin_id": plugin_id, "status": row.status},
            )
        if row.status == "error" and not row.loadable:
            raise InvalidStateError(
                f"Plugin '{plugin_id}' was never activated: {row.status_reason}",
                {"plugin_id": plugin_id, "status": row.status},
            )
        pending = 0
        core.supervisor.reset(plugin_id)
        instance = core.host.remove(plugin_id)
        if instance is not None:
            pending = instance.stop(graceful_timeout=graceful_timeout, force=force)
        when = _now()
        with core.db.transaction() as session:
            fresh = PluginRepository(session).get(plugin_id)
            if fresh is not None:
                fresh.status = "inactive"
                fresh.status_reason = None
                fresh.singleton_slot = None
                fresh.deactivated_at = when
                fresh.health_status = "unknown"
    log.info("deactivated plugin %s (pending operations: %d)", plugin_id, pending)
    return {
        "id": plugin_id,
        "status": "inactive",
        "deactivation_time": when,
        "pending_operations": pending,
    }


def update_configuration(
    core: Core,
    plugin_id: str,
    configuration: dict[str, Any],
    *,
    allow_restart: bool,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Store the new configuration and bring the running instance to it: through
    `configure()` when every field it changes allows that, by a restart (when the request
    allows it) when a `hot_reload: false` field differs from what the instance runs with.
    A cold change stored without a restart stays pending: asking again with
    `restart_required: true` applies it, even when the stored value no longer changes."""
    with core.plugin_lock(plugin_id):
        row = get_row(core, plugin_id)
        merged, changed = merged_configuration(core, row, configuration)
        full = _validate_configuration(core, row, merged)
        schema = row.configuration_schema or {}
        instance = core.host.get(plugin_id)
        running = row.status == "active" and instance is not None
        applied: dict[str, Any] = getattr(instance, "applied_config", {}) if running else {}
        cold = sorted(
            k
            for k in config_schema.cold_fields(schema)
            if running and applied.get(k) != full.get(k)
        )
        hot_change = running and any(
            applied.get(k) != full.get(k) for k in set(full) | set(applied)
        )
        result: dict[str, Any] = {
            "id": plugin_id,
            "configuration_updated": bool(changed),
            "restart_required": bool(cold),
            "restarted": False,
            "updated_fields": sorted(changed),
            "effective_time": None,
            "dry_run": dry_run,
        }
        if cold:
            result["restart_fields"] = cold
        if dry_run:
            return result
        if running and instance is not None:
            if cold and allow_restart:
                _restart_with(core, row, instance, full, applied)
                result["restarted"] = True
                result["configuration_updated"] = True
                result["effective_time"] = _now()
            elif not cold:
                if hot_change:
                    instance.configure(full, core.settings.health_timeout * 6)
                    instance.applied_config = full
                result["effective_time"] = _now()
        else:
            result["effective_time"] = _now()  # takes effect at the next activation
        if changed:
            sealed = core.box.seal(merged, config_schema.secret_fields(schema))
            with core.db.transaction() as session:
                fresh = PluginRepository(session).get(plugin_id)
                if fresh is not None:
                    fresh.configuration = sealed
                    fresh.config_version = (fresh.config_version or 0) + 1
    if changed or result["restarted"]:
        log.info(
            "configuration of plugin %s updated: %s%s",
            plugin_id,
            ", ".join(sorted(changed)) or "(no field changed)",
            " (restarted)" if result["restarted"] else "",
        )
    return result


def _restart_with(
    core: Core, row: PluginRow, instance: Any, full: dict[str, Any], previous: dict[str, Any]
) -> None:
    """Replace the running instance by one configured with `full`. When the new one cannot
    start, the old configuration is started again and the error answered."""
    instance.stop(graceful_timeout=30, force=False)
    core.host.remove(row.id)
    try:
        core.host.put(_start_instance(core, row, full, start=True))
    except MLXError:
        try:
            core.host.put(_start_instance(core, row, previous, start=True))
        except MLXError as exc:
            core.supervisor.failed(
                row.id, f"restart with the new configuration failed: {exc.message}"
            )
        raise


# ---------------------------------------------------------------- health and calls


def plugin_health(core: Core, plugin_id: str) -> dict[str, Any]:
    row = get_row(core, plugin_id)
    instance = core.host.get(plugin_id)
    with core.db.read() as session:
        registered = PluginRepository(session).all()
    meta = row.plugin_metadata or {}
    missing = [
        m.requirement for m in rules.missing_dependencies(meta, registered, need_active=True)
    ] + rules.missing_python_requirements(meta)
    deps = {"status": "fail" if missing else "pass", "missing_dependencies": missing}
    now = _now()
    if instance is None or row.status != "active":
        status = "inactive" if row.status != "error" else "unhealthy"
        return {
            "plugin_id": plugin_id,
            "status": status,
            "checks": {
                "connectivity": {
                    "status": "skip",
                    "response_time_ms": None,
                    "last_check": row.health_last_check,
                    "message": f"plugin is not running (status: {row.status})",
                },
                "resource_usage": {
                    "status": "skip",
                    "memory_usage_mb": None,
                    "cpu_usage_percent": None,
                },
                "dependencies": deps,
            },
            "metrics": {
                "uptime_seconds": 0,
                "total_requests": 0,
                "successful_requests": 0,
                "failed_requests": 0,
                "avg_response_time_ms": 0,
            },
        }
    if instance.started:
        outcome = instance.health(core.settings.health_timeout)
        connectivity = {
            "status": "pass" if outcome.healthy else "fail",
            "response_time_ms": round(outcome.response_time_ms, 3),
            "last_check": now,
            "message": outcome.message,
        }
    else:
        outcome = None
        connectivity = {
            "status": "skip",
            "response_time_ms": None,
            "last_check": None,
            "message": "not started yet (auto_start is false)",
        }
    mem, cpu = instance.usage()
    usage = {
        "status": "pass",
        "memory_usage_mb": round(mem, 1),
        "cpu_usage_percent": round(cpu, 1),
        "scope": "service_process" if instance.isolation == "inprocess" else "worker_process",
    }
    failing = connectivity["status"] == "fail" or deps["status"] == "fail"
    status = (
        "unhealthy" if connectivity["status"] == "fail" else ("degraded" if failing else "healthy")
    )
    if outcome is not None:
        with core.db.transaction() as session:
            PluginRepository(session).set_health(
                plugin_id,
                status=status,
                last_check=now,
                response_time_ms=connectivity["response_time_ms"],
                message=outcome.message,
            )
    uptime = time.time() - instance.started_at if instance.started_at else 0.0
    ok = instance.total - instance.failed
    return {
        "plugin_id": plugin_id,
        "status": status,
        "checks": {"connectivity": connectivity, "resource_usage": usage, "dependencies": deps},
        "metrics": {
            "uptime_seconds": round(uptime, 3),
            "total_requests": instance.total,
            "successful_requests": ok,
            "failed_requests": instance.failed,
            "avg_response_time_ms": round(instance.sum_ms / instance.total, 3)
            if instance.total
            else 0,
        },
    }


def invoke_plugin(
    core: Core, plugin_id: str, operation: str, arguments: dict[str, Any], timeout: float | None
) -> dict[str, Any]:
    row = get_row(core, plugin_id)
    if row.status != "active":
        raise InvalidStateError(
            f"Plugin '{plugin_id}' is not active (status: {row.status}): activate it first",
            {"plugin_id": plugin_id, "status": row.status},
        )
    instance = core.host.get(plugin_id)
    if instance is None:
        raise InvalidStateError(f"Plugin '{plugin_id}' is active but not running in this service")
    if not instance.started:
        try:
            instance.start(core.settings.health_timeout * 6)
        except MLXError as exc:
            raise PluginHealthCheckFailedError(
                f"Plugin '{row.name}' failed to start: {exc.message}"
            ) from exc
    t0 = time.perf_counter()
    ok = False
    try:
        result = instance.invoke(operation, arguments, timeout)
        ok = True
    finally:
        elapsed = (time.perf_counter() - t0) * 1000
        core.metrics.record(plugin_id, elapsed, ok)
    return {
        "plugin_id": plugin_id,
        "operation": operation,
        "result": redact_value(result),
        "duration_ms": round(elapsed, 3),
    }


def restore_active_plugins(core: Core) -> None:
    """On service start: start again every plugin stored as active."""
    with core.db.read() as session:
        active = PluginRepository(session).active()
    for row in active:
        try:
            full = effective_configuration(core, row, core.box.open(row.configuration or {}))
            instance = _start_instance(core, row, full, start=True)
            core.host.put(instance)
            log.info("restored plugin %s", row.id)
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not stop the service
            reason = exc.message if isinstance(exc, MLXError) else f"{type(exc).__name__}: {exc}"
            with core.db.transaction() as session:
                fresh = PluginRepository(session).get(row.id)
                if fresh is not None:
                    fresh.status = "error"
                    fresh.status_reason = f"could not be restarted on service start: {reason}"
                    fresh.singleton_slot = None
                    fresh.health_status = "unhealthy"
            log.warning("plugin %s could not be restored: %s", row.id, reason)
