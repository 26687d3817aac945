"""Activating a plugin: the rules (state, code, configuration, platform, conflicts,
dependencies, resources), the new desired state, and this replica's first start.

Each change checks the rules and writes the new desired state in one transaction under the
state-change guard (`Database.state_change`), so the rules hold whatever the concurrency, on
every replica; then this replica brings its own instance to that state (the runtime's
reconciler) and answers. The other replicas hear of the change (NOTIFY, or their next poll)
and follow.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mlx_platform.composition import rules
from mlx_platform.composition.resources import resource_shortfall
from mlx_platform.core import audit, config_schema, integrity, refusals, replica
from mlx_platform.core.configuration import merged_configuration, validated_configuration
from mlx_platform.core.context import Core
from mlx_platform.core.secrets import REDACTOR
from mlx_platform.errors import PluginConflictError, PluginHealthCheckFailedError
from mlx_platform.runtime.reconciler import Desired, Started
from mlx_platform.storage import PluginRow
from mlx_platform.storage.repositories import PluginRepository
from mlx_platform.wire import ActivateResult, HealthCheckSummary

log = logging.getLogger("mlx_platform.lifecycle")

# What an activation changes in the desired state (and a failed first start puts back).
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


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- the rules


def _check_activation(core: Core, row: PluginRow, repo: PluginRepository) -> None:
    """Platform, conflicts, dependencies and resources of `row` against the active plugins.

    The rules are the composition engine's (``rules.conflicts_with_active`` against every
    active plugin, ``rules.unmet_requirements`` for ``requires``), over the active plugins
    and the versions of those `row` requires (not the whole catalogue), read through `repo`
    inside the state-change transaction, so no concurrent change can slip between this
    check and the write (on any replica). A requirement counts as met only by an active
    plugin (activation never starts other plugins); each missing one says which registered
    versions would satisfy it. Resources: this replica's capacity (every replica checks its
    own when it starts the plugin). The singleton rule is also a database constraint
    (``singleton_slot``).
    """
    cannot_run = rules.platform_problems(row.plugin_metadata or {})
    if cannot_run:
        raise refusals.incompatible_platform(row, cannot_run)
    me = rules.facts_of_row(row)
    registered = repo.active_or_named(me.required_keys)
    active = [r for r in registered if r.status == "active" and r.id != row.id]
    conflicts = rules.conflicts_with_active(
        me, [rules.facts_of_row(r) for r in active], core.settings.singleton_type_set
    )
    if conflicts:
        raise refusals.conflict(conflicts)
    others = [rules.facts_of_row(r) for r in registered if r.id != row.id]
    missing = rules.unmet_requirements(me, others, need_active=True)
    if missing:
        raise refusals.dependencies_missing(row, missing)
    claimed = [a.requirements for a in active]
    shortfall = resource_shortfall(core.capacity(), claimed, row.requirements)
    if shortfall:
        raise refusals.insufficient_resources(row, shortfall)


def _already_running(core: Core, row: PluginRow) -> bool:
    """Desired active, and no live replica reports it in error: activating again is refused.
    (While a replica reports `error`, for example after it gave up restarting, an activation
    is the operator's retry: every replica starts a fresh instance.)"""
    views = replica.observed(core, [row.id])[row.id]
    return not any(v.state == "error" for v in views)


def _refuse_changed_code(row: PluginRow) -> None:
    """The plugin's files as pinned at registration, or PLUGIN_CODE_CHANGED naming what
    differs (the files are hashed by reading them: nothing is imported)."""
    diff = integrity.changes(row.code_digest)
    if diff:
        raise refusals.code_changed(row, diff)


def _activatable(
    core: Core, row: PluginRow, repo: PluginRepository, configuration: dict[str, Any]
) -> dict[str, Any]:
    """Every rule of activation, in order; the configuration to store (in clear) when all
    hold, else the refusal of the first that does not."""
    if row.status == "active" and _already_running(core, row):
        raise refusals.already_active(row)
    if not row.loadable:
        raise refusals.not_loadable(row)
    _refuse_changed_code(row)
    merged, _changed = merged_configuration(core, row, configuration)
    validated_configuration(core, row, merged)
    _check_activation(core, row, repo)
    return merged


# ---------------------------------------------------------------- the change


def _singleton_conflict(core: Core, row: PluginRow) -> PluginConflictError:
    with core.db.read() as session:
        winner = PluginRepository(session).active_singleton(row.type)
    conflict = rules.Conflict.singleton(
        row.name,
        row.type,
        winner.name if winner else "another plugin",
        winner.id if winner else None,
    )
    return refusals.conflict([conflict])


def _write_active(
    core: Core, session: Session, row: PluginRow, merged: dict[str, Any], auto_start: bool
) -> datetime:
    """The desired state: active, with the configuration (sealed), a new generation. Returns
    the activation time."""
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
    core.db.notify(session, row.id)
    return activated


def _start_here(
    core: Core, desired: Desired, before: dict[str, Any], auto_start: bool
) -> HealthCheckSummary:
    """Start this replica's instance and store its first health check; a start that fails
    rolls the desired state back (and the error says why)."""
    try:
        started = core.reconciler.converge(desired, answering=True)
    except PluginHealthCheckFailedError as exc:
        _roll_back(core, desired.plugin_id, desired.generation, before, exc.message)
        raise
    health = _first_health(started, auto_start)
    if health.last_check is not None:
        with core.db.transaction() as session:
            PluginRepository(session).set_health(
                desired.plugin_id,
                status=health.status,
                last_check=health.last_check,
                response_time_ms=health.response_time_ms,
                message=health.message,
            )
    return health


def _first_health(started: Started | None, auto_start: bool) -> HealthCheckSummary:
    if not auto_start or started is None or started.healthy is None:
        return HealthCheckSummary(
            status="not_started",
            response_time_ms=None,
            last_check=None,
            message="auto_start is false: the first invocation starts the plugin",
        )
    return HealthCheckSummary(
        status="healthy",
        response_time_ms=started.response_time_ms,
        last_check=started.checked_at,
        # written by the plugin: it may quote its own secret
        message=REDACTOR.redact(started.message) if started.message else started.message,
    )


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


def _activate_plugin(
    core: Core,
    plugin_id: str,
    configuration: dict[str, Any],
    *,
    auto_start: bool = True,
    dry_run: bool = False,
) -> ActivateResult:
    """Check the rules and write the desired state (active, with the configuration) in one
    guarded transaction; then start this replica's instance and wait for its first health
    check. A failure there rolls the desired state back and answers why."""
    with core.plugin_lock(plugin_id):
        with core.changing(plugin_id) as (repo, row):
            merged = _activatable(core, row, repo, configuration)
            if dry_run:
                # beyond the model's fields (kept, as every answer keeps unknown fields)
                preview: dict[str, Any] = {"would_become": "active"}
                return ActivateResult(
                    id=plugin_id,
                    status=row.status,
                    activation_time=None,
                    health_check=None,
                    started=False,
                    dry_run=True,
                    **preview,
                )
            before = {k: getattr(row, k) for k in _DESIRED_FIELDS}
            activated = _write_active(core, repo.session, row, merged, auto_start)
            desired = replica.desired_of(core, row)
        health = _start_here(core, desired, before, auto_start)
    log.info("activated plugin %s", plugin_id)
    return ActivateResult(
        id=plugin_id,
        status="active",
        activation_time=activated,
        health_check=health,
        started=auto_start,
        dry_run=False,
    )


def activate_plugin(
    core: Core,
    plugin_id: str,
    configuration: dict[str, Any],
    *,
    auto_start: bool = True,
    dry_run: bool = False,
    origin: audit.Origin | None = None,
) -> ActivateResult:
    with audit.audited(core, origin, "activate", plugin_id, skip=dry_run) as event:
        # the names of the fields sent, never their values (they may be secrets)
        event.details.update(configuration_fields=sorted(configuration), auto_start=auto_start)
        return _activate_plugin(
            core, plugin_id, configuration, auto_start=auto_start, dry_run=dry_run
        )
