"""Starting and stopping one replica: migrations, the example plugins (first start), its node
record, every plugin the desired state says should run, and the background loops (the
reconciler, change notifications, health rounds, usage samples, metrics flush, heartbeat)."""

from __future__ import annotations

import logging
import threading

from mlx_platform.core import replica
from mlx_platform.core.context import Core
from mlx_platform.core.registry import register_plugin
from mlx_platform.errors import PluginAlreadyExistsError
from mlx_platform.plugins import manifest_from_class
from mlx_platform.runtime.monitor import HealthRounds, Periodic, sample_usage
from mlx_platform.storage.repositories import MetaRepository
from mlx_platform.wire import RegisterPluginRequest

log = logging.getLogger("mlx_platform.bootstrap")
_SEEDED = "builtin_plugins_seeded"


def builtin_manifests() -> list[dict[str, object]]:
    from mlx_platform.builtin import BUILTIN_PLUGINS

    return [manifest_from_class(cls) for cls in BUILTIN_PLUGINS]


def seed_builtin_plugins(core: Core) -> list[str]:
    """Register the example plugins once per database. Returns the ids registered now."""
    with core.db.read() as session:
        if MetaRepository(session).get(_SEEDED):
            return []
    ids: list[str] = []
    for manifest in builtin_manifests():
        try:
            result = register_plugin(core, RegisterPluginRequest.model_validate(manifest))
            ids.append(result.id)
        except PluginAlreadyExistsError:
            continue
    with core.db.transaction() as session:
        MetaRepository(session).set(_SEEDED, "1")
    log.info("registered the example plugins: %s", ", ".join(ids) or "none")
    return ids


class Replica:
    """The background work of a started replica; `stop` ends it (service shutdown)."""

    METRICS_FLUSH_INTERVAL = 5.0

    def __init__(self, core: Core) -> None:
        self.core = core
        s = core.settings
        self.health = HealthRounds(
            core.host,
            lambda results: replica.store_health(core, results),
            timeout=s.health_timeout,
            concurrency=s.health_concurrency,
            hang_restart=s.health_hang_restart,
        )
        self.loops = Periodic()
        self._stop_listening = threading.Event()

    def start_heartbeat(self) -> None:
        """First, before the plugins start (which may take long): a replica that says nothing
        for `node_dead_after` seconds is cleared by the others as dead."""
        core = self.core
        self.loops.every(
            core.settings.node_heartbeat_interval, lambda: replica.heartbeat(core), "heartbeat"
        )

    def start(self) -> None:
        core, s = self.core, self.core.settings
        core.reconciler.start()
        listener = threading.Thread(
            target=core.db.listen,
            args=(lambda _payload: core.reconciler.wake(), self._stop_listening),
            name="mlx-listen",
            daemon=True,
        )
        listener.start()
        # a round waits at most 90% of the interval, so the next starts on time
        self.loops.every(
            s.health_interval, lambda: self.health.round(s.health_interval * 0.9), "health round"
        )
        self.loops.every(
            s.usage_interval, lambda: sample_usage(core.host, core.metrics.sample_usage), "usage"
        )
        self.loops.every(self.METRICS_FLUSH_INTERVAL, core.metrics.flush, "metrics flush")

    def stop(self, graceful_timeout: float = 10.0) -> None:
        core = self.core
        self._stop_listening.set()
        core.reconciler.close()
        self.loops.stop()
        self.health.close()
        core.host.stop_all(graceful_timeout)
        replica.leave(core)
        try:
            core.metrics.flush()  # what was recorded since the last round
        except Exception as exc:  # noqa: BLE001 - the database is away: say what is lost
            log.warning("metrics recorded since the last flush could not be written: %s", exc)


def start_core(core: Core) -> Replica:
    """Bring this replica up: schema, node record, example plugins on first start, every
    plugin the desired state says should run (before the service answers), then the loops."""
    core.db.migrate()
    replica.join(core)
    running = Replica(core)
    running.start_heartbeat()
    if core.settings.seed_builtin_plugins:
        seed_builtin_plugins(core)
    core.reconciler.run_once(wait=True)
    running.start()
    return running
