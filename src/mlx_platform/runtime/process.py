"""A plugin instance in a worker process of its own (isolation ``process``).

The service holds one end of a socket pair, shared by the calls of many threads. The callers
take turns reading it (leader/followers): the caller that reads an answer meant for another
hands it over and keeps reading until its own arrives, so the common case, one call at a
time, crosses no thread boundary at all. A watcher thread sits in waitpid: when the worker
dies (a crash, ``os._exit``, kill -9 from outside) it knows at once, every waiting call
fails, and `on_exit` tells the supervisor, with the exit code or signal.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import psutil

from mlx_platform.errors import (
    ERROR_CLASSES,
    InvalidStateError,
    MLXError,
    OperationTimeoutError,
    PluginExecutionError,
)
from mlx_platform.runtime.instance import CallAccounting, HealthOutcome, outcome_from_result
from mlx_platform.runtime.protocol import decode, encode

log = logging.getLogger("mlx_platform.runtime")


class WorkerDiedError(PluginExecutionError):
    """The worker process ended while a call was waiting for it."""


class _Waiter:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = threading.Event()  # set: an answer arrived, or this caller should lead
        self.reply: dict[str, Any] | None = None


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
    isolation = "process"

    def __init__(
        self,
        plugin_id: str,
        class_path: str,
        *,
        extra_paths: list[str] | None = None,
        on_exit: Callable[[ProcessInstance, str], None] | None = None,
        load_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.plugin_id = plugin_id
        self.class_path = class_path
        self.on_exit = on_exit
        self.exit_reason: str | None = None
        self.kill_reason: str | None = None
        self._ids = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._mutex = threading.Lock()  # guards _waiters, _leading and each waiter's reply
        self._leading = False
        self._write_lock = threading.Lock()
        self._closing = False
        self._start_lock = threading.Lock()

        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        if extra_paths:
            env["PYTHONPATH"] = os.pathsep.join([*extra_paths, env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlx_platform.runtime.worker", str(child_sock.fileno())],
            pass_fds=(child_sock.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C in the service's terminal reaches the service only
        )
        child_sock.close()
        self.pid = self.proc.pid
        self._conn = Connection(parent_sock.detach())
        self._psutil = psutil.Process(self.pid)
        self._watcher = threading.Thread(
            target=self._watch, name=f"mlx-watch-{plugin_id}", daemon=True
        )
        self._watcher.start()
        try:
            info = self._request({"k": "load", "class_path": class_path}, load_timeout)
        except MLXError:
            self.kill()
            raise
        self.operations: list[str] = list(info.get("operations", []))

    # ------------------------------------------------------------------ channel

    def _watch(self) -> None:
        returncode = self.proc.wait()
        self._died(describe_exit(returncode))

    def _died(self, reason: str) -> None:
        with self._mutex:
            if self.exit_reason is not None:
                return
            self.exit_reason = self.kill_reason or reason
            for w in self._waiters.values():
                w.event.set()  # no reply: the caller raises WorkerDiedError
        if not self._closing and self.on_exit is not None:
            self.on_exit(self, self.exit_reason)

    def _deliver(self, data: bytes) -> int | None:
        try:
            reply = decode(data)
        except ValueError:
            return None
        rid = reply.get("i")
        if not isinstance(rid, int):
            return None
        with self._mutex:
            waiter = self._waiters.get(rid)
            if waiter is not None:
                waiter.reply = reply
                waiter.event.set()
        return rid

    def _lead(self, rid: int, waiter: _Waiter, deadline: float | None) -> bool:
        """Read answers until ours arrives (True) or time runs out (False)."""
        while waiter.reply is None and self.exit_reason is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                if remaining is not None and (remaining <= 0 or not self._conn.poll(remaining)):
                    return False
                data = self._conn.recv_bytes()
            except (EOFError, OSError):
                try:
                    returncode = self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    returncode = None
                self._died(describe_exit(returncode))
                return True
            if self._deliver(data) == rid:
                return True
        return True

    def _request(self, message: dict[str, Any], timeout: float | None) -> Any:
        rid = next(self._ids)
        message["i"] = rid
        waiter = _Waiter()
        with self._mutex:
            if self.exit_reason is not None:
                raise WorkerDiedError(f"plugin {self.plugin_id} is not running: {self.exit_reason}")
            self._waiters[rid] = waiter
        data = encode(message)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with self._write_lock:
                self._conn.send_bytes(data)
            answered = self._await(rid, waiter, deadline)
        except OSError:
            answered = True  # the worker is gone: reply stays None
        finally:
            with self._mutex:
                self._waiters.pop(rid, None)
        if not answered:
            raise OperationTimeoutError(
                f"{message['k']} did not answer within {timeout:g} s", {"timeout": timeout}
            )
        reply = waiter.reply
        if reply is None:
            raise WorkerDiedError(
                f"plugin {self.plugin_id}: {self.exit_reason or 'the worker ended'} during {message['k']}",
                {"reason": self.exit_reason},
            )
        if reply.get("ok"):
            return reply.get("v")
        err = reply.get("e") or {}
        cls = ERROR_CLASSES.get(str(err.get("code")), PluginExecutionError)
        raise cls(str(err.get("message", "the plugin failed")), err.get("details") or {})

    def _await(self, rid: int, waiter: _Waiter, deadline: float | None) -> bool:
        """Wait for our answer, reading the socket ourselves whenever nobody else does."""
        while True:
            with self._mutex:
                if waiter.reply is not None or self.exit_reason is not None:
                    return True
                lead = not self._leading
                if lead:
                    self._leading = True
                else:
                    waiter.event.clear()
            if lead:
                try:
                    return self._lead(rid, waiter, deadline)
                finally:
                    with self._mutex:
                        self._leading = False
                        for other in self._waiters.values():  # hand the reading on
                            if other is not waiter and other.reply is None:
                                other.event.set()
                                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if not waiter.event.wait(remaining):
                with self._mutex:
                    return waiter.reply is not None

    # ------------------------------------------------------------------ lifecycle

    @property
    def alive(self) -> bool:
        return self.exit_reason is None and self.proc.poll() is None

    def configure(self, config: dict[str, Any], timeout: float | None) -> None:
        try:
            self._request({"k": "configure", "config": config}, timeout)
        except OperationTimeoutError:
            raise PluginExecutionError(f"configure() did not return within {timeout:g} s") from None

    def start(self, timeout: float | None) -> None:
        with self._start_lock:
            if self.started:
                return
            try:
                self._request({"k": "start"}, timeout)
            except OperationTimeoutError:
                raise PluginExecutionError(f"start() did not return within {timeout:g} s") from None
            self._mark_started()

    def stop(self, *, graceful_timeout: float, force: bool) -> int:
        pending = self._drain(0 if force else graceful_timeout)
        self._closing = True
        if not force and self.alive:
            try:
                self._request({"k": "stop"}, max(graceful_timeout, 1.0))
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
        """Kill a worker that no longer answers, as if it had died: the supervisor restarts it.
        (A hung call holds one of the worker's threads for ever; only a new process frees it.)"""
        self.kill_reason = reason
        if self.proc.poll() is None:
            self.proc.kill()

    def kill(self) -> None:
        self._closing = True
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            self._conn.close()
        except OSError:
            pass

    # ------------------------------------------------------------------ calls

    def health(self, timeout: float) -> HealthOutcome:
        t0 = time.perf_counter()
        try:
            result = self._request({"k": "health"}, timeout)
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
        if not self.accepting:
            raise InvalidStateError(f"plugin {self.plugin_id} is shutting down")
        self._enter()
        t0 = time.perf_counter()
        ok = False
        try:
            result = self._request({"k": "invoke", "op": operation, "args": arguments}, timeout)
            ok = True
            return result
        except OperationTimeoutError:
            raise OperationTimeoutError(
                f"operation '{operation}' did not finish within {timeout:g} s",
                {"operation": operation, "timeout": timeout},
            ) from None
        finally:
            self._exit((time.perf_counter() - t0) * 1000, ok)

    def usage(self) -> tuple[float, float]:
        """(memory MB, CPU %) of the worker process: real per-plugin figures."""
        try:
            with self._psutil.oneshot():
                mem = self._psutil.memory_info().rss / (1024 * 1024)
                cpu = self._psutil.cpu_percent(interval=None)
            return mem, cpu
        except psutil.Error:
            return 0.0, 0.0
