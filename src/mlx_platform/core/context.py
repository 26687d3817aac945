"""Everything the rules need, built once per service process and passed in."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from mlx_platform.composition.resources import Capacity, machine_capacity
from mlx_platform.core import refusals, replica
from mlx_platform.core.metrics import MetricsRecorder
from mlx_platform.core.secrets import SecretBox
from mlx_platform.runtime.host import PluginHost
from mlx_platform.runtime.reconciler import Reconciler
from mlx_platform.settings import Settings
from mlx_platform.storage import Database, PluginRow
from mlx_platform.storage.repositories import PluginRepository


def new_node_id() -> str:
    """This replica's id: host, process and a random part (a restarted replica is a new node:
    its predecessor's records are cleared as those of a dead one)."""
    host = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in socket.gethostname())
    return f"{host[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class Core:
    settings: Settings
    db: Database
    box: SecretBox
    host: PluginHost
    metrics: MetricsRecorder
    node_id: str
    reconciler: Reconciler = field(init=False)
    address: str | None = None
    # plugin id -> (database generation read before the row, the row): the rows of active
    # plugins an invocation read, reused while nothing was written (lifecycle.ready_instance)
    admitted: dict[str, tuple[int, PluginRow]] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, settings: Settings) -> Core:
        settings.ensure_home()
        db = Database(settings.effective_database_url)
        node_id = new_node_id()
        core = cls(
            settings=settings,
            db=db,
            box=SecretBox(settings.resolved_secret_key),
            host=PluginHost(calls_per_plugin=settings.calls_per_plugin),
            metrics=MetricsRecorder(db, node_id=node_id),
            node_id=node_id,
        )
        core.reconciler = replica.make_reconciler(core)
        return core

    def isolation_of(self, stored: str | None) -> str:
        """The isolation a plugin runs in: the setting overrides what it registered with."""
        return self.settings.isolation or stored or "process"

    def capacity(self) -> Capacity:
        s = self.settings
        return machine_capacity(s.capacity_memory_mb, s.capacity_cpu_cores, s.capacity_gpus)

    def plugin_lock(self, plugin_id: str) -> threading.RLock:
        """Serialises state changes of one plugin within this process (across replicas, the
        database's state-change guard does)."""
        return self.reconciler.lock(plugin_id)

    @contextmanager
    def changing(self, plugin_id: str) -> Iterator[tuple[PluginRepository, PluginRow]]:
        """A state change of one plugin: the state-change guard (one transaction, serialised
        against every other change on every replica) with the plugin's row read inside it, or
        PLUGIN_NOT_FOUND. Callers hold `plugin_lock` around it when they converge after it."""
        with self.db.state_change() as session:
            repo = PluginRepository(session)
            row = repo.get(plugin_id)
            if row is None:
                raise refusals.not_found(plugin_id)
            yield repo, row
