"""Live plugin instances, keyed by plugin id.

This module runs instances in the service process (isolation ``inprocess``). Every call into
plugin code that has a time limit runs on a thread of its own, so a hung plugin delays only
the caller that waits for it, never another plugin.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
from mlx_platform.runtime.instance import (
    CallAccounting,
    HealthOutcome,
    Isolation,
    OperationSpec,
    RunningInstance,
    WorkerOptions,
    outcome_from_result,
)
from mlx_platform.runtime.loading import import_plugin_class

__all__ = ["HealthOutcome", "InProcessInstance", "PluginHost", "call_with_timeout"]

log = logging.getLogger("mlx_platform.runtime")


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


class InProcessInstance(CallAccounting):
    """One plugin instance living in the service process (a `RunningInstance`)."""

    isolation: Isolation = "inprocess"
    pid: int | None = None  # no process of its own
    # a hung call is a thread of the service: nothing but the service's end can stop it
    recyclable = False

    def __init__(self, plugin_id: str, plugin: Plugin) -> None:
        super().__init__()
        self.plugin_id = plugin_id
        self.plugin = plugin
        self.operations = operations_of(type(plugin))
        self._specs = {name: OperationSpec.of(func) for name, func in self.operations.items()}
        self._start_lock = threading.Lock()

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
            self._mark_started()

    def stop(self, *, graceful_timeout: float, force: bool) -> int:
        """Stop taking calls, wait for in-flight ones (unless forced), call `stop`.

        Returns the number of calls still in flight when the instance was stopped.
        """
        pending = self._drain(0 if force else graceful_timeout)
        if self.started:
            try:
                call_with_timeout(self.plugin.stop, None if force else max(graceful_timeout, 1.0))
            except _CallTimeout:
                log.warning("plugin %s: stop() did not return in time", self.plugin_id)
            except Exception as exc:  # noqa: BLE001 - a failing stop must not block deactivation
                log.warning("plugin %s: stop() raised %s", self.plugin_id, _describe(exc))
        self.started = False
        return pending

    def recycle(self, reason: str) -> None:
        """Cannot be done in the service process (`recyclable` is False): said, not done."""
        log.warning(
            "plugin %s: %s; an in-process instance cannot be replaced", self.plugin_id, reason
        )

    # ------------------------------------------------------------------ calls

    def health(self, timeout: float) -> HealthOutcome:
        t0 = time.perf_counter()
        try:
            result = call_with_timeout(self.plugin.health_check, timeout)
        except _CallTimeout:
            return HealthOutcome(
                False,
                timeout * 1000,
                f"health_check() did not answer within {timeout:g} s",
                timed_out=True,
            )
        except Exception as exc:  # noqa: BLE001 - a raising check is an unhealthy plugin
            return HealthOutcome(False, (time.perf_counter() - t0) * 1000, _describe(exc))
        return outcome_from_result(result, (time.perf_counter() - t0) * 1000)

    def invoke(self, operation: str, arguments: dict[str, Any], timeout: float | None) -> Any:
        if not self.accepting:
            raise InvalidStateError(f"plugin {self.plugin_id} is shutting down")
        spec = self._specs.get(operation)
        if spec is None:
            raise OperationNotFoundError(
                f"plugin {self.plugin_id} has no operation '{operation}'",
                {"operation": operation, "available_operations": sorted(self.operations)},
            )
        problem = spec.problem(arguments)
        if problem is not None:
            raise InvalidArgumentsError(
                f"bad arguments for '{operation}': {problem}",
                {"operation": operation, "parameters": list(spec.ordered)},
            )
        bound = getattr(self.plugin, operation)
        self._enter()
        t0 = time.perf_counter()
        ok = False
        try:
            if timeout is None:
                result = bound(**arguments)
            else:
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
            self._exit((time.perf_counter() - t0) * 1000, ok)

    async def invoke_async(
        self,
        operation: str,
        arguments: dict[str, Any],
        timeout: float | None,
        *,
        spin_s: float = 0.0,
    ) -> Any:
        """The plugin's code runs in this process: on a thread, never on the event loop
        (`spin_s` does not apply: the thread's answer wakes the loop through its own pipe)."""
        return await asyncio.to_thread(self.invoke, operation, arguments, timeout)

    def usage(self) -> tuple[float, float]:
        """(memory MB, CPU %) of the process the instance lives in."""
        proc = psutil.Process(os.getpid())
        return proc.memory_info().rss / (1024 * 1024), proc.cpu_percent(interval=None)


class PluginHost:
    """The live instances of this service process, by plugin id."""

    def __init__(self, *, calls_per_plugin: int = 16) -> None:
        self.instances: dict[str, RunningInstance] = {}
        self.calls_per_plugin = calls_per_plugin
        self._lock = threading.Lock()
        self._executors: dict[str, ThreadPoolExecutor] = {}

    def executor_for(self, plugin_id: str) -> ThreadPoolExecutor:
        """The threads that carry one plugin's invocations. Calls stuck in one plugin can then
        use up only its own threads (the rest wait in its queue), never the service's shared
        pool: the other plugins and the API keep answering."""
        with self._lock:
            pool = self._executors.get(plugin_id)
            if pool is None:
                pool = self._executors[plugin_id] = ThreadPoolExecutor(
                    max_workers=self.calls_per_plugin, thread_name_prefix=f"mlx-calls-{plugin_id}"
                )
            return pool

    def create(
        self,
        plugin_id: str,
        class_path: str,
        *,
        isolation: str = "inprocess",
        on_exit: Callable[[RunningInstance, str], None] | None = None,
        extra_paths: list[str] | None = None,
        load_timeout: float = 30.0,
        options: WorkerOptions | None = None,
    ) -> RunningInstance:
        """A new, not yet configured instance of the plugin class, in the isolation asked for.
        `options` (environment, memory cap, user, result cap) apply to a worker process; an
        in-process plugin shares the service's process and can be bounded by none of them."""
        if isolation == "process":
            from mlx_platform.runtime.process import ProcessInstance

            return ProcessInstance(
                plugin_id,
                class_path,
                extra_paths=extra_paths,
                on_exit=on_exit,
                load_timeout=load_timeout,
                options=options,
            )
        cls = import_plugin_class(class_path)
        try:
            plugin = cls()
        except Exception as exc:
            raise PluginExecutionError(
                f"creating the plugin instance failed: {_describe(exc)}"
            ) from exc
        return InProcessInstance(plugin_id, plugin)

    def drop_executor(self, plugin_id: str) -> None:
        with self._lock:
            pool = self._executors.pop(plugin_id, None)
        if pool is not None:
            pool.shutdown(wait=False)

    def get(self, plugin_id: str) -> RunningInstance | None:
        return self.instances.get(plugin_id)

    def put(self, instance: RunningInstance) -> None:
        with self._lock:
            self.instances[instance.plugin_id] = instance

    def remove(self, plugin_id: str) -> RunningInstance | None:
        with self._lock:
            return self.instances.pop(plugin_id, None)

    def remove_if(self, plugin_id: str, instance: RunningInstance) -> bool:
        """Remove `instance` if it is still the plugin's live instance; False if it is not."""
        with self._lock:
            if self.instances.get(plugin_id) is not instance:
                return False
            del self.instances[plugin_id]
            return True

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
