"""Brings this replica's live plugin instances to the desired state, and keeps them there.

Storage holds the desired state (DESIGN.md); every replica runs one `Reconciler`. A pass reads
the desired state (every plugin that should run, with the configuration, its version and the
generation) and compares it with the live instances of this replica:

- no instance, or one of an older generation: start a fresh one (stopping the one it
  replaces first), unless the restart policy says wait or gave up, or this replica lacks the
  resources the plugin claims;
- an instance of this generation whose configuration version is behind: `configure()` it
  when only hot-reloadable fields differ, else restart it;
- an instance nobody wants any more (deactivated, deleted): stop it.

Passes run when woken (a change notification from the database, a restart whose wait is
over, a change made through this replica) and every `interval` seconds as a safety net. The
replica that answers a change converges that plugin itself, at once, with `converge(...,
answering=True)`, so that its answer can say how it went.

The reconciler knows no storage and no rules: core passes it `load_desired` (the desired
state), `admit` (this replica's resource check) and `report` (writes the observed state).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlx_platform.errors import InvalidStateError, MLXError, PluginHealthCheckFailedError
from mlx_platform.runtime.host import PluginHost
from mlx_platform.runtime.instance import RunningInstance, WorkerOptions, bring_up_failure
from mlx_platform.runtime.loading import ClassLoadError
from mlx_platform.runtime.supervisor import Supervisor

log = logging.getLogger("mlx_platform.reconciler")

RUNNING_STATES = frozenset({"running", "not_started"})


@dataclass(frozen=True)
class Desired:
    """What every replica should run of one plugin."""

    plugin_id: str
    name: str
    class_path: str
    isolation: str
    config: dict[str, Any]  # the effective configuration, in clear
    config_version: int
    generation: int
    cold_fields: frozenset[str] = frozenset()
    auto_start: bool = True
    worker: WorkerOptions = WorkerOptions()  # how its worker process is started and bounded


@dataclass
class Observation:
    """What this replica runs of one plugin (a `plugin_instances` row)."""

    state: str
    generation: int
    config_version: int
    pid: int | None = None
    health_status: str = "unknown"
    health_message: str | None = None
    health_last_check: datetime | None = None
    health_response_time_ms: float | None = None
    last_error: str | None = None
    restarts: int = 0
    started_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def values(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "generation": self.generation,
            "config_version": self.config_version,
            "pid": self.pid,
            "health_status": self.health_status,
            "health_message": self.health_message,
            "health_last_check": self.health_last_check,
            "health_response_time_ms": self.health_response_time_ms,
            "last_error": self.last_error,
            "restarts": self.restarts,
            "started_at": self.started_at,
        }


@dataclass
class Started:
    """The outcome of starting an instance: its first health check (None: not started)."""

    healthy: bool | None
    response_time_ms: float | None
    message: str | None
    checked_at: datetime | None


def _now() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    def __init__(
        self,
        host: PluginHost,
        *,
        load_desired: Callable[[], list[Desired]],
        load_one: Callable[[str], Desired | None],
        admit: Callable[[Desired], str | None],
        report: Callable[[str, Observation | None], None],
        interval: float,
        health_timeout: float,
        load_timeout: float,
        extra_paths: list[str],
        max_restarts: int,
        backoff_base: float,
        backoff_cap: float,
        budget_reset: float,
        graceful_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.load_desired = load_desired
        self.load_one = load_one
        self.admit = admit
        self.report = report
        self.interval = interval
        self.health_timeout = health_timeout
        self.start_timeout = health_timeout * 6
        self.load_timeout = load_timeout
        self.extra_paths = extra_paths
        self.graceful_timeout = graceful_timeout
        self.supervisor = Supervisor(
            max_restarts=max_restarts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            budget_reset=budget_reset,
            wake=self.wake,
        )
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Starting a plugin takes a worker process and a health check: several at once, so
        # that one slow plugin does not hold the others' changes back.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mlx-reconcile")
        self._busy: set[str] = set()
        self._recheck: set[str] = set()
        self._busy_lock = threading.Lock()
        self._retiring: set[str] = set()  # plugins whose instance is stopping here
        self.passes = 0

    # ------------------------------------------------------------------ loop

    def lock(self, plugin_id: str) -> threading.RLock:
        """Serialises everything done to one plugin's instance on this replica."""
        with self._locks_guard:
            lock = self._locks.get(plugin_id)
            if lock is None:
                lock = self._locks[plugin_id] = threading.RLock()
            return lock

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mlx-reconciler", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.supervisor.close()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        failing = False  # one line per failure streak (a database outage fails every pass)
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.run_once(wait=False)
            except Exception as exc:  # noqa: BLE001 - the database may be away: retried next pass
                if not failing:
                    first = (str(exc).strip().splitlines() or [""])[0][:300]
                    log.warning(
                        "reconcile pass failed (%s: %s); retrying every %g s",
                        type(exc).__name__,
                        first,
                        self.interval,
                    )
                failing = True
            else:
                if failing:
                    log.info("reconcile passes work again")
                failing = False

    def run_once(self, *, wait: bool = True) -> int:
        """One pass over the desired state. With `wait`, returns when every plugin has been
        brought to it (service start); else the work runs on the pool. Returns the number of
        plugins that needed work."""
        if self.supervisor.closed:
            return 0
        desired = {d.plugin_id: d for d in self.load_desired()}
        self.passes += 1
        futures = []
        for plugin_id, d in desired.items():
            if self._needs_work(d):
                futures.append(self._submit(plugin_id, self._sync_quietly, plugin_id))
        for plugin_id in [p for p in list(self.host.instances) if p not in desired]:
            futures.append(self._submit(plugin_id, self._sync_quietly, plugin_id))
        submitted = [f for f in futures if f is not None]
        if wait:
            for f in submitted:
                f.result()
        return len(submitted)

    def _needs_work(self, d: Desired) -> bool:
        inst = self.host.get(d.plugin_id)
        if inst is None or inst.generation != d.generation:
            return self.supervisor.blocked(d.plugin_id, d.generation) is None
        return bool(inst.config_version != d.config_version)

    def _submit(self, plugin_id: str, func: Callable[[Any], None], arg: Any) -> Future[None] | None:
        with self._busy_lock:
            if plugin_id in self._busy:
                # already being worked on, maybe towards an older state: look again once done
                self._recheck.add(plugin_id)
                return None
            self._busy.add(plugin_id)

        def task() -> None:
            try:
                func(arg)
            finally:
                with self._busy_lock:
                    self._busy.discard(plugin_id)
                    again = plugin_id in self._recheck
                    self._recheck.discard(plugin_id)
                if again:
                    self.wake()

        return self._pool.submit(task)

    def _sync_quietly(self, plugin_id: str) -> None:
        try:
            self.sync(plugin_id)
        except Exception:  # noqa: BLE001 - reported as the observed state; retried later
            log.warning("plugin %s: could not be brought to its desired state", plugin_id)

    def sync(self, plugin_id: str) -> None:
        """Bring one plugin to its desired state as read now, under its lock. A pass's list
        may be older than a change made meanwhile: a deactivation that waits for calls in
        flight holds the lock, and the pass, once it gets it, must not start again what was
        just stopped (nor stop what an activation just started)."""
        with self.lock(plugin_id):
            d = self.load_one(plugin_id)
            if d is None:
                if self.host.get(plugin_id) is not None:
                    self.retire(plugin_id, graceful_timeout=self.graceful_timeout, force=False)
            elif self._needs_work(d):
                self.converge(d)

    # ------------------------------------------------------------------ one plugin

    def converge(self, d: Desired, *, answering: bool = False) -> Started | None:
        """Bring this replica's instance of `d` to it. Returns the first health check when an
        instance was started, else None.

        `answering`: the replica that made the change converges it itself: a failure raises
        PluginHealthCheckFailedError for the caller (who rolls the desired state back) instead
        of entering the restart policy, and the restart policy never holds it back.
        """
        with self.lock(d.plugin_id):
            inst = self.host.get(d.plugin_id)
            if inst is not None and inst.generation == d.generation:
                if inst.config_version == d.config_version:
                    return None
                if not any(inst.applied_config.get(k) != d.config.get(k) for k in d.cold_fields):
                    self._reconfigure(inst, d)
                    return None
            if answering:
                self.supervisor.reset(d.plugin_id)
            else:
                if self.supervisor.blocked(d.plugin_id, d.generation) is not None:
                    return None
                refusal = self.admit(d)
                if refusal is not None:
                    self.report(
                        d.plugin_id,
                        Observation(
                            "error",
                            d.generation,
                            d.config_version,
                            health_status="unhealthy",
                            last_error=refusal,
                        ),
                    )
                    return None
            if inst is not None:
                # Replacing an instance always stops the one it replaces.
                self.host.remove(d.plugin_id)
                self.report(
                    d.plugin_id,
                    Observation("stopping", inst.generation, inst.config_version, pid=inst.pid),
                )
                inst.stop(graceful_timeout=self.graceful_timeout, force=False)
            return self._start(d, answering=answering)

    def _reconfigure(self, inst: RunningInstance, d: Desired) -> None:
        try:
            inst.configure(d.config, self.start_timeout)
        except MLXError as exc:
            # the instance keeps its previous configuration; say so, and try again later
            log.warning("plugin %s: configure() failed: %s", d.plugin_id, exc.message)
            self.report(
                d.plugin_id,
                Observation(
                    "running" if inst.started else "not_started",
                    inst.generation,
                    inst.config_version,
                    pid=inst.pid,
                    health_status="unhealthy",
                    last_error=f"configuration {d.config_version} not applied: {exc.message}",
                ),
            )
            raise
        inst.applied_config = dict(d.config)
        inst.config_version = d.config_version
        self.report(d.plugin_id, self._observe(inst))

    def _start(self, d: Desired, *, answering: bool) -> Started | None:
        self.report(
            d.plugin_id,
            Observation(
                "starting",
                d.generation,
                d.config_version,
                restarts=self.supervisor.attempts(d.plugin_id),
            ),
        )
        try:
            inst = self._create(d)
            started = None
            if d.auto_start:
                outcome = inst.health(self.health_timeout)
                started = Started(
                    outcome.healthy, round(outcome.response_time_ms, 3), outcome.message, _now()
                )
                if not outcome.healthy:
                    inst.stop(graceful_timeout=0, force=True)
                    raise PluginHealthCheckFailedError(
                        f"Plugin '{d.name}' failed its first health check: {outcome.message}",
                        {
                            "stage": "health_check",
                            "reason": outcome.message,
                            "response_time_ms": started.response_time_ms,
                        },
                    )
        except PluginHealthCheckFailedError as exc:
            if answering:
                self.report(d.plugin_id, None)
                raise
            self._count_failure(
                d.plugin_id, d.generation, d.config_version, f"start failed: {exc.message}", None
            )
            return None
        self.host.put(inst)
        obs = self._observe(inst)
        if started is not None:
            obs.health_status = "healthy"
            obs.health_message = started.message
            obs.health_last_check = started.checked_at
            obs.health_response_time_ms = started.response_time_ms
        self.report(d.plugin_id, obs)
        log.info("plugin %s running (generation %d)", d.plugin_id, d.generation)
        return started or Started(None, None, None, None)

    def _create(self, d: Desired) -> RunningInstance:
        """A configured (and, with auto_start, started) instance, or the reason why not."""
        try:
            inst = self.host.create(
                d.plugin_id,
                d.class_path,
                isolation=d.isolation,
                on_exit=self._on_exit,
                extra_paths=self.extra_paths,
                load_timeout=self.load_timeout,
                options=d.worker,
            )
        except (ClassLoadError, MLXError) as exc:
            raise bring_up_failure(d.name, "load", exc) from exc
        try:
            inst.configure(d.config, self.start_timeout)
            inst.applied_config = dict(d.config)
            inst.config_version = d.config_version
            inst.generation = d.generation
            if d.auto_start:
                inst.start(self.start_timeout)
        except MLXError as exc:
            inst.stop(graceful_timeout=0, force=True)
            raise bring_up_failure(d.name, "start", exc) from exc
        return inst

    def _observe(self, inst: RunningInstance) -> Observation:
        started_at = inst.started_at
        return Observation(
            "running" if inst.started else "not_started",
            inst.generation,
            inst.config_version,
            pid=inst.pid,
            restarts=self.supervisor.attempts(inst.plugin_id),
            started_at=datetime.fromtimestamp(started_at, UTC) if started_at else None,
        )

    def started(self, inst: RunningInstance) -> None:
        """An instance created with auto_start false was started by its first call."""
        self.report(inst.plugin_id, self._observe(inst))

    def retire(self, plugin_id: str, *, graceful_timeout: float, force: bool) -> int:
        """Stop this replica's instance of a plugin nobody wants running any more. Returns the
        calls still in flight when it stopped."""
        with self.lock(plugin_id):
            self._retiring.add(plugin_id)
            try:
                self.supervisor.reset(plugin_id)
                inst = self.host.remove(plugin_id)
                pending = 0
                if inst is not None:
                    self.report(
                        plugin_id,
                        Observation("stopping", inst.generation, inst.config_version, pid=inst.pid),
                    )
                    pending = inst.stop(graceful_timeout=graceful_timeout, force=force)
                self.report(plugin_id, None)
                if inst is not None:
                    # after the instance's row is gone: whoever reads the line and then asks
                    # /v1/nodes finds the replica no longer running it
                    log.info("plugin %s stopped on this replica", plugin_id)
                return pending
            finally:
                self._retiring.discard(plugin_id)

    def converge_for_call(self, plugin_id: str) -> bool:
        """For a call that found no instance of the plugin's generation here (a change this
        replica had not heard of, or auto_start false): bring the plugin to its desired state
        as stored now, under its lock. False: it should not run any more (the call read the
        plugin just before a deactivation), and nothing was started.

        A call never waits for a deactivation's drain (up to its graceful timeout): while the
        plugin's instance is stopping here the call is refused at once, as the stopping
        instance itself refuses new calls. Waiting for the lock is polled for that reason."""
        lock = self.lock(plugin_id)
        while not lock.acquire(timeout=0.02):
            if plugin_id in self._retiring:
                raise _shutting_down(plugin_id)
        try:
            d = self.load_one(plugin_id)
            if d is None:
                return False
            self.converge(d)
            return True
        finally:
            lock.release()

    def _on_exit(self, inst: RunningInstance, reason: str) -> None:
        """Called from an instance's watcher thread when its worker ended unexpectedly."""
        if self.supervisor.closed:
            return
        plugin_id = inst.plugin_id
        with self.lock(plugin_id):
            if self.host.get(plugin_id) is not inst:
                return  # already replaced or removed
            ran_for = time.time() - inst.started_at if inst.started_at else None
            # The failure, with its reason, is reported before the instance leaves the host:
            # the status never says error without saying why (a restart waits for the lock).
            self._count_failure(plugin_id, inst.generation, inst.config_version, reason, ran_for)
            self.host.remove_if(plugin_id, inst)

    def _count_failure(
        self,
        plugin_id: str,
        generation: int,
        config_version: int,
        reason: str,
        ran_for: float | None,
    ) -> None:
        """An instance died (after `ran_for` s) or could not start: the restart policy says
        what happens next, and the observed state says it."""
        message, gave_up = self.supervisor.failed(plugin_id, generation, reason, ran_for=ran_for)
        self.report(
            plugin_id,
            Observation(
                "error",
                generation,
                config_version,
                health_status="unhealthy",
                health_message=message,
                health_last_check=_now(),
                last_error=message,
                restarts=self.supervisor.attempts(plugin_id),
            ),
        )
        # Logged once stored: whoever reads the log line and then the plugin sees the failure.
        (log.error if gave_up else log.warning)("plugin %s: %s", plugin_id, message)

    def stop_all(self, graceful_timeout: float) -> None:
        """Service shutdown: stop every instance, in parallel."""
        self.supervisor.close()
        self.host.stop_all(graceful_timeout)


def _shutting_down(plugin_id: str) -> InvalidStateError:
    return InvalidStateError(
        f"Plugin '{plugin_id}' is being deactivated on this replica: new calls are refused",
        {"plugin_id": plugin_id, "status": "stopping"},
    )
