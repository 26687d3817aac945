"""A plugin once active: deactivating it, checking its health, calling its operations.

Deactivation writes the desired state (inactive), then this replica stops its instance
(waiting for calls in flight, unless forced); the others stop theirs when they hear of it.
Activation is core/activation.py, configuration changes core/configuration.py.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlx_platform.composition import rules
from mlx_platform.core import audit, refusals, replica
from mlx_platform.core.context import Core
from mlx_platform.core.registry import get_row
from mlx_platform.core.secrets import REDACTOR, redact_value
from mlx_platform.errors import MLXError, OperationTimeoutError
from mlx_platform.runtime.instance import RunningInstance
from mlx_platform.storage import PluginInstanceRow, PluginRow
from mlx_platform.storage.repositories import PluginRepository
from mlx_platform.wire import (
    ConnectivityCheck,
    DeactivateResult,
    DependenciesCheck,
    HealthChecks,
    HealthMetrics,
    HealthReport,
    ReplicaView,
    ResourceUsageCheck,
)

log = logging.getLogger("mlx_platform.lifecycle")


def _deactivate_plugin(
    core: Core, plugin_id: str, *, force: bool = False, graceful_timeout: float = 30
) -> DeactivateResult:
    """Write the desired state (inactive), then stop this replica's instance; the others stop
    theirs when they hear of it."""
    with core.plugin_lock(plugin_id):
        with core.changing(plugin_id) as (repo, row):
            if row.status not in ("active", "error"):
                raise refusals.not_active(row)
            if row.status == "error" and not row.loadable:
                raise refusals.never_activated(row)
            when = datetime.now(UTC)
            row.status = "inactive"
            row.status_reason = None
            row.singleton_slot = None
            row.deactivated_at = when
            row.health_status = "unknown"
            core.db.notify(repo.session, plugin_id)
        pending = core.reconciler.retire(plugin_id, graceful_timeout=graceful_timeout, force=force)
    log.info("deactivated plugin %s (pending operations: %d)", plugin_id, pending)
    return DeactivateResult(
        id=plugin_id, status="inactive", deactivation_time=when, pending_operations=pending
    )


def deactivate_plugin(
    core: Core,
    plugin_id: str,
    *,
    force: bool = False,
    graceful_timeout: float = 30,
    origin: audit.Origin | None = None,
) -> DeactivateResult:
    with audit.audited(core, origin, "deactivate", plugin_id) as event:
        event.details["force"] = force
        result = _deactivate_plugin(core, plugin_id, force=force, graceful_timeout=graceful_timeout)
        event.details["pending_operations"] = result.pending_operations
        return result


# ---------------------------------------------------------------- health


def _dependencies_check(core: Core, row: PluginRow) -> DependenciesCheck:
    """Fails while a requirement has no active plugin meeting it, or a Python package the
    plugin declares is missing."""
    me = rules.facts_of_row(row)
    with core.db.read() as session:  # the active plugins and the versions of what it requires
        registered = PluginRepository(session).active_or_named(me.required_keys)
    unmet = rules.unmet_requirements(
        me, [rules.facts_of_row(r) for r in registered], need_active=True
    )
    meta = row.plugin_metadata or {}
    missing = [m.requirement for m in unmet] + rules.missing_python_requirements(meta)
    return DependenciesCheck(status="fail" if missing else "pass", missing_dependencies=missing)


@dataclass(frozen=True, slots=True)
class _Fresh:
    """This replica's health check, made now (it replaces its stored view)."""

    status: str
    message: str | None
    last_check: datetime


def _replica_views(
    core: Core, observed: list[PluginInstanceRow], fresh: _Fresh | None = None
) -> list[ReplicaView]:
    out: list[ReplicaView] = []
    for v in observed:
        status, message, last_check = v.health_status, v.health_message, v.health_last_check
        if fresh is not None and v.node_id == core.node_id:
            status, message, last_check = fresh.status, fresh.message, fresh.last_check
        out.append(
            ReplicaView(
                node_id=v.node_id,
                state=v.state,
                pid=v.pid,
                health_status=status,
                message=message,
                last_check=last_check,
                config_version=v.config_version,
                generation=v.generation,
                last_error=v.last_error,
                restarts=v.restarts,
            )
        )
    return out


def _not_running_report(
    core: Core, row: PluginRow, deps: DependenciesCheck, observed: list[PluginInstanceRow]
) -> HealthReport:
    """No instance here (or the plugin is not active): nothing to check, and why."""
    if row.status == "active":
        mine = next((v for v in observed if v.node_id == core.node_id), None)
        reason = (mine.last_error if mine else None) or "it is not running on this replica yet"
        status, message = "unhealthy", f"plugin is not running on this replica: {reason}"
    else:
        status = "inactive" if row.status != "error" else "unhealthy"
        message = f"plugin is not running (status: {row.status})"
    return HealthReport(
        plugin_id=row.id,
        status=status,
        node_id=core.node_id,
        checks=HealthChecks(
            connectivity=ConnectivityCheck(
                status="skip",
                response_time_ms=None,
                last_check=row.health_last_check,
                message=message,
            ),
            resource_usage=ResourceUsageCheck(
                status="skip", memory_usage_mb=None, cpu_usage_percent=None
            ),
            dependencies=deps,
        ),
        metrics=HealthMetrics(
            uptime_seconds=0,
            total_requests=0,
            successful_requests=0,
            failed_requests=0,
            avg_response_time_ms=0,
        ),
        replicas=_replica_views(core, observed),
    )


def _connectivity(
    core: Core, instance: RunningInstance, now: datetime
) -> tuple[ConnectivityCheck, bool]:
    """The plugin's own health check, run now (skipped before its first start); and whether
    it ran."""
    if not instance.started:
        skipped = ConnectivityCheck(
            status="skip",
            response_time_ms=None,
            last_check=None,
            message="not started yet (auto_start is false)",
        )
        return skipped, False
    outcome = instance.health(core.settings.health_timeout)
    checked = ConnectivityCheck(
        status="pass" if outcome.healthy else "fail",
        response_time_ms=round(outcome.response_time_ms, 3),
        last_check=now,
        # written by the plugin: it may quote its own secret
        message=REDACTOR.redact(outcome.message) if outcome.message else outcome.message,
    )
    return checked, True


def _usage(instance: RunningInstance) -> ResourceUsageCheck:
    mem, cpu = instance.usage()
    # beyond the model's fields (kept, as every answer keeps unknown fields): whose usage
    scope: dict[str, Any] = {
        "scope": "service_process" if instance.isolation == "inprocess" else "worker_process"
    }
    return ResourceUsageCheck(
        status="pass", memory_usage_mb=round(mem, 1), cpu_usage_percent=round(cpu, 1), **scope
    )


def _call_figures(instance: RunningInstance) -> HealthMetrics:
    uptime = time.time() - instance.started_at if instance.started_at else 0.0
    total = instance.total
    return HealthMetrics(
        uptime_seconds=round(uptime, 3),
        total_requests=total,
        successful_requests=total - instance.failed,
        failed_requests=instance.failed,
        avg_response_time_ms=round(instance.sum_ms / total, 3) if total else 0,
    )


def plugin_health(core: Core, plugin_id: str) -> HealthReport:
    """Health as this replica sees it (its own instance, checked now), with every live
    replica's view in `replicas`."""
    row = get_row(core, plugin_id)
    instance = core.host.get(plugin_id)
    deps = _dependencies_check(core, row)
    now = datetime.now(UTC)
    observed = replica.observed(core, [plugin_id])[plugin_id]
    if instance is None or row.status != "active":
        return _not_running_report(core, row, deps, observed)
    connectivity, checked = _connectivity(core, instance, now)
    usage = _usage(instance)
    if connectivity.status == "fail":
        status = "unhealthy"
    else:
        status = "degraded" if deps.status == "fail" else "healthy"
    fresh = None
    if checked:
        fresh = _Fresh(status, connectivity.message, now)
        replica.store_health(
            core,
            {
                plugin_id: {
                    "status": status,
                    "last_check": now,
                    "response_time_ms": connectivity.response_time_ms,
                    "message": connectivity.message,
                }
            },
        )
    return HealthReport(
        plugin_id=plugin_id,
        status=status,
        node_id=core.node_id,
        checks=HealthChecks(connectivity=connectivity, resource_usage=usage, dependencies=deps),
        metrics=_call_figures(instance),
        replicas=_replica_views(core, observed, fresh),
    )


# ---------------------------------------------------------------- calls


@dataclass(frozen=True, slots=True)
class Invocation:
    """An operation's answer. The route encodes it (orjson, on the plugin's own thread),
    so a large result is never walked in Python."""

    plugin_id: str
    operation: str
    result: object
    duration_ms: float


def call_instance(core: Core, row: PluginRow) -> RunningInstance:
    """This replica's instance of the active `row`, started now if it was not yet (a change
    this replica had not heard of, or auto_start false)."""
    instance = core.host.get(row.id)
    if instance is None or instance.generation != row.generation:
        # `row` may be older than a deactivation that has stopped the instance meanwhile:
        # the reconciler decides from the plugin as stored now, and never starts it again.
        if not core.reconciler.converge_for_call(row.id):
            fresh = get_row(core, row.id)
            if fresh.status != "active":
                raise refusals.not_active_for_calls(fresh)
        instance = core.host.get(row.id)
    if instance is None:
        views = replica.observed(core, [row.id])[row.id]
        mine = next((v for v in views if v.node_id == core.node_id), None)
        reason = (mine.last_error if mine else None) or "it is not running on this replica"
        raise refusals.not_running_here(row.id, core.node_id, reason)
    if not instance.started:
        try:
            instance.start(core.settings.health_timeout * 6)
        except MLXError as exc:
            raise refusals.failed_to_start(row, exc) from exc
        core.reconciler.started(instance)
    return instance


def ready_instance(core: Core, plugin_id: str) -> RunningInstance | None:
    """This replica's started instance of an active plugin when that is known without the
    database: the plugin's row as the last invocation read it, while the database generation
    has not changed since (every write transaction of this replica and every change
    notification from another one changes it), and an instance of that row's generation.
    None: `invoke_plugin` must decide (read the row, start the instance, or refuse)."""
    admitted = core.admitted.get(plugin_id)
    if admitted is None or admitted[0] != core.db.generation:
        return None
    instance = core.host.get(plugin_id)
    if instance is None or not instance.started or instance.generation != admitted[1].generation:
        return None
    return instance


def call_target(core: Core, plugin_id: str) -> RunningInstance:
    """The instance a call of `plugin_id` runs on: the plugin must be active; an instance this
    replica has not started yet (a change it has not heard of) is started now. Remembered
    for `ready_instance` while the database does not change."""
    generation = core.db.generation  # before the row is read
    row = get_row(core, plugin_id)
    if row.status != "active":
        core.admitted.pop(plugin_id, None)
        raise refusals.not_active_for_calls(row)
    instance = call_instance(core, row)
    core.admitted[plugin_id] = (generation, row)
    return instance


def answer_of(plugin_id: str, operation: str, result: Any, elapsed_ms: float) -> Invocation:
    """The answer of a call that ran: its result with every known secret masked."""
    return Invocation(plugin_id, operation, redact_value(result), round(elapsed_ms, 3))


def invoke_plugin(
    core: Core,
    plugin_id: str,
    operation: str,
    arguments: dict[str, Any],
    timeout: float | None,
    *,
    deadline: float | None = None,
) -> Invocation:
    """Run an operation on this replica's instance (every replica runs every active plugin:
    nothing is forwarded). An instance this replica has not started yet (a change it has not
    heard of) is started now. `deadline` (time.monotonic()) is when the request's `timeout`
    ends, counted from its arrival: the time it waited for a free call slot, or for the
    instance to start, is not given again."""
    instance = call_target(core, plugin_id)
    left = timeout
    if deadline is not None and timeout is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise refusals.call_did_not_start(operation, timeout)
    t0 = time.perf_counter()
    ok = False
    try:
        result = instance.invoke(operation, arguments, left)
        ok = True
    except OperationTimeoutError:
        if timeout is None:
            raise
        raise refusals.call_timed_out(operation, timeout) from None
    finally:
        elapsed = (time.perf_counter() - t0) * 1000
        core.metrics.record(plugin_id, elapsed, ok)
    return answer_of(plugin_id, operation, result, elapsed)
