"""Registering, listing, reading and unregistering plugins."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

from pydantic import JsonValue
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.exc import IntegrityError

from mlx_platform.composition import rules
from mlx_platform.core import (
    audit,
    config_schema,
    configuration,
    definition,
    integrity,
    refusals,
    replica,
)
from mlx_platform.core.context import Core
from mlx_platform.core.metrics import recent_performance
from mlx_platform.core.paging import Page
from mlx_platform.reasons import plain_reason
from mlx_platform.runtime.probe import ProbeResult, probe_class
from mlx_platform.runtime.reconciler import RUNNING_STATES
from mlx_platform.storage import PluginRow
from mlx_platform.storage.listing import ListedRow
from mlx_platform.storage.repositories import PluginFilter, PluginRepository
from mlx_platform.wire import (
    DeleteResult,
    PerformanceMetrics,
    RegisterPluginRequest,
    RegisterResult,
    ValidationResults,
)

log = logging.getLogger("mlx_platform.registry")

SPEC_NEXT_STEPS = [
    "Activate plugin to make it available for use",
    "Configure plugin with required parameters",
    "Test plugin functionality",
]
PERFORMANCE_WINDOW = timedelta(hours=24)  # the plugin detail's performance_metrics


class Shown(NamedTuple):
    """The status the API shows for a plugin, and why (shown_status)."""

    status: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class ShownPlugin:
    """A stored plugin and the status the API shows for it."""

    row: PluginRow
    shown: Shown


@dataclass(frozen=True, slots=True)
class ListedPlugin:
    """A list item: the columns a list shows of a stored plugin, and the status the API shows
    for it."""

    row: ListedRow
    shown: Shown


@dataclass(frozen=True, slots=True)
class PluginDetails:
    """A stored plugin, its shown status and its measured figures of the last day."""

    plugin: ShownPlugin
    performance: PerformanceMetrics
    pending_restart: list[str]  # stored fields its instances do not run yet


@dataclass(frozen=True, slots=True)
class StoredState:
    """A plugin's stored (shared) status and last health check."""

    plugin_id: str
    status: str
    health_status: str


# ---------------------------------------------------------------- registration


def _check_definition(req: RegisterPluginRequest) -> None:
    """VALIDATION_ERROR naming every problem of the definition (core.definition: the same
    function `mlx plugins check` runs)."""
    problems = definition.definition_problems(req)
    if problems:
        raise refusals.invalid_definition(problems)


def _refuse_duplicate(
    req: RegisterPluginRequest, existing: PluginRow | None, digest: dict[str, Any] | None = None
) -> None:
    """Same name and version: refused, unless the stored one never loaded (it may be
    replaced), or its code changed on disk since it was registered (`digest`, the code now:
    registering again pins the new code; refused while the plugin is active)."""
    if existing is None or (existing.status == "error" and not existing.loadable):
        return
    if digest and not integrity.same_code(existing.code_digest, digest):
        if existing.status == "active":
            raise refusals.active_with_new_code(existing)
        return
    raise refusals.already_registered(req.name, req.version, existing.id)


def _read_registered(
    core: Core, req: RegisterPluginRequest, me: rules.Facts
) -> tuple[PluginRow | None, list[PluginRow]]:
    """The stored plugin of the same name and version (if any), and what the registration's
    warnings are about: the active plugins and the versions of those it requires."""
    with core.db.read() as session:
        repo = PluginRepository(session)
        return repo.get_by_name_version(req.name, req.version), repo.active_or_named(
            me.required_keys
        )


def _probe(core: Core, req: RegisterPluginRequest) -> ProbeResult:
    """Import the class in a throwaway process: loadable or not, and what it offers."""
    return probe_class(
        req.class_path,
        timeout=core.settings.class_check_timeout,
        extra_paths=[str(p) for p in core.settings.plugin_dirs],
    )


def _metadata(req: RegisterPluginRequest) -> dict[str, Any]:
    meta = req.metadata.model_dump(exclude_none=True)
    if req.category and not meta.get("category"):
        meta["category"] = req.category
    return meta


def _against_registered(
    core: Core, me: rules.Facts, registered: list[PluginRow]
) -> tuple[list[rules.MissingDependency], list[rules.Conflict]]:
    """What registration warns about (it refuses neither): requirements no registered
    plugin meets, and conflicts with the active plugins (`registered`: those, and the
    versions of the plugins it requires)."""
    others = [rules.facts_of_row(r) for r in registered]
    missing = rules.unmet_requirements(me, others, need_active=False)
    active = [f for f in others if f.status == "active"]
    conflicts = rules.conflicts_with_active(me, active, core.settings.singleton_type_set)
    return missing, conflicts


# what a definition cannot do without (the request model leaves them "" when not sent)
_IDENTITY = ("name", "type", "version")


def _completed(
    core: Core, req: RegisterPluginRequest
) -> tuple[RegisterPluginRequest, ProbeResult | None]:
    """A request without a name, type or version completed from the manifest its class
    carries (class attributes, or the mlx-plugin.toml beside its module), read by the
    registration's own probe (returned, so that it runs once): every field the request left
    out is taken from it, the fields sent win. VALIDATION_ERROR naming each field still
    missing, or what the class's manifest holds that the request model refuses."""
    if all(getattr(req, key) for key in _IDENTITY):
        return req, None
    probe = _probe(core, req)
    sent = req.model_dump(include=req.model_fields_set)
    declared = {
        k: v for k, v in probe.manifest.items() if k in type(req).model_fields and k not in sent
    }
    try:
        full = RegisterPluginRequest.model_validate({**declared, **sent})
    except PydanticValidationError as exc:
        problems = {
            ".".join(str(p) for p in err.get("loc", ())) or "body": (
                f"{plain_reason(err)} (from the class's manifest)"
            )
            for err in exc.errors()
        }
        for where, reason in definition.body_problems({**declared, **sent}).items():
            problems.setdefault(where, reason)  # every problem in one answer
        raise refusals.invalid_definition(problems) from None
    if not probe.loadable:
        why = f"the class could not be imported to read its manifest: {probe.error}"
    else:
        why = (
            "neither the request nor the class's manifest gives it (class attributes, or "
            "mlx-plugin.toml beside its module)"
        )
    missing = {key: f"is required: {why}" for key in _IDENTITY if not getattr(full, key)}
    if missing:
        raise refusals.invalid_definition(missing)
    return full, probe


def _register_plugin(
    core: Core,
    req: RegisterPluginRequest,
    *,
    dry_run: bool = False,
    probe: ProbeResult | None = None,
) -> RegisterResult:
    """Validate and record a plugin. An unloadable class is recorded with status `error`.
    `probe`: the class already imported (by `_completed`)."""
    _check_definition(req)
    meta = _metadata(req)
    me = rules.facts_from(name=req.name, version=req.version, type=req.type, meta=meta)
    # a duplicate is told after the probe: whether its code changed decides
    existing, registered = _read_registered(core, req, me)
    probe = probe or _probe(core, req)
    if existing is not None and not probe.loadable:
        _refuse_duplicate(req, existing)  # a loadable one stands, whatever broke since
        # A stored plugin whose class could not be loaded is replaced only by a registration
        # that fixes that; the same unloadable definition again is a duplicate like any other.
        raise refusals.already_registered(
            req.name, req.version, existing.id, class_error=probe.error
        )
    # the files of the class's code, hashed here by reading them (the probe imported it)
    digest = integrity.pin(probe.origin) if probe.loadable else {}
    _refuse_duplicate(req, existing, digest)
    schema = {k: v.model_dump(exclude_none=True) for k, v in req.configuration_schema.items()}
    missing, conflicts = _against_registered(core, me, registered)
    status = "registered" if probe.loadable else "error"
    if dry_run:
        plugin_id = existing.id if existing else _peek_id(core, req.name)
    else:
        plugin_id = _store_once(core, req, probe, meta, schema, status, digest)
        log.info(
            "registered plugin %s (%s %s): status %s", plugin_id, req.name, req.version, status
        )
    return RegisterResult(
        id=plugin_id,
        name=req.name,
        version=req.version,
        status=status,
        validation_results=ValidationResults(
            schema_valid=True,
            class_loadable=probe.loadable,
            dependencies_available=not missing,
            conflicts_detected=bool(conflicts),
            class_error=probe.error,
            missing_dependencies=[m.requirement for m in missing],
            conflicts=[c.as_dict() for c in conflicts],
        ),
        next_steps=_next_steps(probe.loadable, probe.error, missing, conflicts, schema),
        dry_run=dry_run,
    )


def _peek_id(core: Core, name: str) -> str:
    """The id a registration of `name` would get now (a dry run)."""
    with core.db.read() as session:
        return PluginRepository(session).peek_id(name)


def _store_once(
    core: Core,
    req: RegisterPluginRequest,
    probe: ProbeResult,
    meta: dict[str, Any],
    schema: dict[str, Any],
    status: str,
    digest: dict[str, Any],
) -> str:
    try:
        return _store(core, req, probe, meta, schema, status, digest)
    except IntegrityError:
        # Two registrations of the same name and version at once, on two replicas: the
        # unique constraint let one win.
        with core.db.read() as session:
            _refuse_duplicate(
                req, PluginRepository(session).get_by_name_version(req.name, req.version), digest
            )
        raise


def _store(
    core: Core,
    req: RegisterPluginRequest,
    probe: ProbeResult,
    meta: dict[str, Any],
    schema: dict[str, Any],
    status: str,
    digest: dict[str, Any],
) -> str:
    with core.db.state_change() as session:
        repo = PluginRepository(session)
        row = repo.get_by_name_version(req.name, req.version)
        # again: another registration may have won meanwhile
        _refuse_duplicate(req, row, digest)
        if row is None:
            row = PluginRow(id=repo.next_id(req.name), name=req.name, version=req.version)
            session.add(row)
        row.type = req.type
        row.description = req.description
        row.category = meta.get("category")
        row.class_path = req.class_path
        row.isolation = req.isolation or "process"
        row.status = status
        row.status_reason = None if probe.loadable else f"class not loadable: {probe.error}"
        row.loadable = probe.loadable
        row.class_info = probe.info
        row.code_digest = digest
        row.configuration_schema = core.box.seal_schema(schema)
        row.plugin_metadata = meta
        row.configuration = row.configuration or {}
        row.running_configuration = row.configuration
        row.config_version = row.config_version or 0
        row.generation = row.generation or 0
        row.auto_start = True
        row.extra = {"author": req.author, "license": req.license, "tags": req.tags}
        row.documentation_url = req.documentation_url
        row.repository_url = req.repository_url
        row.singleton_slot = None
        row.health_status = "unknown"
        session.flush()
        core.db.notify(session, row.id)
        return row.id


def _next_steps(
    loadable: bool,
    error: str | None,
    missing: list[rules.MissingDependency],
    conflicts: list[rules.Conflict],
    schema: dict[str, Any],
) -> list[str]:
    if not loadable:
        return [
            f"Fix the plugin class: {error}",
            "Make the class importable by the service (install its package, or add its folder "
            "to MLX_PLUGIN_PATH), then register the plugin again",
        ]
    steps: list[str] = []
    for m in missing:
        steps.append(f"Register a plugin satisfying '{m.requirement}' before activating")
    for c in conflicts:
        steps.append(c.resolution_options[0])
    steps.append(SPEC_NEXT_STEPS[0])
    required = [n for n, f in schema.items() if f.get("required")]
    if required:
        steps.append(f"{SPEC_NEXT_STEPS[1]}: {', '.join(required)}")
    else:
        steps.append(SPEC_NEXT_STEPS[1])
    steps.append(SPEC_NEXT_STEPS[2])
    return steps


# ---------------------------------------------------------------- reading


def list_plugins(
    core: Core, flt: PluginFilter, *, page: int, limit: int, sort: str | None = None
) -> Page[ListedPlugin]:
    live = replica.live_since(core)
    with core.db.read() as session:
        found = PluginRepository(session).list(
            flt, page=page, limit=limit, sort=sort, live_since=live
        )
    shown = shown_status(core, found.rows)
    items = [ListedPlugin(r, shown[r.id]) for r in found.rows]
    return Page(
        items,
        page=page,
        limit=limit,
        total=found.total,
        total_is_estimate=found.total_is_estimate,
        more=found.has_next,
    )


def get_row(core: Core, plugin_id: str) -> PluginRow:
    with core.db.read() as session:
        row = PluginRepository(session).get(plugin_id)
    if row is None:
        raise refusals.not_found(plugin_id)
    return row


def get_plugin(core: Core, plugin_id: str) -> PluginDetails:
    row = get_row(core, plugin_id)
    return PluginDetails(
        ShownPlugin(row, shown_status(core, [row])[row.id]),
        recent_performance(core.metrics, row.id, PERFORMANCE_WINDOW),
        configuration.pending_fields(core, row),
    )


def shown_status(core: Core, rows: Sequence[PluginRow | ListedRow]) -> dict[str, Shown]:
    """The status the API shows, by plugin id: the desired state, except that an `active`
    plugin that no live replica runs shows `error`, with the replicas' reasons."""
    out = {r.id: Shown(r.status, r.status_reason) for r in rows}
    active = [r.id for r in rows if r.status == "active"]
    if not active:
        return out
    # This replica's live instances first, its rows after: a dying instance's failure is
    # written before the instance leaves the host, so rows read after an absence always
    # hold that report (read the other way round, a row from before the crash and the
    # absence after it would show `error` without its reason).
    here = {plugin_id: core.host.get(plugin_id) for plugin_id in active}
    for plugin_id, views in replica.observed(core, active).items():
        inst = here[plugin_id]
        if inst is None:
            # This replica's own row is written just after its live state changes: what it
            # runs now wins over a row that still says running.
            views = [v for v in views if v.node_id != core.node_id or v.state not in RUNNING_STATES]
        if any(v.state in RUNNING_STATES for v in views):
            continue
        if inst is not None and not any(v.node_id == core.node_id for v in views):
            continue  # running here, and its report is on its way
        reasons = [f"{v.last_error} (replica {v.node_id})" for v in views if v.last_error]
        if not reasons and any(v.state in ("starting", "stopping") for v in views):
            reasons = ["restarting"]
        out[plugin_id] = Shown("error", "; ".join(reasons) or "no live replica runs it")
    return out


# The stored statuses whose plugins get series of their own in /metrics: the ones that should
# run (a plugin stored in error could not be loaded and never runs). A catalogue of 100,000
# registered plugins would otherwise be 200,000 series.
WATCHED_STATUSES = ("active",)


def stored_states(core: Core) -> tuple[list[StoredState], dict[str, int]]:
    """The stored status and last health of the plugins in WATCHED_STATUSES (three columns,
    read by the status index), and how many plugins are stored in each status."""
    with core.db.read() as session:
        repo = PluginRepository(session)
        watched = repo.states(WATCHED_STATUSES)
        counts = repo.count_by_status()
    return [StoredState(*row) for row in watched], counts


def configuration_json_schema(core: Core, plugin_id: str) -> dict[str, JsonValue]:
    """The plugin's configuration schema as standard JSON Schema (draft 2020-12)."""
    row = get_row(core, plugin_id)
    schema: dict[str, JsonValue] = config_schema.to_json_schema(
        row.configuration_schema or {}, title=f"{row.name} {row.version} configuration"
    )
    schema["$id"] = f"urn:mlx-platform:plugin:{row.id}:configuration"
    return schema


# ---------------------------------------------------------------- unregistration


def _delete_plugin(core: Core, plugin_id: str, *, force: bool) -> DeleteResult:
    """Remove the plugin from the desired state (and its metrics) in one guarded transaction,
    then stop this replica's instance; the others stop theirs when they hear of it."""
    with core.plugin_lock(plugin_id):
        with core.changing(plugin_id) as (repo, row):
            active = {r.id: r for r in repo.active()}
            dependents = rules.dependents_of(
                rules.facts_of_row(row), [rules.facts_of_row(r) for r in active.values()]
            )
            if dependents:
                raise refusals.required_by_active(row, [active[d.id] for d in dependents])
            deactivated = row.status == "active"
            if deactivated and not force:
                raise refusals.active_without_force(row)
            repo.delete(row)
            core.db.notify(repo.session, plugin_id)
        core.reconciler.retire(plugin_id, graceful_timeout=0, force=True)
        core.host.drop_executor(plugin_id)
        core.metrics.forget(plugin_id)
    log.info("unregistered plugin %s", plugin_id)
    return DeleteResult(id=plugin_id, deleted=True, deactivated=deactivated)


# ---------------------------------------------------------------- audited entry points


def register_plugin(
    core: Core,
    req: RegisterPluginRequest,
    *,
    dry_run: bool = False,
    origin: audit.Origin | None = None,
    action: str = "register",
) -> RegisterResult:
    """Validate and record a plugin (see `_register_plugin`), with an audit record."""
    with audit.audited(core, origin, action, None, skip=dry_run) as event:
        event.details["class_path"] = req.class_path
        req, probe = _completed(core, req)
        event.details.update(name=req.name, version=req.version)
        result = _register_plugin(core, req, dry_run=dry_run, probe=probe)
        event.plugin_id = result.id
        event.details["status"] = result.status
        return result


def delete_plugin(
    core: Core, plugin_id: str, *, force: bool, origin: audit.Origin | None = None
) -> DeleteResult:
    with audit.audited(core, origin, "delete", plugin_id) as event:
        event.details["force"] = force
        result = _delete_plugin(core, plugin_id, force=force)
        event.details["deactivated"] = result.deactivated
        return result
