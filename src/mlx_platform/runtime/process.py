"""A plugin instance in a worker process of its own (isolation ``process``).

The service holds one end of a socket pair, shared by the calls of many threads. The callers
take turns reading it (leader/followers): the caller that reads an answer meant for another
hands it over and keeps reading until its own arrives, so the common case, one call at a
time, crosses no thread boundary at all. A watcher thread sits in waitpid: when the worker
dies (a crash, ``os._exit``, kill -9 from outside) it knows at once, every waiting call
fails, and `on_exit` tells the supervisor, with the exit code or signal.

What a worker may reach (docs/decisions.md, "Security and failure"): it starts in a session
and process group of its own, with a scrubbed environment (`worker_environment`: no MLX_*
setting, so no token secret, no secret key, no database URL; the variables the plugin
declares), optionally as an unprivileged user, under an address-space cap. Its stdout and
stderr are read line by line, bounded, and forwarded to the service log. Stopping it ends its
whole process group, so processes the plugin spawned end with it. A call that timed out but
still runs after a grace is stopped the only way a thread can be: by replacing the worker.
"""

from __future__ import annotations

import itertools
import logging
import os
import pwd
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
    ERROR_CLASSES,
    InvalidStateError,
    MLXError,
    OperationTimeoutError,
    PluginExecutionError,
)
from mlx_platform.runtime.instance import (
    EXIT_OVER_MEMORY,
    CallAccounting,
    HealthOutcome,
    Isolation,
    RunningInstance,
    WorkerOptions,
    outcome_from_result,
)
from mlx_platform.runtime.protocol import decode, encode
from mlx_platform.runtime.worker import LOG_MARK

log = logging.getLogger("mlx_platform.runtime")
plugin_log = logging.getLogger("mlx_platform.plugin")

# Seconds between SIGTERM to a worker's process group and SIGKILL to what still runs.
KILL_GRACE = 2.0

# What a worker keeps of the service's environment: what Python, the C library and TLS need.
# Everything else (MLX_JWT_SECRET, MLX_SECRET_KEY, MLX_DATABASE_URL, cloud credentials...)
# reaches a plugin only when its metadata `environment` names it.
KEPT_VARIABLES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "PYTHONDONTWRITEBYTECODE",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "CUDA_VISIBLE_DEVICES",
    }
)


def worker_environment(
    extra_paths: list[str] | None, options: WorkerOptions, source: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment a worker starts with: the kept variables, `LC_*`, and the plugin's
    declared ones; never a service setting (MLX_*), even when declared."""
    source = dict(os.environ) if source is None else source
    env = {k: v for k, v in source.items() if k in KEPT_VARIABLES or k.startswith("LC_")}
    for name in options.environment:
        if name.upper().startswith("MLX_"):
            log.warning("a plugin declared the service setting %s: not passed to its worker", name)
        elif name in source:
            env[name] = source[name]
    if extra_paths:
        env["PYTHONPATH"] = os.pathsep.join([*extra_paths, env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    if options.max_memory_mb:
        # glibc reserves 64 MB of address space per thread arena: under an RLIMIT_AS cap that
        # would be counted against the plugin for nothing
        env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def _identity(user: str | None, env: dict[str, str]) -> dict[str, Any]:
    """Popen arguments that run the worker as `user` (only a root service can switch)."""
    if not user:
        return {}
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PluginExecutionError(f"MLX_WORKER_USER: there is no user '{user}'") from None
    if os.geteuid() == pw.pw_uid:
        return {}
    if os.geteuid() != 0:
        raise PluginExecutionError(
            f"MLX_WORKER_USER={user}: the service must run as root to start workers as another user"
        )
    env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    # cwd "/": the service's working folder may not be readable by that user
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "cwd": "/"}


# Control characters in a plugin's output are shown escaped: a line must not rewrite the
# terminal or the log viewer (carriage returns, ANSI escapes) or pass for a line of its own.
_ESCAPES = {i: f"\\x{i:02x}" for i in [*range(32), 127, *range(0x80, 0xA0)] if i != 9}
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class OutputForwarder:
    """Reads a worker's stdout and stderr and logs each line, prefixed with the plugin id, to
    the service log (whose handler masks every known secret value: core's SecretRedactor).

    Bounded: a line is cut at `LINE_CAP` bytes (the rest is read and dropped, never held), and
    lines beyond `RATE` a second (after a burst of `BURST`) are dropped and counted; the count
    is logged once the rate allows. A plugin printing 300 MB costs the service one pass over
    the bytes, no memory, and at most `RATE` log lines a second."""

    LINE_CAP = 4096
    RATE = 100.0
    BURST = 1000.0

    def __init__(self, plugin_id: str) -> None:
        self.plugin_id = plugin_id
        self._lock = threading.Lock()
        self._tokens = self.BURST
        self._at = time.monotonic()
        self._dropped = 0

    def start(self, stream: Any, name: str) -> threading.Thread:
        t = threading.Thread(
            target=self._pump, args=(stream, name), name=f"mlx-out-{self.plugin_id}", daemon=True
        )
        t.start()
        return t

    def _pump(self, stream: Any, name: str) -> None:
        try:
            while True:
                line = stream.readline(self.LINE_CAP + 1)
                if not line:
                    break
                cut = 0
                if len(line) > self.LINE_CAP and not line.endswith(b"\n"):
                    cut = len(line) - self.LINE_CAP
                    while True:  # the rest of an over-long line: read and dropped
                        chunk = stream.readline(65536)
                        cut += len(chunk)
                        if not chunk or chunk.endswith(b"\n"):
                            break
                    line = line[: self.LINE_CAP]
                self._emit(line, name, cut)
        except (OSError, ValueError):
            pass  # the pipe closed under us: the worker is gone
        finally:
            try:
                stream.close()
            except OSError:
                pass
            self._report_dropped()

    def _allow(self) -> tuple[bool, int]:
        """(may this line be logged, lines dropped before it); -1: the first dropped line."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.BURST, self._tokens + (now - self._at) * self.RATE)
            self._at = now
            if self._tokens < 1:
                self._dropped += 1
                return False, -1 if self._dropped == 1 else 0
            self._tokens -= 1
            dropped, self._dropped = self._dropped, 0
            return True, dropped

    def _report_dropped(self) -> None:
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            self._say_dropped(dropped)

    def _say_dropped(self, dropped: int) -> None:
        plugin_log.warning(
            "[%s] %d line(s) of output dropped (over %g lines a second)",
            self.plugin_id,
            dropped,
            self.RATE,
        )

    def _emit(self, raw: bytes, name: str, cut: int) -> None:
        allowed, dropped = self._allow()
        if dropped == -1:  # said once when dropping starts; the count once it ends
            plugin_log.warning(
                "[%s] more than %g lines of output a second: lines are dropped",
                self.plugin_id,
                self.RATE,
            )
        if not allowed:
            return
        if dropped > 0:
            self._say_dropped(dropped)
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        level = logging.INFO if name == "stdout" else logging.WARNING
        if name == "stderr" and text.startswith(LOG_MARK):
            head, _, rest = text[1:].partition(" ")
            if head in _LEVELS:
                level, name, text = _LEVELS[head], "log", rest
        text = text.translate(_ESCAPES)
        if cut:
            text += f" ... [{cut} more bytes cut]"
        plugin_log.log(level, "[%s] %s: %s", self.plugin_id, name, text)


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
        self.exit_reason: str | None = None
        self.kill_reason: str | None = None
        self._ids = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._mutex = threading.Lock()  # guards _waiters, _leading and each waiter's reply
        self._leading = False
        self._write_lock = threading.Lock()
        self._closing = False
        self._start_lock = threading.Lock()
        # requests that timed out but were never answered: they may still hold worker threads
        self._overdue: dict[int, str] = {}
        self.threads = 64  # the worker's threads; the load answer says
        # the largest frame read from the worker: an answer over the result cap is refused by
        # the worker itself; one larger still (a plugin writing to the socket) ends the worker
        self._max_frame = self.options.max_result_bytes + 1024 * 1024
        self._terminating = threading.Lock()
        self._spawned: list[psutil.Process] = []

        env = worker_environment(extra_paths, self.options)
        identity = _identity(self.options.user, env)
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
        self._conn = Connection(parent_sock.detach())
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
            info = self._request(
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

    # ------------------------------------------------------------------ channel

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
            else:
                self._overdue.pop(rid, None)  # a late answer: that call has finished
        return rid

    def _lead(self, rid: int, waiter: _Waiter, deadline: float | None) -> bool:
        """Read answers until ours arrives (True) or time runs out (False)."""
        while waiter.reply is None and self.exit_reason is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                if remaining is not None and (remaining <= 0 or not self._conn.poll(remaining)):
                    return False
                data = self._conn.recv_bytes(self._max_frame)
            except (EOFError, OSError) as exc:
                if isinstance(exc, OSError) and self.proc.poll() is None:
                    # an oversize frame (only a plugin writing to the socket itself sends
                    # one) or a broken channel: the stream cannot be trusted any more
                    self._set_kill_reason(
                        f"the worker sent a message over {self._max_frame} bytes or broke "
                        "its channel: it was ended"
                    )
                    self._signal_group(signal.SIGKILL)
                try:
                    returncode = self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    returncode = None
                self._died(self._describe_exit(returncode))
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
            self._timed_out(rid, message)
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
        """Stop taking calls, wait for those in flight (unless `force`), call the plugin's
        stop(), then end the worker's process group. Returns the calls left in flight."""
        pending = self._drain(0 if force else graceful_timeout)
        self._closing = True
        # what the worker spawned, taken while it runs: a process that left the worker's
        # group (setsid) is found only as its descendant, and only while the worker lives
        self._spawned = self._descendants()
        if not force and self.alive:
            try:
                self._request({"k": "stop"}, max(graceful_timeout, 1.0))
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
        if not self._set_kill_reason(reason) or self.proc.poll() is not None:
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
        try:
            self._conn.close()
        except OSError:
            pass

    def _set_kill_reason(self, reason: str) -> bool:
        with self._mutex:
            if self.exit_reason is not None or self.kill_reason is not None:
                return False
            self.kill_reason = reason
            return True

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

    def _timed_out(self, rid: int, message: dict[str, Any]) -> None:
        """A request went unanswered past its timeout: its thread in the worker may be stuck.
        When every thread of the worker is taken, replace the worker at once (nothing else can
        reach it); an invocation still running `timeout_grace` s later is stopped the only
        way a Python thread can be, by replacing the worker."""
        kind = str(message.get("k"))
        with self._mutex:
            self._overdue[rid] = kind
            outstanding = len(self._waiters) + len(self._overdue)
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
        with self._mutex:
            if rid not in self._overdue:
                return  # it answered after all
        try:
            busy = self._request({"k": "busy"}, 5.0)
        except OperationTimeoutError:
            self.recycle(
                f"{what} ran past its timeout and the worker no longer answers: it was restarted"
            )
            return
        except MLXError:
            return  # the worker is gone already
        with self._mutex:
            still = rid in (busy or [])
            if not still:
                self._overdue.pop(rid, None)
        if still:
            self.recycle(
                f"{what} was still running {self.options.timeout_grace:g} s after its timeout: "
                "the worker was restarted to stop it"
            )

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
