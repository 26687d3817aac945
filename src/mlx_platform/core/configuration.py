"""A plugin's configuration: merging what a request sends into what is stored, checking it
against the schema, and changing it (hot, or with a restart when a `hot_reload: false` field
changes and the request allows it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlx_platform.core import audit, config_schema, refusals, replica
from mlx_platform.core.context import Core
from mlx_platform.core.secrets import REDACTOR
from mlx_platform.errors import MLXError
from mlx_platform.runtime.reconciler import Desired
from mlx_platform.storage import PluginRow
from mlx_platform.storage.repositories import PluginRepository
from mlx_platform.wire import SECRET_MASK

log = logging.getLogger("mlx_platform.lifecycle")

_MISSING = object()


def _now() -> datetime:
    return datetime.now(UTC)


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


def effective_configuration(core: Core, row: PluginRow, config: dict[str, Any]) -> dict[str, Any]:
    """What the plugin instance receives: `config` (in clear) with the schema's defaults."""
    return config_schema.apply_defaults(
        core.box.open_schema(row.configuration_schema or {}), config
    )


def validated_configuration(core: Core, row: PluginRow, config: dict[str, Any]) -> dict[str, Any]:
    """`config` with the schema's defaults, or INVALID_CONFIGURATION naming each problem."""
    full = effective_configuration(core, row, config)
    problems = config_schema.validate_configuration(row.configuration_schema or {}, full)
    if problems:
        raise refusals.invalid_configuration(row, problems)
    return full


def pending_fields(core: Core, row: PluginRow) -> list[str]:
    """The fields of an active plugin whose stored value is not the one its instances run
    (a change of a `hot_reload: false` field made without allowing the restart, and whatever
    was changed with it): the next allowed restart applies them (a configuration update with
    `restart_required`, or deactivate then activate). Empty for a plugin that is not active."""
    if row.status != "active":
        return []
    return _differing(
        effective_configuration(core, row, core.box.open(row.configuration or {})),
        effective_configuration(core, row, core.box.open(row.running_configuration or {})),
    )


def _differing(one: dict[str, Any], other: dict[str, Any]) -> list[str]:
    return sorted(
        k for k in one.keys() | other.keys() if one.get(k, _MISSING) != other.get(k, _MISSING)
    )


# ---------------------------------------------------------------- changing it


@dataclass(frozen=True, slots=True)
class ConfigurationChange:
    """What a configuration update did, or (dry run) would do.

    `updated_fields`: the fields whose value changed, stored or (now applied) running: a
    change left pending by an earlier update counts when this one applies it.
    `restart_fields`: the changed `hot_reload: false` fields (empty: none); `pending_restart`:
    the fields stored but not applied, for want of `restart_required` (empty: none).
    """

    plugin_id: str
    configuration_updated: bool
    restart_required: bool
    restarted: bool
    updated_fields: list[str]
    effective_time: datetime | None
    dry_run: bool
    restart_fields: list[str]
    pending_restart: list[str]


@dataclass(frozen=True, slots=True)
class _Plan:
    """The update decided under the guard: what to store, and what every replica runs."""

    merged: dict[str, Any]
    changed: list[str]
    cold: list[str]  # hot_reload false fields whose running value changes
    running_changes: bool  # what the instances run differs from the result
    active: bool
    differing: list[str]  # the fields whose running value changes (an active plugin)

    def restart(self, allow_restart: bool) -> bool:
        return bool(self.cold) and allow_restart

    def applies(self, allow_restart: bool) -> bool:
        """Whether the instances get the new configuration now (else it waits: pending)."""
        return not self.cold or allow_restart


def _plan(core: Core, row: PluginRow, configuration: dict[str, Any]) -> _Plan:
    merged, changed = merged_configuration(core, row, configuration)
    full = validated_configuration(core, row, merged)
    active = row.status == "active"
    running = effective_configuration(core, row, core.box.open(row.running_configuration or {}))
    cold = sorted(
        k
        for k in config_schema.cold_fields(row.configuration_schema or {})
        if active and running.get(k) != full.get(k)
    )
    return _Plan(
        merged, changed, cold, running != full, active, _differing(full, running) if active else []
    )


def _write(core: Core, row: PluginRow, plan: _Plan, allow_restart: bool) -> None:
    """The new desired state: the stored configuration; and, when it applies now, the one
    every replica runs (a restart: a new generation, which every replica restarts)."""
    sealed = core.box.seal(plan.merged, config_schema.secret_fields(row.configuration_schema))
    if plan.changed:
        row.configuration = sealed
    if plan.applies(allow_restart):
        if plan.running_changes:
            row.running_configuration = sealed
            row.config_version = (row.config_version or 0) + 1
        if plan.restart(allow_restart):
            row.generation = (row.generation or 0) + 1


def _update_configuration(
    core: Core,
    plugin_id: str,
    configuration: dict[str, Any],
    *,
    allow_restart: bool,
    dry_run: bool = False,
) -> ConfigurationChange:
    """Store the new configuration and the configuration every replica runs. A change of
    `hot_reload: false` fields (compared with what runs) is applied only when the request
    allows a restart (every replica restarts the plugin); otherwise it is stored and stays
    pending, and asking again with `restart_required: true` applies it, even when the stored
    value no longer changes. Other changes reach the instances through configure()."""
    with core.plugin_lock(plugin_id):
        desired: Desired | None = None
        with core.changing(plugin_id) as (repo, row):
            plan = _plan(core, row, configuration)
            restart = plan.restart(allow_restart)
            if dry_run:
                return _answer(plugin_id, plan, allow_restart, effective_time=None, dry_run=True)
            before = (row.configuration, row.running_configuration)
            _write(core, row, plan, allow_restart)
            effective = _now() if plan.applies(allow_restart) else None
            if plan.changed or restart or plan.running_changes:
                core.db.notify(repo.session, plugin_id)
                if plan.active and plan.applies(allow_restart):
                    desired = replica.desired_of(core, row)
        if desired is not None:
            try:
                core.reconciler.converge(desired, answering=True)
            except MLXError:
                _restore_configuration(core, plugin_id, before)
                raise
    restarted = desired is not None and restart
    change = _answer(plugin_id, plan, allow_restart, effective_time=effective, restarted=restarted)
    if plan.changed or change.restarted:
        log.info(
            "configuration of plugin %s updated: %s%s",
            plugin_id,
            ", ".join(sorted(plan.changed)) or "(no field changed)",
            " (restarted)" if change.restarted else "",
        )
    return change


def _answer(
    plugin_id: str,
    plan: _Plan,
    allow_restart: bool,
    *,
    effective_time: datetime | None,
    restarted: bool = False,
    dry_run: bool = False,
) -> ConfigurationChange:
    applies = plan.applies(allow_restart)
    updated = sorted(set(plan.changed) | set(plan.differing if applies else ()))
    return ConfigurationChange(
        plugin_id=plugin_id,
        configuration_updated=bool(updated) or restarted,
        restart_required=bool(plan.cold),
        restarted=restarted,
        updated_fields=updated,
        effective_time=effective_time,
        dry_run=dry_run,
        restart_fields=plan.cold,
        pending_restart=[] if applies else plan.differing,
    )


def _restore_configuration(
    core: Core, plugin_id: str, before: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    """A configuration whose restart failed: every replica goes back to the one before."""
    with core.db.state_change() as session:
        row = PluginRepository(session).get(plugin_id)
        if row is None:
            return
        row.configuration, row.running_configuration = before
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


def update_configuration(
    core: Core,
    plugin_id: str,
    configuration: dict[str, Any],
    *,
    allow_restart: bool,
    dry_run: bool = False,
    origin: audit.Origin | None = None,
) -> ConfigurationChange:
    with audit.audited(core, origin, "configure", plugin_id, skip=dry_run) as event:
        event.details.update(
            configuration_fields=sorted(configuration), restart_required=allow_restart
        )
        change = _update_configuration(
            core, plugin_id, configuration, allow_restart=allow_restart, dry_run=dry_run
        )
        event.details.update(
            updated_fields=change.updated_fields,
            restarted=change.restarted,
            pending_restart=change.pending_restart,
        )
        return change
