"""This replica among the others: its node record and heartbeat, and the callbacks through
which the runtime's reconciler reads the desired state and reports what it runs.

Every replica runs every active plugin (DESIGN.md). What a replica runs of a plugin is its
observed state (`plugin_instances`), beside the desired state (`plugins`); a replica whose
heartbeat is older than `node_dead_after` is dead, and the first replica to notice deletes
its records.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlx_platform import __version__
from mlx_platform.composition.resources import resource_shortfall
from mlx_platform.core import config_schema, definition, integrity
from mlx_platform.core.refusals import shortfall_text
from mlx_platform.core.secrets import REDACTOR
from mlx_platform.runtime.instance import WorkerOptions
from mlx_platform.runtime.reconciler import Desired, Observation, Reconciler
from mlx_platform.storage import NodeRow, PluginInstanceRow, PluginRow
from mlx_platform.storage.availability import classify, reason_of
from mlx_platform.storage.repositories import NodeRepository, PluginRepository
from mlx_platform.wire import Node, NodeCapacity, NodeInstance

if TYPE_CHECKING:
    from mlx_platform.core.context import Core

log = logging.getLogger("mlx_platform.replica")


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- desired state


def desired_of(core: Core, row: PluginRow) -> Desired:
    """What every replica should run of `row` (its running configuration, in clear, with the
    schema's defaults)."""
    schema = row.configuration_schema or {}
    config = config_schema.apply_defaults(
        core.box.open_schema(schema), core.box.open(row.running_configuration or {})
    )
    return Desired(
        plugin_id=row.id,
        name=row.name,
        class_path=row.class_path,
        isolation=core.isolation_of(row.isolation),
        config=config,
        config_version=row.config_version or 0,
        generation=row.generation or 0,
        cold_fields=frozenset(config_schema.cold_fields(schema)),
        auto_start=row.auto_start if row.auto_start is not None else True,
        worker=worker_options(core, row),
    )


def worker_options(core: Core, row: PluginRow) -> WorkerOptions:
    """How `row`'s worker is started (definition.worker_options_for: `mlx plugins check`
    starts its worker the same way)."""
    return definition.worker_options_for(core.settings, row.plugin_metadata or {})


class _DesiredSource:
    """Reads the desired state for the reconciler; keeps the resource claims it read, for
    `admit`. Configurations are decrypted only for rows whose counters moved."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.claims: dict[str, dict[str, Any]] = {}
        self.digests: dict[str, dict[str, Any]] = {}  # the code each was registered with
        self._cache: dict[str, tuple[int, int, Desired]] = {}

    def __call__(self) -> list[Desired]:
        with self.core.db.read() as session:
            rows = PluginRepository(session).active()
        out: list[Desired] = []
        claims: dict[str, dict[str, Any]] = {}
        cache: dict[str, tuple[int, int, Desired]] = {}
        digests: dict[str, dict[str, Any]] = {}
        for row in rows:
            if not row.loadable:
                continue
            key, d = self._desired(row)
            cache[row.id] = (*key, d)
            claims[row.id] = row.requirements
            digests[row.id] = row.code_digest or {}
            out.append(d)
        self._cache, self.claims, self.digests = cache, claims, digests
        return out

    def one(self, plugin_id: str) -> Desired | None:
        """The desired state of one plugin as stored now (None: it should not run), for the
        reconciler's decision under the plugin's lock; its claims and code pin as read."""
        with self.core.db.read() as session:
            row = PluginRepository(session).get(plugin_id)
        if row is None or row.status != "active" or not row.loadable:
            return None
        d = self._desired(row)[1]
        self.claims[row.id] = row.requirements
        self.digests[row.id] = row.code_digest or {}
        return d

    def _desired(self, row: PluginRow) -> tuple[tuple[int, int], Desired]:
        """`row`'s desired state, from the cache while its counters have not moved."""
        key = (row.generation or 0, row.config_version or 0)
        hit = self._cache.get(row.id)
        return key, hit[2] if hit is not None and hit[:2] == key else desired_of(self.core, row)

    def admit(self, d: Desired) -> str | None:
        """Why this replica cannot run `d` beside what it already runs, or None. Every start
        that is not an activation (a restart, another replica, a service start) checks the
        plugin's files against those pinned at registration (core/integrity.py)."""
        changed = integrity.changes(self.digests.get(d.plugin_id))
        if changed:
            return (
                f"its code changed since it was registered ({changed.describe()}): deactivate "
                "it, register it again and activate it to run the new code"
            )
        mine = [self.claims.get(pid, {}) for pid in self.core.host.instances if pid != d.plugin_id]
        need = self.claims.get(d.plugin_id, {})
        short = resource_shortfall(self.core.capacity(), mine, need)
        if not short:
            return None
        return f"not enough resources on replica {self.core.node_id}: {shortfall_text(short)}"


def make_reconciler(core: Core) -> Reconciler:
    s = core.settings
    source = _DesiredSource(core)
    return Reconciler(
        core.host,
        load_desired=source,
        load_one=source.one,
        admit=source.admit,
        report=lambda plugin_id, obs: report(core, plugin_id, obs),
        interval=s.reconcile_interval,
        health_timeout=s.health_timeout,
        load_timeout=s.class_check_timeout,
        extra_paths=[str(p) for p in s.plugin_dirs],
        max_restarts=s.max_restarts,
        backoff_base=s.restart_backoff_base,
        backoff_cap=s.restart_backoff_cap,
        budget_reset=s.restart_budget_reset,
    )


# ---------------------------------------------------------------- observed state


def report(core: Core, plugin_id: str, obs: Observation | None) -> None:
    """Write what this replica runs of a plugin (None: nothing any more)."""
    try:
        with core.db.transaction() as session:
            repo = NodeRepository(session)
            if obs is None:
                repo.drop_instance(plugin_id, core.node_id)
            elif PluginRepository(session).get(plugin_id) is not None:
                repo.put_instance(plugin_id, core.node_id, _masked(obs.values()))
    except Exception as exc:  # noqa: BLE001 - the next pass or heartbeat reports again
        # a database outage is logged once, where it is noticed (storage.availability)
        (log.debug if classify(exc) else log.warning)(
            "could not record the state of plugin %s: %s", plugin_id, reason_of(exc)
        )


_PLUGIN_WORDS = ("health_message", "last_error", "message")


def _masked(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with every known secret masked in what the plugin wrote (its health message,
    the errors it raised): never stored in clear, never shown."""
    return {
        k: (REDACTOR.redact(v) if k in _PLUGIN_WORDS and isinstance(v, str) else v)
        for k, v in values.items()
    }


def store_health(core: Core, results: dict[str, dict[str, Any]]) -> None:
    """Results of a health round: each plugin's last check (the plugin rows, which every
    replica writes: taken in plugin id order, so that two replicas' rounds never deadlock) and
    this replica's own view (its observed rows)."""
    if not results:
        return
    results = {pid: _masked(r) for pid, r in results.items()}
    # away, the next round's results replace these anyway
    _unless_away("health results", lambda: _store_health(core, results))


def _store_health(core: Core, results: dict[str, dict[str, Any]]) -> None:
    with core.db.transaction() as session:
        plugins = PluginRepository(session)
        nodes = NodeRepository(session)
        for plugin_id in sorted(results):
            r = results[plugin_id]
            plugins.set_health(
                plugin_id,
                status=r["status"],
                last_check=r["last_check"],
                response_time_ms=r["response_time_ms"],
                message=r["message"],
            )
        nodes.set_instance_health(core.node_id, results)


def live_since(core: Core) -> datetime:
    return _now() - timedelta(seconds=core.settings.node_dead_after)


def observed(core: Core, plugin_ids: list[str]) -> dict[str, list[PluginInstanceRow]]:
    """Every live replica's observed rows of these plugins, by plugin id."""
    out: dict[str, list[PluginInstanceRow]] = {pid: [] for pid in plugin_ids}
    if not plugin_ids:
        return out
    with core.db.read() as session:
        for row in NodeRepository(session).instances(plugin_ids, live_since=live_since(core)):
            out[row.plugin_id].append(row)
    return out


# ---------------------------------------------------------------- nodes


def _node_row(core: Core) -> NodeRow:
    cap = core.capacity()
    now = _now()
    return NodeRow(
        id=core.node_id,
        host=socket.gethostname(),
        pid=os.getpid(),
        address=core.address,
        version=__version__,
        started_at=now,
        heartbeat_at=now,
        capacity={"memory_mb": cap.memory_mb, "cpu_cores": cap.cpu_cores, "gpus": cap.gpus},
    )


def join(core: Core) -> None:
    """Record this replica (service start)."""
    with core.db.transaction() as session:
        NodeRepository(session).upsert(_node_row(core))
    log.info("replica %s joined", core.node_id)


def heartbeat(core: Core) -> None:
    """Say this replica is alive, and clear the records of replicas that stopped saying so.
    Says nothing while the database is known to be away (that is logged once, by storage):
    it tries again every round, and the first that works ends the outage."""
    now = _now()
    _unless_away("heartbeat", lambda: _heartbeat(core, now))


def _unless_away(what: str, write: Callable[[], None]) -> None:
    """A background write, skipped while the database is away (the outage is logged once, by
    storage; the next round writes again). Any other failure is raised for the loop to log."""
    try:
        write()
    except Exception as exc:
        if classify(exc) is None:
            raise
        log.debug("%s not written: %s", what, reason_of(exc))


def _heartbeat(core: Core, now: datetime) -> None:
    with core.db.transaction() as session:
        repo = NodeRepository(session)
        rejoined = not repo.heartbeat(core.node_id, now)
        if rejoined:
            # declared dead while paused (a long stall): join again, and report every instance
            row = _node_row(core)
            row.started_at = now
            repo.upsert(row)
    if rejoined:
        log.warning("replica %s was taken for dead; it joined again", core.node_id)
        for inst in list(core.host.instances.values()):
            core.reconciler.started(inst)
    older = now - timedelta(seconds=core.settings.node_dead_after)
    with core.db.transaction() as session:
        dead = NodeRepository(session).remove_dead(older, keep=core.node_id)
    for node in dead:
        log.warning("replica %s missed its heartbeats: its records were cleared", node)


def leave(core: Core) -> None:
    """Forget this replica (clean shutdown): its plugins run on the others."""
    try:
        with core.db.transaction() as session:
            NodeRepository(session).remove([core.node_id])
    except Exception as exc:  # noqa: BLE001 - the others clear it once its heartbeat is old
        log.warning("could not remove replica %s on shutdown: %s", core.node_id, exc)


def nodes(core: Core) -> list[Node]:
    """Every recorded replica with what it runs (GET /v1/nodes)."""
    live = live_since(core)
    with core.db.read() as session:
        repo = NodeRepository(session)
        rows = repo.all()
        instances = repo.instances()
    by_node: dict[str, list[NodeInstance]] = {}
    for inst in instances:
        by_node.setdefault(inst.node_id, []).append(
            NodeInstance(
                plugin_id=inst.plugin_id,
                state=inst.state,
                pid=inst.pid,
                generation=inst.generation,
                config_version=inst.config_version,
                health_status=inst.health_status,
                last_error=inst.last_error,
            )
        )
    return [
        Node(
            id=n.id,
            host=n.host,
            pid=n.pid,
            address=n.address,
            version=n.version,
            started_at=n.started_at,
            heartbeat_at=n.heartbeat_at,
            alive=n.heartbeat_at >= live,
            this_node=n.id == core.node_id,
            capacity=NodeCapacity(**(n.capacity or {})),
            instances=by_node.get(n.id, []),
        )
        for n in rows
    ]
