"""What every live plugin instance shares, whatever its isolation: the `RunningInstance`
protocol the rest of the service uses, call accounting, draining calls in flight on stop,
and reading a plugin's health answer."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from mlx_platform.errors import MLXError, PluginHealthCheckFailedError

# A worker that ran out of memory under its cap answers the call that failed, then ends
# with this exit code, so that the service can say why it ended.
EXIT_OVER_MEMORY = 86


Isolation = Literal["inprocess", "process"]


@dataclass(frozen=True)
class WorkerOptions:
    """How a plugin's worker process is started and bounded (isolation ``process``)."""

    max_memory_mb: int | None = 2048  # address-space cap (RLIMIT_AS); None or 0: none
    environment: tuple[str, ...] = ()  # variables passed through from the service's environment
    user: str | None = None  # run the worker as this user (the service runs as root)
    max_result_bytes: int = 16 * 1024 * 1024  # an invoke answer larger than this is refused
    timeout_grace: float = 5.0  # a timed-out call still running after this: recycle the worker


@dataclass
class HealthOutcome:
    healthy: bool
    response_time_ms: float
    message: str | None = None
    timed_out: bool = False


def outcome_from_result(result: Any, elapsed_ms: float) -> HealthOutcome:
    """A plugin's `health_check()` answer (True/False/None or a dict with `status`)."""
    if isinstance(result, dict):
        status = str(result.get("status", "healthy")).lower()
        healthy = status in ("healthy", "pass", "ok", "up", "true")
        message = result.get("message")
        return HealthOutcome(healthy, elapsed_ms, str(message) if message is not None else None)
    if result is None or result is True:
        return HealthOutcome(True, elapsed_ms)
    return HealthOutcome(
        bool(result), elapsed_ms, None if result else "health_check() returned False"
    )


class RunningInstance(Protocol):
    """A live plugin instance, whatever its isolation: all the host, the reconciler, the
    monitor and core use of one. `InProcessInstance` (host.py, isolation ``inprocess``) and
    `ProcessInstance` (process.py, a worker process) implement it; `CallAccounting` gives
    both the counters and the started state."""

    # what the reconciler brought the instance to (it writes them)
    generation: int
    config_version: int
    applied_config: dict[str, Any]

    @property
    def plugin_id(self) -> str: ...

    @property
    def isolation(self) -> Isolation: ...

    @property
    def pid(self) -> int | None:
        """The worker process; None for an instance living in the service process."""

    @property
    def recyclable(self) -> bool:
        """Whether `recycle` can end a hung call (only by replacing a worker process)."""

    # ------------------------------------------------------------------ call accounting

    @property
    def started(self) -> bool: ...

    @property
    def started_at(self) -> float | None: ...  # time.time() of the start

    @property
    def total(self) -> int: ...

    @property
    def failed(self) -> int: ...

    @property
    def sum_ms(self) -> float: ...

    @property
    def in_flight(self) -> int: ...

    # ------------------------------------------------------------------ lifecycle

    def configure(self, config: dict[str, Any], timeout: float | None) -> None: ...

    def start(self, timeout: float | None) -> None: ...

    def stop(self, *, graceful_timeout: float, force: bool) -> int:
        """Stop taking calls, wait for those in flight (unless `force`), stop the plugin.
        Returns the calls still in flight when it stopped."""

    def recycle(self, reason: str) -> None:
        """End an instance that no longer answers, as if it had died (when `recyclable`)."""

    # ------------------------------------------------------------------ calls

    def health(self, timeout: float) -> HealthOutcome: ...

    def invoke(self, operation: str, arguments: dict[str, Any], timeout: float | None) -> Any: ...

    async def invoke_async(
        self,
        operation: str,
        arguments: dict[str, Any],
        timeout: float | None,
        *,
        spin_s: float = 0.0,
    ) -> Any:
        """`invoke` awaited on an event loop. `spin_s` > 0: the loop has nothing else to do,
        and may poll for the answer that long rather than sleep (a worker's channel does)."""

    def usage(self) -> tuple[float, float]:
        """(memory MB, CPU %) of the process the instance lives in."""


@dataclass(frozen=True)
class OperationSpec:
    """An operation's parameters, read once, so each call checks its arguments with set
    operations instead of `inspect.signature(...).bind` (tens of microseconds a call)."""

    names: frozenset[str]
    required: frozenset[str]
    var_keyword: bool
    ordered: tuple[str, ...]

    @classmethod
    def of(cls, func: Callable[..., Any]) -> OperationSpec:
        params = [p for p in inspect.signature(func).parameters.values() if p.name != "self"]
        kinds = inspect.Parameter
        return cls(
            names=frozenset(
                p.name
                for p in params
                if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
            ),
            required=frozenset(
                p.name
                for p in params
                if p.default is kinds.empty
                and p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
            ),
            var_keyword=any(p.kind is kinds.VAR_KEYWORD for p in params),
            ordered=tuple(p.name for p in params),
        )

    def problem(self, arguments: dict[str, Any]) -> str | None:
        """None when `arguments` fit, else what is wrong with them."""
        keys = arguments.keys()
        missing = self.required - keys
        if missing:
            return "missing required argument(s): " + ", ".join(sorted(missing))
        if not self.var_keyword:
            unknown = keys - self.names
            if unknown:
                return "unexpected argument(s): " + ", ".join(sorted(unknown))
        return None


class CallAccounting:
    """Counts calls and tracks the ones in flight, so stop can wait for them to drain."""

    def __init__(self) -> None:
        self.accepting = True
        self.started = False
        self.started_at: float | None = None
        # what the reconciler brought this instance to (the desired state's counters)
        self.generation = 0
        self.config_version = 0
        self.applied_config: dict[str, Any] = {}
        self.total = 0
        self.failed = 0
        self.sum_ms = 0.0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._drained = threading.Event()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1

    def _exit(self, elapsed_ms: float, ok: bool) -> None:
        with self._lock:
            self._in_flight -= 1
            self.total += 1
            self.sum_ms += elapsed_ms
            if not ok:
                self.failed += 1
            if self._in_flight == 0 and not self.accepting:
                self._drained.set()

    def _drain(self, timeout: float) -> int:
        """Refuse new calls; wait up to `timeout` s for those in flight. Returns those left."""
        with self._lock:
            self.accepting = False
            if self._in_flight == 0:
                return 0
            self._drained.clear()
        self._drained.wait(timeout)
        return self._in_flight

    def _mark_started(self) -> None:
        self.started = True
        self.started_at = time.time()


def bring_up_failure(
    name: str, stage: Literal["load", "start"], exc: BaseException
) -> PluginHealthCheckFailedError:
    """What a plugin that could not be loaded or started is refused with, wherever it is
    brought up (the reconciler; the test fixtures that host a plugin as the service does)."""
    reason = exc.message if isinstance(exc, MLXError) else str(exc)
    what = "could not be loaded" if stage == "load" else "failed to start"
    return PluginHealthCheckFailedError(
        f"Plugin '{name}' {what}: {reason}", {"stage": stage, "reason": reason}
    )
