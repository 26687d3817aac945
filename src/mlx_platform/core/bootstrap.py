"""Starting and stopping one replica: migrations, the example plugins (first start), its node
record, every plugin the desired state says should run, and the background loops (the
reconciler, change notifications, health rounds, usage samples, metrics flush, heartbeat)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from mlx_platform.core import replica
from mlx_platform.core.context import Core
from mlx_platform.core.registry import register_plugin
from mlx_platform.errors import PluginAlreadyExistsError
from mlx_platform.plugins import manifest_from_class
from mlx_platform.runtime.monitor import HealthRounds, Periodic, sample_usage
from mlx_platform.storage.availability import classify, reason_of
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


class StartFailed(Exception):
    """This replica could not start. Its text is one line for the log: the step that failed
    and why, the database named with its password as *** (the cause is `__cause__`)."""


def _database_shown(core: Core) -> str:
    from sqlalchemy.engine import make_url

    return make_url(core.db.url).render_as_string(hide_password=True)


def start_failure(core: Core, step: str, exc: BaseException, *, of_database: bool) -> StartFailed:
    """`exc`, raised while `step`, as one line: a database error in the database's own words
    (its first line, never the SQL or its parameters), said as an outage or a busy database
    when it is one (storage.availability's classification), and the database named when the
    step or the error is the database's."""
    from sqlalchemy.exc import SQLAlchemyError

    kind = classify(exc)
    reason = reason_of(exc)
    if kind == "outage":
        reason = f"the database cannot be reached or read ({reason})"
    elif kind == "busy":
        reason = f"the database is busy ({reason})"
    elif _unknown_revision(exc):
        reason += (
            ": the database's schema is at a migration this version of mlx-platform does not "
            "have (migrated by a newer version?)"
        )
    if of_database or kind or isinstance(exc, SQLAlchemyError):
        reason += f"; database: {_database_shown(core)}"
    return StartFailed(f"{step} failed: {reason}")


def _unknown_revision(exc: BaseException) -> bool:
    """Alembic could not find the revision the database says it is at."""
    from alembic.script.revision import ResolutionError

    return isinstance(exc, ResolutionError) or isinstance(exc.__cause__, ResolutionError)


@contextmanager
def _step(core: Core, step: str, *, of_database: bool = False) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        raise start_failure(core, step, exc, of_database=of_database) from exc


def start_core(core: Core) -> Replica:
    """Bring this replica up: schema, node record, example plugins on first start, every
    plugin the desired state says should run (before the service answers), then the loops.
    StartFailed, one line, when a step fails: what it started is stopped again."""
    with _step(core, "migrating the database", of_database=True):
        core.db.migrate()
    with _step(core, "recording this replica in the database", of_database=True):
        replica.join(core)
    running = Replica(core)
    try:
        running.start_heartbeat()
        if core.settings.seed_builtin_plugins:
            with _step(core, "registering the example plugins"):
                seed_builtin_plugins(core)
        with _step(core, "starting the active plugins"):
            core.reconciler.run_once(wait=True)
        with _step(core, "starting the background work"):
            running.start()
    except BaseException:
        running.stop()  # its loops, the plugins started, this replica's node record
        raise
    # From here requests are answered: a database outage is logged as one (storage.
    # availability); one during a failed start was said by StartFailed's line alone.
    core.db.availability.serving()
    return running
