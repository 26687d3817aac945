"""State changes of a plugin: activate, deactivate, configure; and its health and calls.

registered -> active <-> inactive; error reachable from each. Each change checks the rules
and writes the new desired state in one transaction under the state-change guard
(`Database.state_change`), so the rules hold whatever the concurrency, on every replica;
then this replica brings its own instance to that state (the runtime's reconciler) and
answers. The other replicas hear of the change (NOTIFY, or their next poll) and follow.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from mlx_platform.composition import rules
from mlx_platform.composition.resources import resource_shortfall
from mlx_platform.core import audit, config_schema, integrity, replica
from mlx_platform.core.context import Core
from mlx_platform.core.registry import get_row
from mlx_platform.core.secrets import REDACTOR, redact_value
from mlx_platform.errors import (
    DependencyMissingError,
    InsufficientResourcesError,
    InvalidConfigurationError,
    InvalidStateError,
    MLXError,
    PluginCodeChangedError,
    PluginConflictError,
    PluginHealthCheckFailedError,
    PluginNotFoundError,
)
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


def _check_activation(core: Core, row: PluginRow, registered: list[PluginRow]) -> None:
    """Conflicts, dependencies and resources of `row` against the active plugins.

    The rules are the composition engine's (``rules.pair_conflicts`` for every active plugin,
    ``rules.unmet_requirements`` for ``requires``), over `registered`: the rows read inside
    the state-change transaction, so no concurrent change can slip between this check and the
    write (on any replica). A requirement counts as met only by an active plugin (activation
    never starts other plugins); each missing one says which registered versions would satisfy
    it. Resources: this replica's capacity (every replica checks its own when it starts the
    plugin). The singleton rule is also a database constraint (``singleton_slot``).
    """
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
        raise _conflict_error(conflicts)
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


_DESIRED_FIELDS = (
    "status",
    "status_reason",
    "configuration",
    "running_configuration",
    "config_version",
    "generation",
    "singleton_slot",
    "activated_at",
    "auto_start",
)


def _already_running(core: Core, row: PluginRow) -> bool:
    """Desired active, and no live replica reports it in error: activating again is refused.
    (While a replica reports `error`, for example after it gave up restarting, an activation
    is the operator's retry: every replica starts a fresh instance.)"""
    views = replica.observed(core, [row.id])[row.id]
    return not any(v.state == "error" for v in views)


def _conflict_error(conflicts: list[rules.Conflict]) -> PluginConflictError:
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


def _singleton_conflict(core: Core, row: PluginRow) -> PluginConflictError:
    with core.db.read() as session:
        winner = PluginRepository(session).active_singleton(row.type)
    conflict = rules.Conflict.singleton(
        row.name,
        row.type,
        winner.name if winner else "another plugin",
        winner.id if winner else None,
    )
    return _conflict_error([conflict])


def _activate_plugin(
    core: Core,
    plugin_id: str,
    configuration: dict[str, Any],
    *,
    auto_start: bool = True,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Check the rules and write the desired state (active, with the configuration) in one
    guarded transaction; then start this replica's instance and wait for its first health
    check. A failure there rolls the desired state back and answers why."""
    with core.plugin_lock(plugin_id):
        with core.db.state_change() as session:
            repo = PluginRepository(session)
            row = repo.get(plugin_id)
            if row is None:
                raise _not_found(plugin_id)
            if row.status == "active" and _already_running(core, row):
                raise InvalidStateError(
                    f"Plugin '{plugin_id}' is already active",
                    {"plugin_id": plugin_id, "status": row.status},
                )
            if not row.loadable:
                raise InvalidStateError(
                    f"Plugin '{plugin_id}' cannot be activated until it is registered again "
                    f"with a loadable class: {row.status_reason}",
                    {"plugin_id": plugin_id, "status": row.status, "reason": row.status_reason},
                )
            _refuse_changed_code(row)
            merged, _changed = merged_configuration(core, row, configuration)
            _validate_configuration(core, row, merged)
            _check_activation(core, row, repo.all())
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
            before = {k: getattr(row, k) for k in _DESIRED_FIELDS}
            sealed = core.box.seal(merged, config_schema.secret_fields(row.configuration_schema))
            activated = _now()
            row.status = "active"
            row.status_reason = None
            row.configuration = sealed
            row.running_configuration = sealed
            row.config_version = (row.config_version or 0) + 1
            row.generation = (row.generation or 0) + 1
            row.activated_at = activated
            row.auto_start = auto_start
            singleton = row.type in core.settings.singleton_type_set
            row.singleton_slot = row.type if singleton else None
            try:
                session.flush()
            except IntegrityError:
                # the unique index on singleton_slot: only if a change bypassed the guard
                raise _singleton_conflict(core, row) from None
            core.db.notify(session, plugin_id)
            desired = replica.desired_of(core, row)

        try:
            started = core.reconciler.converge(desired, answering=True)
        except PluginHealthCheckFailedError as exc:
            _roll_back(core, plugin_id, desired.generation, before, exc.message)
            raise
        health = _first_health(started, auto_start)
        if health["last_check"] is not None:
            with core.db.transaction() as session:
                PluginRepository(session).set_health(
                    plugin_id,
                    status=health["status"],
                    last_check=health["last_check"],
                    response_time_ms=health["response_time_ms"],
                    message=health["message"],
                )
    log.info("activated plugin %s", plugin_id)
    return {
        "id": plugin_id,
        "status": "active",
        "activation_time": activated,
        "health_check": health,
        "started": auto_start,
        "dry_run": False,
    }


def _refuse_changed_code(row: PluginRow) -> None:
    """The plugin's files as pinned at registration, or PLUGIN_CODE_CHANGED naming what
    differs (the files are hashed by reading them: nothing is imported)."""
    diff = integrity.changes(row.code_digest)
    if not diff:
        return
    raise PluginCodeChangedError(
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


def _first_health(started: Any, auto_start: bool) -> dict[str, Any]:
    if not auto_start or started is None or started.healthy is None:
        return {
            "status": "not_started",
            "response_time_ms": None,
            "last_check": None,
            "message": "auto_start is false: the first invocation starts the plugin",
        }
    return {
        "status": "healthy",
        "response_time_ms": started.response_time_ms,
        "last_check": started.checked_at,
        # written by the plugin: it may quote its own secret
        "message": REDACTOR.redact(started.message) if started.message else started.message,
    }


def _roll_back(
    core: Core, plugin_id: str, generation: int, before: dict[str, Any], reason: str
) -> None:
    """Undo an activation whose first start failed: the desired state as it was, unless a
    later change overtook it (then that change stands), and the reason kept (masked: the
    plugin's own words may quote its secret)."""
    reason = REDACTOR.redact(reason)
    with core.db.state_change() as session:
        row = PluginRepository(session).get(plugin_id)
        if row is None:
            return
        if row.generation == generation:
            for key, value in before.items():
                setattr(row, key, value)
            # a new generation: replicas that started it meanwhile stop it
            row.generation = generation + 1
        row.status_reason = f"activation failed at {_now().isoformat()}: {reason}"
        row.health_status = "unhealthy"
        row.health_last_check = _now()
        row.health_message = reason
        core.db.notify(session, plugin_id)
    core.reconciler.wake()


def _deactivate_plugin(
    core: Core, plugin_id: str, *, force: bool = False, graceful_timeout: float = 30
) -> dict[str, Any]:
    """Write the desired state (inactive), then stop this replica's instance; the others stop
    theirs when they hear of it."""
    with core.plugin_lock(plugin_id):
        with core.db.state_change() as session:
            row = PluginRepository(session).get(plugin_id)
            if row is None:
                raise _not_found(plugin_id)
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
            when = _now()
            row.status = "inactive"
            row.status_reason = None
            row.singleton_slot = None
            row.deactivated_at = when
            row.health_status = "unknown"
            core.db.notify(session, plugin_id)
        pending = core.reconciler.retire(plugin_id, graceful_timeout=graceful_timeout, force=force)
    log.info("deactivated plugin %s (pending operations: %d)", plugin_id, pending)
    return {
        "id": plugin_id,
        "status": "inactive",
        "deactivation_time": when,
        "pending_operations": pending,
    }


def _update_configuration(
    core: Core,
    plugin_id: str,
    configuration: dict[str, Any],
    *,
    allow_restart: bool,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Store the new configuration and the configuration every replica runs. A change of
    `hot_reload: false` fields (compared with what runs) is applied only when the request
    allows a restart (every replica restarts the plugin); otherwise it is stored and stays
    pending, and asking again with `restart_required: true` applies it, even when the stored
    value no longer changes. Other changes reach the instances through configure()."""
    with core.plugin_lock(plugin_id):
        with core.db.state_change() as session:
            row = PluginRepository(session).get(plugin_id)
            if row is None:
                raise _not_found(plugin_id)
            merged, changed = merged_configuration(core, row, configuration)
            full = _validate_configuration(core, row, merged)
            schema = row.configuration_schema or {}
            active = row.status == "active"
            running = effective_configuration(
                core, row, core.box.open(row.running_configuration or {})
            )
            cold = sorted(
                k
                for k in config_schema.cold_fields(schema)
                if active and running.get(k) != full.get(k)
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
            before = {k: getattr(row, k) for k in _DESIRED_FIELDS}
            sealed = core.box.seal(merged, config_schema.secret_fields(schema))
            if changed:
                row.configuration = sealed
            restart = bool(cold) and allow_restart
            if not cold or restart:
                if running != full:
                    row.running_configuration = sealed
                    row.config_version = (row.config_version or 0) + 1
                if restart:
                    row.generation = (row.generation or 0) + 1
                result["effective_time"] = _now()
            else:
                result["pending_restart"] = cold
            if not (changed or restart or running != full):
                return result
            core.db.notify(session, plugin_id)
            desired = replica.desired_of(core, row) if active else None
        if desired is not None and (not cold or restart):
            try:
                core.reconciler.converge(desired, answering=True)
            except MLXError:
                _restore_configuration(core, plugin_id, before)
                raise
            if restart:
                result["restarted"] = True
                result["configuration_updated"] = True
    if changed or result["restarted"]:
        log.info(
            "configuration of plugin %s updated: %s%s",
            plugin_id,
            ", ".join(sorted(changed)) or "(no field changed)",
            " (restarted)" if result["restarted"] else "",
        )
    return result


def _restore_configuration(core: Core, plugin_id: str, before: dict[str, Any]) -> None:
    """A configuration whose restart failed: every replica goes back to the one before."""
    with core.db.state_change() as session:
        row = PluginRepository(session).get(plugin_id)
        if row is None:
            return
        row.configuration = before["configuration"]
        row.running_configuration = before["running_configuration"]
        row.config_version = (row.config_version or 0) + 1
        row.generation = (row.generation or 0) + 1
        core.db.notify(session, plugin_id)
        desired = replica.desired_of(core, row) if row.status == "active" else None
    if desired is not None:
        try:
            core.reconciler.converge(desired, answering=True)
        except MLXError as exc:
            log.warning("plugin %s: the previous configuration failed too: %s", plugin_id, exc)
            core.reconciler.wake()


def _not_found(plugin_id: str) -> PluginNotFoundError:
    return PluginNotFoundError(f"Plugin '{plugin_id}' does not exist", {"plugin_id": plugin_id})


# ---------------------------------------------------------------- audited entry points


def activate_plugin(
    core: Core,
    plugin_id: str,
    configuration: dict[str, Any],
    *,
    auto_start: bool = True,
    dry_run: bool = False,
    origin: audit.Origin | None = None,
) -> dict[str, Any]:
    with audit.audited(core, origin, "activate", plugin_id, skip=dry_run) as event:
        # the names of the fields sent, never their values (they may be secrets)
        event.details.update(configuration_fields=sorted(configuration), auto_start=auto_start)
        return _activate_plugin(
            core, plugin_id, configuration, auto_start=auto_start, dry_run=dry_run
        )


def deactivate_plugin(
    core: Core,
    plugin_id: str,
    *,
    force: bool = False,
    graceful_timeout: float = 30,
    origin: audit.Origin | None = None,
) -> dict[str, Any]:
    with audit.audited(core, origin, "deactivate", plugin_id) as event:
        event.details["force"] = force
        result = _deactivate_plugin(core, plugin_id, force=force, graceful_timeout=graceful_timeout)
        event.details["pending_operations"] = result["pending_operations"]
        return result


def update_configuration(
    core: Core,
    plugin_id: str,
    configuration: dict[str, Any],
    *,
    allow_restart: bool,
    dry_run: bool = False,
    origin: audit.Origin | None = None,
) -> dict[str, Any]:
    with audit.audited(core, origin, "configure", plugin_id, skip=dry_run) as event:
        event.details.update(
            configuration_fields=sorted(configuration), restart_required=allow_restart
        )
        result = _update_configuration(
            core, plugin_id, configuration, allow_restart=allow_restart, dry_run=dry_run
        )
        event.details.update(
            updated_fields=result["updated_fields"],
            restarted=result["restarted"],
            pending_restart=result.get("pending_restart", []),
        )
        return result


def _replica_views(core: Core, plugin_id: str) -> list[dict[str, Any]]:
    return [
        {
            "node_id": v.node_id,
            "state": v.state,
            "pid": v.pid,
            "health_status": v.health_status,
            "message": v.health_message,
            "last_check": v.health_last_check,
            "config_version": v.config_version,
            "generation": v.generation,
            "last_error": v.last_error,
            "restarts": v.restarts,
        }
        for v in replica.observed(core, [plugin_id])[plugin_id]
    ]


def plugin_health(core: Core, plugin_id: str) -> dict[str, Any]:
    """Health as this replica sees it (its own instance, checked now), with every live
    replica's view in `replicas`."""
    row = get_row(core, plugin_id)
    instance = core.host.get(plugin_id)
    with core.db.read() as session:
        registered = PluginRepository(session).all()
    meta = row.plugin_metadata or {}
    unmet = rules.unmet_requirements(
        rules.facts_of_row(row), [rules.facts_of_row(r) for r in registered], need_active=True
    )
    missing = [m.requirement for m in unmet] + rules.missing_python_requirements(meta)
    deps = {"status": "fail" if missing else "pass", "missing_dependencies": missing}
    now = _now()
    replicas = _replica_views(core, plugin_id)
    if instance is None or row.status != "active":
        mine = next((v for v in replicas if v["node_id"] == core.node_id), None)
        if row.status == "active":
            reason = (mine or {}).get("last_error") or "it is not running on this replica yet"
            status, message = "unhealthy", f"plugin is not running on this replica: {reason}"
        else:
            status = "inactive" if row.status != "error" else "unhealthy"
            message = f"plugin is not running (status: {row.status})"
        return {
            "plugin_id": plugin_id,
            "status": status,
            "node_id": core.node_id,
            "checks": {
                "connectivity": {
                    "status": "skip",
                    "response_time_ms": None,
                    "last_check": row.health_last_check,
                    "message": message,
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
            "replicas": replicas,
        }
    if instance.started:
        outcome = instance.health(core.settings.health_timeout)
        connectivity = {
            "status": "pass" if outcome.healthy else "fail",
            "response_time_ms": round(outcome.response_time_ms, 3),
            "last_check": now,
            "message": REDACTOR.redact(outcome.message) if outcome.message else outcome.message,
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
        replica.store_health(
            core,
            {
                plugin_id: {
                    "status": status,
                    "last_check": now,
                    "response_time_ms": connectivity["response_time_ms"],
                    "message": connectivity["message"],
                }
            },
        )
        for view in replicas:
            if view["node_id"] == core.node_id:
                view.update(health_status=status, message=connectivity["message"], last_check=now)
    uptime = time.time() - instance.started_at if instance.started_at else 0.0
    ok = instance.total - instance.failed
    return {
        "plugin_id": plugin_id,
        "status": status,
        "node_id": core.node_id,
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
        "replicas": replicas,
    }


def invoke_plugin(
    core: Core,
    plugin_id: str,
    operation: str,
    arguments: dict[str, Any],
    timeout: float | None,
    *,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Run an operation on this replica's instance (every replica runs every active plugin:
    nothing is forwarded). An instance this replica has not started yet (a change it has not
    heard of) is started now. `deadline` (time.monotonic()) is when the request's `timeout`
    ends, counted from its arrival: the time it waited for a free call slot, or for the
    instance to start, is not given again."""
    from mlx_platform.errors import OperationTimeoutError

    row = get_row(core, plugin_id)
    if row.status != "active":
        raise InvalidStateError(
            f"Plugin '{plugin_id}' is not active (status: {row.status}): activate it first",
            {"plugin_id": plugin_id, "status": row.status},
        )
    instance = core.host.get(plugin_id)
    if instance is None or instance.generation != row.generation:
        core.reconciler.converge(replica.desired_of(core, row))
        instance = core.host.get(plugin_id)
    if instance is None:
        views = replica.observed(core, [plugin_id])[plugin_id]
        mine = next((v for v in views if v.node_id == core.node_id), None)
        reason = (mine.last_error if mine else None) or "it is not running on this replica"
        raise InvalidStateError(
            f"Plugin '{plugin_id}' is active but not running on this replica: {reason}",
            {"plugin_id": plugin_id, "status": "error", "node_id": core.node_id, "reason": reason},
        )
    if not instance.started:
        try:
            instance.start(core.settings.health_timeout * 6)
        except MLXError as exc:
            raise PluginHealthCheckFailedError(
                f"Plugin '{row.name}' failed to start: {exc.message}"
            ) from exc
        core.reconciler.started(instance)
    left = timeout
    if deadline is not None and timeout is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise OperationTimeoutError(
                f"operation '{operation}' did not start within its {timeout:g} s timeout: the "
                "plugin's call slots were busy (MLX_CALLS_PER_PLUGIN) or it was starting",
                {"operation": operation, "timeout": timeout},
            )
    t0 = time.perf_counter()
    ok = False
    try:
        result = instance.invoke(operation, arguments, left)
        ok = True
    except OperationTimeoutError:
        if timeout is None:
            raise
        raise OperationTimeoutError(
            f"operation '{operation}' did not finish within its {timeout:g} s timeout",
            {"operation": operation, "timeout": timeout},
        ) from None
    finally:
        elapsed = (time.perf_counter() - t0) * 1000
        core.metrics.record(plugin_id, elapsed, ok)
    return {
        "plugin_id": plugin_id,
        "operation": operation,
        "result": redact_value(result),
        "duration_ms": round(elapsed, 3),
    }
