"""Restarts plugins whose worker died, with exponential backoff, up to a limit.

The worker's socket reaches EOF the moment the process ends, so a death is noticed at once
(well within the 2 seconds promised). The plugin's stored status becomes `error` with the
reason; after `restart_backoff_base * 2**n` seconds (capped) the supervisor starts it again
from its stored configuration; after `max_restarts` failures in a row it stays in `error`
until an operator activates it again.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from mlx_platform.storage.repositories import PluginRepository

if TYPE_CHECKING:
    from mlx_platform.core.context import Core

log = logging.getLogger("mlx_platform.supervisor")


class Supervisor:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.restarts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def reset(self, plugin_id: str) -> None:
        """An operator activated or deactivated the plugin: its restart count starts over."""
        with self._lock:
            self.restarts.pop(plugin_id, None)

    def close(self) -> None:
        self._closed.set()

    def delay(self, attempt: int) -> float:
        s = self.core.settings
        # cap the exponent so 2**attempt cannot overflow on a long-failing plugin
        return float(min(s.restart_backoff_base * (2 ** min(attempt, 30)), s.restart_backoff_cap))

    def on_exit(self, instance: Any, reason: str) -> None:
        """Called from the instance's reader thread when its worker ended unexpectedly."""
        if self._closed.is_set():
            return
        plugin_id = instance.plugin_id
        if self.core.host.get(plugin_id) is not instance:
            return  # an instance that was already replaced or removed
        self.core.host.remove(plugin_id)
        self.failed(plugin_id, reason)

    def failed(self, plugin_id: str, reason: str) -> None:
        """The plugin's instance is gone: record why, and restart it later or give up."""
        with self._lock:
            attempt = self.restarts.get(plugin_id, 0)
            self.restarts[plugin_id] = attempt + 1
        limit = self.core.settings.max_restarts
        if attempt >= limit:
            message = (
                f"{reason}; gave up after {limit} restart(s): activate the plugin to try again"
            )
            self._set_error(plugin_id, message)
            log.error("plugin %s: %s", plugin_id, message)
            return
        wait = self.delay(attempt)
        message = f"{reason}; restarting in {wait:g} s (restart {attempt + 1} of {limit})"
        self._set_error(plugin_id, message)
        log.warning("plugin %s: %s", plugin_id, message)
        threading.Thread(
            target=self._restart_later,
            args=(plugin_id, wait),
            name=f"mlx-restart-{plugin_id}",
            daemon=True,
        ).start()

    def _set_error(self, plugin_id: str, message: str) -> None:
        with self.core.db.transaction() as session:
            row = PluginRepository(session).get(plugin_id)
            if row is not None and row.status in ("active", "error"):
                row.status = "error"
                row.status_reason = message
                row.health_status = "unhealthy"
                row.health_message = message

    def _restart_later(self, plugin_id: str, wait: float) -> None:
        if self._closed.wait(wait):
            return
        from mlx_platform.core.lifecycle import restart_plugin

        with self.core.plugin_lock(plugin_id):
            with self.core.db.read() as session:
                row = PluginRepository(session).get(plugin_id)
            if row is None or row.status != "error" or self.core.host.get(plugin_id) is not None:
                return  # the operator acted meanwhile
            restart_plugin(self.core, row)
