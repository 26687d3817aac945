"""Background rounds: health checks of every live instance, and memory/CPU samples.

Health checks run on a bounded pool and each has its own timeout, so a hung plugin costs one
pool slot for one timeout and delays no other plugin's check.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from mlx_platform.core.context import Core
from mlx_platform.storage.repositories import PluginRepository

log = logging.getLogger("mlx_platform.monitor")


def check_all(core: Core, instances: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """One health round over `instances` (default: every live one). Returns results by id."""
    targets = dict(instances if instances is not None else core.host.instances)
    timeout = core.settings.health_timeout
    results: dict[str, dict[str, Any]] = {}

    def one(item: tuple[str, Any]) -> None:
        plugin_id, inst = item
        if not getattr(inst, "started", False):
            return
        outcome = inst.health(timeout)
        results[plugin_id] = {
            "status": "healthy" if outcome.healthy else "unhealthy",
            "response_time_ms": round(outcome.response_time_ms, 3),
            "message": outcome.message,
            "last_check": datetime.now(UTC),
        }

    with ThreadPoolExecutor(
        max_workers=max(1, min(core.settings.health_concurrency, len(targets) or 1)),
        thread_name_prefix="mlx-health",
    ) as pool:
        list(pool.map(one, targets.items()))
    if instances is None and results:
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
    return results


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
    def __init__(self, core: Core) -> None:
        self.core = core
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _loop(self, interval: float, func: Any, name: str) -> None:
        next_at = time.monotonic() + interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = time.monotonic() + interval
            try:
                func(self.core)
            except Exception:  # noqa: BLE001 - keep monitoring; the next round retries
                log.exception("%s round failed", name)

    def start(self) -> None:
        s = self.core.settings
        for interval, func, name in (
            (s.health_interval, check_all, "health"),
            (s.usage_interval, sample_usage, "usage"),
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
