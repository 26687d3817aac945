"""Background work of one replica: health rounds over its live instances, and the periodic
loops (health, memory/CPU samples, metrics flush, node heartbeat) that drive it.

Health checks run on a bounded pool and each has its own timeout, so a hung plugin costs one
pool slot for one timeout and delays no other plugin's check. Results go to `store`, given
by core (the runtime knows no storage).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import UTC, datetime
from typing import Any

from mlx_platform.runtime.host import PluginHost
from mlx_platform.runtime.instance import HealthOutcome, RunningInstance

log = logging.getLogger("mlx_platform.monitor")

HealthResult = dict[str, Any]


def health_result(outcome: HealthOutcome) -> HealthResult:
    return {
        "status": "healthy" if outcome.healthy else "unhealthy",
        "response_time_ms": round(outcome.response_time_ms, 3),
        "message": outcome.message,
        "last_check": datetime.now(UTC),
    }


def check_all(
    instances: dict[str, RunningInstance], timeout: float, concurrency: int
) -> dict[str, HealthResult]:
    """One complete health round over `instances`, waiting for every check (each under its
    own timeout). Returns the results by plugin id."""
    targets = {pid: inst for pid, inst in instances.items() if inst.started}
    workers = max(1, min(concurrency, len(targets) or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlx-health") as pool:
        futures = {
            pid: pool.submit(lambda i: health_result(i.health(timeout)), inst)
            for pid, inst in targets.items()
        }
        return {pid: f.result() for pid, f in futures.items()}


class HealthRounds:
    """The background checker. Each round starts a check of every live plugin whose previous
    check has finished, on a bounded pool, and stores every result that is in when the round
    ends: a plugin whose check hangs until its timeout delays only its own next check, never
    the others' (they go on at every round). A worker whose check hangs `hang_restart` rounds
    in a row is recycled (a hung call holds one of its threads for ever)."""

    def __init__(
        self,
        host: PluginHost,
        store: Callable[[dict[str, HealthResult]], None],
        *,
        timeout: float,
        concurrency: int,
        hang_restart: int,
    ) -> None:
        self.host = host
        self.store = store
        self.timeout = timeout
        self.hang_restart = hang_restart
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="mlx-health")
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._done: dict[str, HealthResult] = {}
        self._hangs: dict[str, int] = {}

    def _run(self, plugin_id: str, inst: RunningInstance) -> None:
        try:
            outcome = inst.health(self.timeout)
            with self._lock:
                self._done[plugin_id] = health_result(outcome)
                hangs = self._hangs[plugin_id] = (
                    self._hangs.get(plugin_id, 0) + 1 if outcome.timed_out else 0
                )
            if self.hang_restart and hangs >= self.hang_restart and inst.recyclable:
                with self._lock:
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
        for plugin_id, inst in list(self.host.instances.items()):
            if not inst.started:
                continue
            with self._lock:
                if plugin_id in self._running:
                    continue
                self._running.add(plugin_id)
            started.append(self.pool.submit(self._run, plugin_id, inst))
        wait_futures(started, timeout=wait)
        with self._lock:
            results, self._done = self._done, {}
        if results:
            self.store(results)
        return len(results)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def sample_usage(host: PluginHost, record: Callable[[str, float, float], None]) -> int:
    """Memory and CPU of every worker process. An in-process plugin has no figures of its
    own: nothing honest to record for it."""
    n = 0
    for plugin_id, inst in list(host.instances.items()):
        if inst.isolation != "process":
            continue
        mem, cpu = inst.usage()
        if mem > 0:
            record(plugin_id, mem, cpu)
            n += 1
    return n


class Periodic:
    """Calls each task every `interval` seconds on a thread of its own until stopped. A task
    that raises is logged once per failure streak (not once a round) and retried next time."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def every(self, interval: float, func: Callable[[], Any], name: str) -> None:
        if interval <= 0:
            return
        t = threading.Thread(
            target=self._loop, args=(interval, func, name), name=f"mlx-{name}", daemon=True
        )
        t.start()
        self._threads.append(t)

    def _loop(self, interval: float, func: Callable[[], Any], name: str) -> None:
        next_at = time.monotonic() + interval
        failing = False
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = time.monotonic() + interval
            try:
                func()
                if failing:
                    log.info("%s works again", name)
                failing = False
            except Exception as exc:  # noqa: BLE001 - keep going; the next round retries
                if not failing:
                    log.warning("%s failed (%s); retrying every %g s", name, exc, interval)
                failing = True

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
