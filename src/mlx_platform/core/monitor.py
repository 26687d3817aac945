"""Background rounds: health checks of every live instance, and memory/CPU samples.

Health checks run on a bounded pool and each has its own timeout, so a hung plugin costs one
pool slot for one timeout and delays no other plugin's check.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import UTC, datetime
from typing import Any

from mlx_platform.core.context import Core
from mlx_platform.storage.repositories import PluginRepository

log = logging.getLogger("mlx_platform.monitor")


def _check_one(inst: Any, timeout: float) -> dict[str, Any]:
    return _result(inst.health(timeout))


def _result(outcome: Any) -> dict[str, Any]:
    return {
        "status": "healthy" if outcome.healthy else "unhealthy",
        "response_time_ms": round(outcome.response_time_ms, 3),
        "message": outcome.message,
        "last_check": datetime.now(UTC),
    }


def _store(core: Core, results: dict[str, dict[str, Any]]) -> None:
    if not results:
        return
    with core.db.transaction() as session:
        repo = PluginRepository(session)
        for plugin_id, r in results.items():
            repo.set_health(
                plugin_id,
                status=r["status"],
                last_check=r["last_check"],
                response_time_ms=r["response_time_ms"],
                message=r["message"],
            )


def check_all(core: Core, instances: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """One complete health round over `instances` (default: every live one), waiting for
    every check (each under its own timeout). Returns the results by plugin id."""
    targets = {
        pid: inst
        for pid, inst in (instances if instances is not None else core.host.instances).items()
        if getattr(inst, "started", False)
    }
    timeout = core.settings.health_timeout
    workers = max(1, min(core.settings.health_concurrency, len(targets) or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlx-health") as pool:
        futures = {pid: pool.submit(_check_one, inst, timeout) for pid, inst in targets.items()}
        results = {pid: f.result() for pid, f in futures.items()}
    if instances is None:
        _store(core, results)
    return results


class HealthRounds:
    """The background checker. Each round starts a check of every live plugin whose previous
    check has finished, on a bounded pool, and stores every result that is in when the round
    ends: a plugin whose check hangs until its timeout delays only its own next check, never
    the others' (they go on at every round)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.pool = ThreadPoolExecutor(
            max_workers=core.settings.health_concurrency, thread_name_prefix="mlx-health"
        )
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._done: dict[str, dict[str, Any]] = {}
        self._hangs: dict[str, int] = {}

    def _run(self, plugin_id: str, inst: Any) -> None:
        try:
            outcome = inst.health(self.core.settings.health_timeout)
            result = _result(outcome)
            with self._lock:
                self._done[plugin_id] = result
                hangs = self._hangs[plugin_id] = (
                    self._hangs.get(plugin_id, 0) + 1 if outcome.timed_out else 0
                )
            limit = self.core.settings.health_hang_restart
            if limit and hangs >= limit and hasattr(inst, "recycle"):
                self._hangs[plugin_id] = 0
                log.warning("plugin %s: health_check() hung %d times in a row", plugin_id, hangs)
                inst.recycle(
                    f"health_check() hung {hangs} times in a row: the worker was restarted"
                )
        finally:
            with self._lock:
                self._running.discard(plugin_id)

    def round(self, wait: float) -> int:
        """Start the checks that can start, wait up to `wait` s, store what came in."""
        started = []
        for plugin_id, inst in list(self.core.host.instances.items()):
            if not getattr(inst, "started", False):
                continue
            with self._lock:
                if plugin_id in self._running:
                    continue
                self._running.add(plugin_id)
            started.append(self.pool.submit(self._run, plugin_id, inst))
        wait_futures(started, timeout=wait)
        with self._lock:
            results, self._done = self._done, {}
        _store(self.core, results)
        return len(results)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def sample_usage(core: Core) -> int:
    n = 0
    for plugin_id, inst in list(core.host.instances.items()):
        if getattr(inst, "isolation", "") != "process":
            continue  # an in-process plugin has no figures of its own: nothing honest to record
        mem, cpu = inst.usage()
        if mem > 0:
            core.metrics.sample_usage(plugin_id, mem, cpu)
            n += 1
    return n


class Monitor:
    """The service's periodic work: health rounds, usage samples, and moving recorded metrics
    to storage. Each runs on a thread of its own, every `interval` seconds."""

    FLUSH_INTERVAL = 5.0

    def __init__(self, core: Core) -> None:
        self.core = core
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _loop(self, interval: float, func: Any, name: str) -> None:
        """Call `func(core)` every `interval` seconds until stopped."""
        next_at = time.monotonic() + interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = time.monotonic() + interval
            try:
                func(self.core)
            except Exception:  # noqa: BLE001 - keep monitoring; the next round retries
                log.exception("%s round failed", name)

    def start(self) -> None:
        s = self.core.settings
        self.health = HealthRounds(self.core)
        # a round waits at most 90% of the interval, so the next starts on time
        health_round = lambda core: self.health.round(s.health_interval * 0.9)  # noqa: E731
        for interval, func, name in (
            (s.health_interval, health_round, "health"),
            (s.usage_interval, sample_usage, "usage"),
            (self.FLUSH_INTERVAL, lambda core: core.metrics.flush(), "metrics flush"),
        ):
            if interval > 0:
                t = threading.Thread(
                    target=self._loop, args=(interval, func, name), name=f"mlx-{name}", daemon=True
                )
                t.start()
                self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        if hasattr(self, "health"):
            self.health.close()
        self.core.metrics.flush()  # what was recorded since the last round
