"""A plugin instance in a worker process of its own (isolation ``process``): its lifecycle.

The worker is started in a session and process group of its own, confined as confinement.py
says (environment, user; the worker caps its own address space); its stdout and stderr go
to the service log through worker_output.py, and its calls through channel.py. A watcher
thread sits in waitpid: when the worker dies (a crash, ``os._exit``, kill -9 from outside) it
knows at once, every waiting call fails, and `on_exit` tells the supervisor, with the exit
code or signal. Stopping it ends its whole process group, so processes the plugin spawned
end with it. A call that timed out but still runs after a grace is stopped the only way a
thread can be: by replacing the worker.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any

import psutil

from mlx_platform.errors import (
    InvalidStateError,
    MLXError,
    OperationTimeoutError,
    PluginExecutionError,
)
from mlx_platform.runtime.channel import WorkerChannel, WorkerDiedError
from mlx_platform.runtime.confinement import worker_environment, worker_identity
from mlx_platform.runtime.instance import (
    EXIT_OVER_MEMORY,
    CallAccounting,
    HealthOutcome,
    Isolation,
    RunningInstance,
    WorkerOptions,
    outcome_from_result,
)
from mlx_platform.runtime.worker_output import OutputForwarder

__all__ = ["KILL_GRACE", "ProcessInstance", "WorkerDiedError", "describe_exit"]

log = logging.getLogger("mlx_platform.runtime")

# Seconds between SIGTERM to a worker's process group and SIGKILL to what still runs.
KILL_GRACE = 2.0


class _Call:
    """A context for one invocation of a worker's plugin (ProcessInstance._call). A class, not
    a `contextlib.contextmanager` generator: that costs a generator and its wrapper per call,
    on the way of every invocation."""

    __slots__ = ("instance", "operation", "timeout", "t0")

    def __init__(self, instance: ProcessInstance, operation: str, timeout: float | None) -> None:
        self.instance = instance
        self.operation = operation
        self.timeout = timeout
        self.t0 = 0.0

    def __enter__(self) -> None:
        instance = self.instance
        if not instance.accepting:
            raise InvalidStateError(f"plugin {instance.plugin_id} is shutting down")
        instance._enter()  # noqa: SLF001 - the instance's own accounting
        self.t0 = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, exc: object, tb: object) -> None:
        self.instance._exit((time.perf_counter() - self.t0) * 1000, kind is None)  # noqa: SLF001
        if kind is not None and issubclass(kind, OperationTimeoutError):
            raise OperationTimeoutError(
                f"operation '{self.operation}' did not finish within {self.timeout:g} s",
                {"operation": self.operation, "timeout": self.timeout},
            ) from None


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "the worker stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the worker process was killed by {name}"
    return f"the worker process exited with code {returncode}"


class ProcessInstance(CallAccounting):
    """One plugin instance in a worker process of its own (a `RunningInstance`)."""

    isolation: Isolation = "process"
    recyclable = True

    def __init__(
        self,
        plugin_id: str,
        class_path: str,
        *,
        extra_paths: list[str] | None = None,
        on_exit: Callable[[RunningInstance, str], None] | None = None,
        load_timeout: float = 30.0,
        options: WorkerOptions | None = None,
    ) -> None:
        super().__init__()
        self.plugin_id = plugin_id
        self.class_path = class_path
        self.options = options or WorkerOptions()
        self.on_exit = on_exit
        self._closing = False
        self._start_lock = threading.Lock()
        self.threads = 64  # the worker's threads; the load answer says
        self._terminating = threading.Lock()
        self._spawned: list[psutil.Process] = []

        env = worker_environment(extra_paths, self.options)
        identity = worker_identity(self.options.user, env)
        parent_sock, child_sock = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlx_platform.runtime.worker", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                # a session and process group of its own: Ctrl-C in the service's terminal
                # reaches the service only, and stopping the worker ends all it spawned
                start_new_session=True,
                **identity,
            )
        except OSError as exc:  # the interpreter cannot be run (as that user), no processes left
            parent_sock.close()
            who = f" as user {self.options.user}" if identity else ""
            raise PluginExecutionError(
                f"the worker process could not be started{who}: {exc.strerror or exc}"
            ) from None
        finally:
            child_sock.close()
        self.pid: int = self.proc.pid
        self._channel = WorkerChannel(
            Connection(parent_sock.detach()),
            plugin_id,
            # the largest frame read from the worker: an answer over the result cap is refused
            # by the worker itself; one larger still (a plugin writing to the socket) ends it
            max_frame=self.options.max_result_bytes + 1024 * 1024,
            broken=self._channel_broken,
            overdue=self._timed_out,
        )
        self._psutil = psutil.Process(self.pid)
        output = OutputForwarder(plugin_id)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        output.start(self.proc.stdout, "stdout")
        output.start(self.proc.stderr, "stderr")
        self._watcher = threading.Thread(
            target=self._watch, name=f"mlx-watch-{plugin_id}", daemon=True
        )
        self._watcher.start()
        try:
            info = self._channel.request(
                {
                    "k": "load",
                    "class_path": class_path,
                    "max_memory_mb": self.options.max_memory_mb or None,
                    "max_result_bytes": self.options.max_result_bytes,
                },
                load_timeout,
            )
        except MLXError:
            self.kill()
            raise
        self.operations: list[str] = list(info.get("operations", []))
        self.threads = int(info.get("threads") or self.threads)

    # ------------------------------------------------------------------ the worker's end

    @property
    def exit_reason(self) -> str | None:
        """Why the worker ended; None while it runs."""
        return self._channel.exit_reason

    def _watch(self) -> None:
        returncode = self.proc.wait()
        self._died(self._describe_exit(returncode))

    def _describe_exit(self, returncode: int | None) -> str:
        if returncode == EXIT_OVER_MEMORY:
            cap = self.options.max_memory_mb
            return (
                f"the worker ran out of memory under its cap of {cap} MB (max_memory_mb)"
                if cap
                else "the worker ran out of memory"
            )
        return describe_exit(returncode)

    def _died(self, reason: str) -> None:
        ended = self._channel.end(reason)
        if ended is not None and not self._closing and self.on_exit is not None:
            self.on_exit(self, ended)

    def _channel_broken(self, exc: BaseException) -> None:
        """Reading the channel failed: the worker closed it (it is ending), or, while it
        runs, sent a frame over the cap (only a plugin writing to the socket itself sends
        one) or broke the channel: the stream cannot be trusted any more, the worker ends."""
        if isinstance(exc, OSError) and self.proc.poll() is None:
            self._channel.set_kill_reason(
                f"the worker sent a message over {self._channel.max_frame} bytes or broke "
                "its channel: it was ended"
            )
            self._signal_group(signal.SIGKILL)
        try:
            returncode = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            returncode = None
        self._died(self._describe_exit(returncode))

    # ------------------------------------------------------------------ lifecycle

    @property
    def alive(self) -> bool:
        return self.exit_reason is None and self.proc.poll() is None

    def configure(self, config: dict[str, Any], timeout: float | None) -> None:
        try:
            self._channel.request({"k": "configure", "config": config}, timeout)
        except OperationTimeoutError:
            raise PluginExecutionError(f"configure() did not return within {timeout:g} s") from None

    def start(self, timeout: float | None) -> None:
        with self._start_lock:
            if self.started:
                return
            try:
                self._channel.request({"k": "start"}, timeout)
            except OperationTimeoutError:
                raise PluginExecutionError(f"start() did not return within {timeout:g} s") from None
            self._mark_started()

    def stop(self, *, graceful_timeout: float, force: bool) -> int:
        """Stop taking calls, wait for those in flight (unless `force`), call the plugin's
        stop(), then end the worker's process group. Returns the calls left in flight."""
        pending = self._drain(0 if force else graceful_timeout)
        self._closing = True
        # what the worker spawned, taken while it runs: a process that left the worker's
        # group (setsid) is found only as its descendant, and only while the worker lives
        self._spawned = self._descendants()
        if not force and self.alive:
            try:
                self._channel.request({"k": "stop"}, max(graceful_timeout, 1.0))
            except WorkerDiedError as exc:
                # The worker answers stop and exits 0 at once; its watcher may see the exit
                # before the answer is read off the socket. Exit code 0 is the clean end of a
                # stop (the worker exits so only after running the plugin's stop()).
                if self.proc.poll() != 0:
                    log.warning("plugin %s: stop() failed: %s", self.plugin_id, exc.message)
            except MLXError as exc:
                log.warning("plugin %s: stop() failed: %s", self.plugin_id, exc.message)
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        self.started = False
        return pending

    def recycle(self, reason: str) -> None:
        """End a worker that no longer answers, as if it had died: the supervisor restarts it.
        (A hung call holds one of the worker's threads for ever; only a new process frees it.)
        Returns at once; the process group is ended on a thread of its own."""
        if not self._channel.set_kill_reason(reason) or self.proc.poll() is not None:
            return
        log.warning("plugin %s: %s", self.plugin_id, reason)
        threading.Thread(
            target=self._terminate, name=f"mlx-recycle-{self.plugin_id}", daemon=True
        ).start()

    def kill(self) -> None:
        self._closing = True
        self._terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._channel.close()

    def _descendants(self) -> list[psutil.Process]:
        try:
            return [self._psutil, *self._psutil.children(recursive=True)]
        except psutil.Error:
            return []  # the worker has ended: what it spawned is still in its group

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pid, sig)  # the worker leads its own group (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass

    def _terminate(self, grace: float = KILL_GRACE) -> None:
        """End the worker and everything it spawned: SIGTERM to its process group and to any
        descendant that left the group (setsid), then SIGKILL to whatever still runs after
        `grace` seconds."""
        with self._terminating:
            procs = {p.pid: p for p in _group_members(self.pid)}
            for p in [*self._spawned, *self._descendants()]:
                procs.setdefault(p.pid, p)
            self._signal_group(signal.SIGTERM)
            for p in procs.values():
                _send(p, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _running(procs.values()):
                time.sleep(0.02)
            self._signal_group(signal.SIGKILL)
            for p in _running(procs.values()):
                _send(p, signal.SIGKILL)

    # ------------------------------------------------------------------ timed-out calls

    def _timed_out(self, rid: int, message: dict[str, Any], outstanding: int) -> None:
        """A request went unanswered past its timeout: its thread in the worker may be stuck
        (`outstanding`: the requests the worker may still be running). When every thread of
        the worker is taken, replace the worker at once (nothing else can reach it); an
        invocation still running `timeout_grace` s later is stopped the only way a Python
        thread can be, by replacing the worker."""
        kind = str(message.get("k"))
        if self._closing:
            return
        if outstanding >= self.threads:
            self.recycle(
                f"all {self.threads} threads of the worker are held by calls past their "
                "timeouts: the worker was restarted"
            )
            return
        if kind == "invoke":
            timer = threading.Timer(
                self.options.timeout_grace,
                self._check_overdue,
                args=(rid, f"operation '{message.get('op')}'"),
            )
            timer.daemon = True
            timer.start()

    def _check_overdue(self, rid: int, what: str) -> None:
        if self._closing or not self.alive:
            return
        if not self._channel.is_overdue(rid):
            return  # it answered after all
        try:
            busy = self._channel.request({"k": "busy"}, 5.0)
        except OperationTimeoutError:
            self.recycle(
                f"{what} ran past its timeout and the worker no longer answers: it was restarted"
            )
            return
        except MLXError:
            return  # the worker is gone already
        if self._channel.still_running(rid, busy):
            self.recycle(
                f"{what} was still running {self.options.timeout_grace:g} s after its timeout: "
                "the worker was restarted to stop it"
            )

    # ------------------------------------------------------------------ calls

    def health(self, timeout: float) -> HealthOutcome:
        t0 = time.perf_counter()
        try:
            result = self._channel.request({"k": "health"}, timeout)
        except OperationTimeoutError:
            return HealthOutcome(
                False,
                timeout * 1000,
                f"health_check() did not answer within {timeout:g} s",
                timed_out=True,
            )
        except MLXError as exc:
            return HealthOutcome(False, (time.perf_counter() - t0) * 1000, exc.message)
        return outcome_from_result(result, (time.perf_counter() - t0) * 1000)

    def invoke(self, operation: str, arguments: dict[str, Any], timeout: float | None) -> Any:
        with self._call(operation, timeout):
            return self._channel.request(
                {"k": "invoke", "op": operation, "args": arguments}, timeout
            )

    async def invoke_async(
        self,
        operation: str,
        arguments: dict[str, Any],
        timeout: float | None,
        *,
        spin_s: float = 0.0,
    ) -> Any:
        """`invoke` for a caller on an event loop: no thread waits for the answer."""
        with self._call(operation, timeout):
            return await self._channel.request_async(
                {"k": "invoke", "op": operation, "args": arguments}, timeout, spin_s
            )

    def _call(self, operation: str, timeout: float | None) -> _Call:
        """One invocation: refused while shutting down, counted, its timeout named."""
        return _Call(self, operation, timeout)

    def usage(self) -> tuple[float, float]:
        """(memory MB, CPU %) of the worker process: real per-plugin figures."""
        try:
            with self._psutil.oneshot():
                mem = self._psutil.memory_info().rss / (1024 * 1024)
                cpu = self._psutil.cpu_percent(interval=None)
            return mem, cpu
        except psutil.Error:
            return 0.0, 0.0


def _send(proc: psutil.Process, sig: signal.Signals) -> None:
    try:
        proc.send_signal(sig)
    except psutil.Error:
        pass


def _group_members(pgid: int) -> list[psutil.Process]:
    """The processes of a process group, also those whose parent (the worker) has ended."""
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                members.append(p)
        except OSError:
            pass
    return members


def _running(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.Error:
            pass
    return alive
