"""Live plugin instances, keyed by plugin id.

This module runs instances in the service process (isolation ``inprocess``). Every call into
plugin code that has a time limit runs on a thread of its own, so a hung plugin delays only
the caller that waits for it, never another plugin.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from mlx_platform.errors import (
    InvalidArgumentsError,
    InvalidStateError,
    OperationNotFoundError,
    OperationTimeoutError,
    PluginExecutionError,
)
from mlx_platform.plugins import Plugin, operations_of
from mlx_platform.runtime.loading import import_plugin_class

log = logging.getLogger("mlx_platform.runtime")


@dataclass
class HealthOutcome:
    healthy: bool
    response_time_ms: float
    message: str | None = None


class _CallTimeout(Exception):
    pass


def call_with_timeout(func: Callable[[], Any], timeout: float | None) -> Any:
    """Run `func` on its own daemon thread and wait at most `timeout` seconds for it."""
    if timeout is None:
        return func()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="mlx-plugin-call")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise _CallTimeout()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class InProcessInstance:
    """One plugin instance living in the service process."""

    isolation = "inprocess"

    def __init__(self, plugin_id: str, plugin: Plugin) -> None:
        self.plugin_id = plugin_id
        self.plugin = plugin
        self.operations = operations_of(type(plugin))
        self.started = False
        self.started_at: float | None = None
        self.accepting = True
        self._in_flight = 0
        self._cond = threading.Condition()
        self._start_lock = threading.Lock()
        self.total = 0
        self.failed = 0
        self.sum_ms = 0.0

    # ------------------------------------------------------------------ lifecycle

    def configure(self, config: dict[str, Any], timeout: float | None) -> None:
        try:
            call_with_timeout(lambda: self.plugin.configure(dict(config)), timeout)
        except _CallTimeout:
            raise PluginExecutionError(f"configure() did not return within {timeout:g} s") from None
        except Exception as exc:
            raise PluginExecutionError(f"configure() failed: {_describe(exc)}") from exc

    def start(self, timeout: float | None) -> None:
        with self._start_lock:
            if self.started:
                return
            try:
                call_with_timeout(self.plugin.start, timeout)
            except _CallTimeout:
                raise PluginExecutionError(f"start() did not return within {timeout:g} s") from None
            except Exception as exc:
                raise PluginExecutionError(f"start() failed: {_describe(exc)}") from exc
            self.started = True
            self.started_at = time.time()

    def stop(self, *, graceful_timeout: float, force: bool) -> int:
        """Stop taking calls, wait for in-flight ones (unless forced), call `stop`.

        Returns the number of calls still in flight when the instance was stopped.
        """
        self.accepting = False
        if not force:
            deadline = time.monotonic() + graceful_timeout
            with self._cond:
                while self._in_flight > 0:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
        pending = self._in_flight
        if self.started:
            try:
                call_with_timeout(self.plugin.stop, None if force else max(graceful_timeout, 1.0))
            except _CallTimeout:
                log.warning("plugin %s: stop() did not return in time", self.plugin_id)
            except Exception as exc:  # noqa: BLE001 - a failing stop must not block deactivation
                log.warning("plugin %s: stop() raised %s", self.plugin_id, _describe(exc))
        self.started = False
        return pending

    # ------------------------------------------------------------------ calls

    def health(self, timeout: float) -> HealthOutcome:
        t0 = time.perf_counter()
        try:
            result = call_with_timeout(self.plugin.health_check, timeout)
        except _CallTimeout:
            return HealthOutcome(
                False, timeout * 1000, f"health_check() did not answer within {timeout:g} s"
            )
        except Exception as exc:  # noqa: BLE001 - a raising check is an unhealthy plugin
            return HealthOutcome(False, (time.perf_counter() - t0) * 1000, _describe(exc))
        elapsed = (time.perf_counter() - t0) * 1000
        if isinstance(result, dict):
            status = str(result.get("status", "healthy")).lower()
            healthy = status in ("healthy", "pass", "ok", "up", "true")
            message = result.get("message")
            return HealthOutcome(healthy, elapsed, str(message) if message is not None else None)
        if result is None or result is True:
            return HealthOutcome(True, elapsed)
        return HealthOutcome(
            bool(result), elapsed, None if result else "health_check() returned False"
        )

    def invoke(self, operation: str, arguments: dict[str, Any], timeout: float | None) -> Any:
        if not self.accepting:
            raise InvalidStateError(f"plugin {self.plugin_id} is shutting down")
        func = self.operations.get(operation)
        if func is None:
            raise OperationNotFoundError(
                f"plugin {self.plugin_id} has no operation '{operation}'",
                {"operation": operation, "available_operations": sorted(self.operations)},
            )
        bound = getattr(self.plugin, operation)
        try:
            inspect.signature(bound).bind(**arguments)
        except TypeError as exc:
            raise InvalidArgumentsError(
                f"bad arguments for '{operation}': {exc}",
                {"operation": operation, "parameters": _params(bound)},
            ) from None
        with self._cond:
            self._in_flight += 1
        t0 = time.perf_counter()
        ok = False
        try:
            result = call_with_timeout(lambda: bound(**arguments), timeout)
            ok = True
            return result
        except _CallTimeout:
            raise OperationTimeoutError(
                f"operation '{operation}' did not finish within {timeout:g} s",
                {"operation": operation, "timeout": timeout},
            ) from None
        except Exception as exc:
            raise PluginExecutionError(
                f"operation '{operation}' failed: {_describe(exc)}",
                {"operation": operation, "exception": type(exc).__name__},
            ) from exc
        finally:
            elapsed = (time.perf_counter() - t0) * 1000
            self.total += 1
            self.sum_ms += elapsed
            if not ok:
                self.failed += 1
            self.last_duration_ms = elapsed
            self.last_ok = ok
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def usage(self) -> tuple[float, float]:
        """(memory MB, CPU %) of the process the instance lives in."""
        proc = psutil.Process(os.getpid())
        return proc.memory_info().rss / (1024 * 1024), proc.cpu_percent(interval=None)


def _params(func: Callable[..., Any]) -> list[str]:
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return []


Instance = Any  # InProcessInstance | ProcessInstance: the same methods, duck-typed


class PluginHost:
    """The live instances of this service process, by plugin id."""

    def __init__(self, *, call_timeout: float = 30.0) -> None:
        self.instances: dict[str, Instance] = {}
        self.call_timeout = call_timeout
        self._lock = threading.Lock()

    def create(
        self,
        plugin_id: str,
        class_path: str,
        *,
        isolation: str = "inprocess",
        on_exit: Callable[[Any, str], None] | None = None,
        extra_paths: list[str] | None = None,
        load_timeout: float = 30.0,
    ) -> Instance:
        """A new, not yet configured instance of the plugin class, in the isolation asked for."""
        if isolation == "process":
            from mlx_platform.runtime.process import ProcessInstance

            return ProcessInstance(
                plugin_id, class_path, extra_paths=extra_paths, on_exit=on_exit, load_timeout=load_timeout
            )
        cls = import_plugin_class(class_path)
        try:
            plugin = cls()
        except Exception as exc:
            raise PluginExecutionError(
                f"creating the plugin instance failed: {_describe(exc)}"
            ) from exc
        return InProcessInstance(plugin_id, plugin)

    def get(self, plugin_id: str) -> Instance | None:
        return self.instances.get(plugin_id)

    def put(self, instance: Instance) -> None:
        with self._lock:
            self.instances[instance.plugin_id] = instance

    def remove(self, plugin_id: str) -> Instance | None:
        with self._lock:
            return self.instances.pop(plugin_id, None)

    def stop_all(self, graceful_timeout: float = 10.0) -> None:
        """Stop every instance gracefully, in parallel (service shutdown)."""
        threads = []
        for plugin_id in list(self.instances):
            inst = self.remove(plugin_id)
            if inst is not None:
                t = threading.Thread(
                    target=inst.stop, kwargs={"graceful_timeout": graceful_timeout, "force": False}
                )
                t.start()
                threads.append(t)
        for t in threads:
            t.join(graceful_timeout + 5)
