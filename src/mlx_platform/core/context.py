"""Everything the rules need, built once per service process and passed in."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from mlx_platform.core.metrics import MetricsRecorder
from mlx_platform.core.resources import Capacity, machine_capacity
from mlx_platform.core.secrets import SecretBox
from mlx_platform.runtime.host import PluginHost
from mlx_platform.settings import Settings
from mlx_platform.storage import Database


@dataclass
class Core:
    settings: Settings
    db: Database
    box: SecretBox
    host: PluginHost
    metrics: MetricsRecorder
    supervisor: Any = None
    _plugin_locks: defaultdict[str, threading.RLock] = field(
        default_factory=lambda: defaultdict(threading.RLock)
    )
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, settings: Settings) -> Core:
        settings.ensure_home()
        db = Database(settings.effective_database_url)
        from mlx_platform.core.supervisor import Supervisor

        core = cls(
            settings=settings,
            db=db,
            box=SecretBox(settings.resolved_secret_key),
            host=PluginHost(calls_per_plugin=settings.calls_per_plugin),
            metrics=MetricsRecorder(db),
        )
        core.supervisor = Supervisor(core)
        return core

    def isolation_of(self, stored: str | None) -> str:
        """The isolation a plugin runs in: the setting overrides what it registered with."""
        return self.settings.isolation or stored or "process"

    def capacity(self) -> Capacity:
        s = self.settings
        return machine_capacity(s.capacity_memory_mb, s.capacity_cpu_cores, s.capacity_gpus)

    def plugin_lock(self, plugin_id: str) -> threading.RLock:
        """Serialises state changes of one plugin within this process."""
        with self._locks_guard:
            return self._plugin_locks[plugin_id]
