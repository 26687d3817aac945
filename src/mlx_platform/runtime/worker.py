"""The worker process that hosts one plugin instance (isolation ``process``).

Started by the service as ``python -m mlx_platform.runtime.worker FD``, FD being its end of
a socket pair. Requests are read and handled by a set of threads in turn (see `run`), so a
long invocation does not hold up a health check; answers are written under a lock. The
process ends when the service closes the socket or sends ``stop``.

The service starts it in a process group of its own with a scrubbed environment (no service
secret, no database URL). Before the plugin is imported the worker caps its own address space
(RLIMIT_AS, the plugin's ``max_memory_mb``); a MemoryError under that cap is answered, then
the worker ends with `EXIT_OVER_MEMORY` so the service can say why. What the plugin prints
and logs goes to stdout and stderr, which the service reads and forwards to its log.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from mlx_platform.runtime.instance import EXIT_OVER_MEMORY, OperationSpec
from mlx_platform.runtime.protocol import Frames, decode, encode, write_frame

# A line of stderr that starts with this came from the plugin's `logging`: the level follows,
# so that the service logs it at that level (plain stderr lines are warnings, stdout info).
LOG_MARK = "\x1f"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Failure(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or {}


class WorkerHost:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.fd = conn.fileno()  # answers written with write_frame, requests read by `frames`
        # the service's requests, one read each (no bound of its own: the service is trusted)
        self.frames = Frames(self.fd, sys.maxsize)
        self.write_lock = threading.Lock()
        self.plugin: Any = None
        self.operations: dict[str, Any] = {}
        self.specs: dict[str, OperationSpec] = {}
        self.stopping = False
        self.max_memory_mb: int | None = None
        self.max_result_bytes: int | None = None
        # seconds from this worker's last answer (by any of its threads) to the next request
        self._answered_at = -math.inf
        self._gap_s = math.inf  # (`_await_next`)

    def send(self, message: dict[str, Any], *, what: str = "the call") -> None:
        try:
            data = encode(message)
        except (TypeError, ValueError) as exc:
            data = _failure(
                message.get("i"),
                "PLUGIN_EXECUTION_ERROR",
                f"the plugin returned a value that is not JSON: {exc}",
            )
        cap = self.max_result_bytes
        if cap is not None and len(data) > cap:
            # measured before sending: the service never reads an oversize answer
            data = _failure(
                message.get("i"),
                "PLUGIN_EXECUTION_ERROR",
                f"the result of {what} is {len(data)} bytes, over the cap of {cap} bytes "
                "(MLX_MAX_INVOKE_RESULT_BYTES): return less, or a reference to the data",
                {"result_bytes": len(data), "max_result_bytes": cap},
            )
        with self.write_lock:
            write_frame(self.fd, data)

    def out_of_memory(self, rid: Any, what: str) -> None:
        """Answer the call that ran out of memory, then end: a worker that hit its cap is
        replaced, not left to fail at random places."""
        cap = f"its cap of {self.max_memory_mb} MB" if self.max_memory_mb else "no memory left"
        try:
            with self.write_lock:
                write_frame(
                    self.fd,
                    _failure(
                        rid,
                        "PLUGIN_EXECUTION_ERROR",
                        f"{what} ran out of memory ({cap}, max_memory_mb): the worker was ended",
                        {"max_memory_mb": self.max_memory_mb},
                    ),
                )
        except BaseException:  # noqa: BLE001 - ending anyway
            pass
        _exit_over_memory()

    # ------------------------------------------------------------------ handlers

    def do_load(self, req: dict[str, Any]) -> Any:
        cap = req.get("max_memory_mb")
        if isinstance(cap, int) and cap > 0:
            _cap_memory(cap)
            self.max_memory_mb = cap
        limit = req.get("max_result_bytes")
        if isinstance(limit, int) and limit > 0:
            self.max_result_bytes = limit
        from mlx_platform.plugins import operations_of
        from mlx_platform.runtime.loading import ClassLoadError, import_plugin_class

        try:
            cls = import_plugin_class(req["class_path"])
        except ClassLoadError as exc:
            raise _Failure("CLASS_NOT_LOADABLE", str(exc)) from None
        try:
            self.plugin = cls()
        except MemoryError:
            raise
        except Exception as exc:
            raise _Failure(
                "PLUGIN_EXECUTION_ERROR", f"creating the plugin instance failed: {_describe(exc)}"
            ) from None
        self.operations = operations_of(cls)
        self.specs = {n: OperationSpec.of(f) for n, f in self.operations.items()}
        return {
            "operations": sorted(self.operations),
            "pid": os.getpid(),
            "threads": self._MAX_THREADS,
        }

    def do_busy(self, req: dict[str, Any]) -> Any:
        """The ids of the requests being handled now (the service asks after a call timed
        out, to learn whether it still runs)."""
        with self._state:
            return sorted(r for r in self._rids.values() if isinstance(r, int))

    def _call(self, what: str, func: Any, *args: Any) -> Any:
        try:
            return func(*args)
        except MemoryError:
            raise
        except Exception as exc:
            raise _Failure("PLUGIN_EXECUTION_ERROR", f"{what} failed: {_describe(exc)}") from None

    def do_configure(self, req: dict[str, Any]) -> Any:
        self._call("configure()", self.plugin.configure, dict(req["config"]))

    def do_start(self, req: dict[str, Any]) -> Any:
        self._call("start()", self.plugin.start)

    def do_stop(self, req: dict[str, Any]) -> Any:
        self.stopping = True
        self._call("stop()", self.plugin.stop)

    def do_health(self, req: dict[str, Any]) -> Any:
        result = self.plugin.health_check()  # exceptions become an unhealthy answer upstream
        if isinstance(result, dict):
            return {
                k: (v if isinstance(v, str | int | float | bool | type(None)) else str(v))
                for k, v in result.items()
            }
        return bool(result) if result is not None else True

    def do_invoke(self, req: dict[str, Any]) -> Any:
        name = req["op"]
        spec = self.specs.get(name)
        if spec is None:
            raise _Failure(
                "OPERATION_NOT_FOUND",
                f"the plugin has no operation '{name}'",
                {"operation": name, "available_operations": sorted(self.operations)},
            )
        args = req.get("args") or {}
        problem = spec.problem(args)
        if problem is not None:
            raise _Failure(
                "INVALID_ARGUMENTS",
                f"bad arguments for '{name}': {problem}",
                {"operation": name, "parameters": list(spec.ordered)},
            )
        try:
            return getattr(self.plugin, name)(**args)
        except MemoryError:
            raise
        except Exception as exc:
            raise _Failure(
                "PLUGIN_EXECUTION_ERROR",
                f"operation '{name}' failed: {_describe(exc)}",
                {"operation": name, "exception": type(exc).__name__},
            ) from None

    # ------------------------------------------------------------------ loop

    def handle(self, req: dict[str, Any]) -> None:
        rid = req.get("i")
        kind = req.get("k")
        what = f"operation '{req.get('op')}'" if kind == "invoke" else f"{kind}"
        handler = getattr(self, f"do_{kind}", None)
        try:
            if handler is None:
                raise _Failure("INTERNAL_ERROR", f"unknown request kind {kind!r}")
            value = handler(req)
            self.send({"i": rid, "ok": True, "v": value}, what=what)
        except MemoryError:
            self.out_of_memory(rid, what)
        except _Failure as f:
            self.send(
                {
                    "i": rid,
                    "ok": False,
                    "e": {"code": f.code, "message": f.message, "details": f.details},
                }
            )
        except BaseException as exc:  # noqa: BLE001 - anything a plugin raises is an answer
            self.send(
                {
                    "i": rid,
                    "ok": False,
                    "e": {
                        "code": "PLUGIN_EXECUTION_ERROR",
                        "message": _describe(exc),
                        "details": {},
                    },
                }
            )

    def run(self) -> int:
        """One thread reads a request and handles it itself: no hand-off between threads on
        the way, which keeps a round trip near the cost of the bare socket. When a call has
        run for longer than `_SLOW` seconds and nobody is reading, the watchdog (this thread)
        starts another reader, so a long or hung call never holds up the next request (a
        health check) for more than a few milliseconds. A reader that finishes while another
        reads just ends.

        An idle worker does not wake at all: its reader blocks on the socket and the watchdog
        waits on `_state` until a request starts with nobody left reading (the reader then
        notifies it); only while a call is in flight does it wait with a deadline."""
        self._read_lock = threading.Lock()
        self._state = threading.Condition(threading.Lock())
        self._done = threading.Event()
        self._readers = 0
        self._threads = 0
        self._watchdog_idle = False  # waiting without a deadline: a starting call notifies
        self._handling: dict[int, float] = {}
        self._rids: dict[int, Any] = {}
        self._start_reader()
        while self._await_stuck():
            if not self._start_reader():
                with self._state:  # no thread now (memory): try again a little later
                    self._state.wait(self._SLOW)
        return 0

    _MAX_THREADS = 64
    _SLOW = 0.005

    def _await_next(self, window: float) -> None:
        """Poll the socket for the next request for up to `window` seconds, rather than sleep
        in `read` at once. The service asks for it in an invocation ("poll") only when that
        call is the only request it serves and this worker answers quickly: its next request
        then typically comes within ~0.2 ms, and on a machine whose idle CPUs halt (a VM's
        vCPUs), the wake-up of a sleeping worker costs ~40 us of the service's write and of
        the worker's read, about a whole quick call. It polls only while the previous request
        came within the window after its answer (`_gap_s`: a caller that paused, or calls
        spread over several plugins, are not polled for), and no other call runs here; between
        polls the CPU goes to any other thread that can run on it (`sched_yield`). What it
        costs: CPU time while a lone client calls one plugin back to back, at most `window`
        per call (docs/decisions.md, "A worker that polls for the next request")."""
        if self.frames.pending():
            return
        until = time.perf_counter() + window
        while not self.frames.arrived() and time.perf_counter() < until:
            os.sched_yield()

    def _await_stuck(self) -> bool:
        """Wait until a call has run `_SLOW` seconds with nobody reading (True), or the worker
        is done (False)."""
        with self._state:
            while not self._done.is_set():
                if self._readers > 0 or not self._handling or self._threads >= self._MAX_THREADS:
                    self._watchdog_idle = True
                    self._state.wait()  # a reader notifies when it takes the last request
                    self._watchdog_idle = False
                    continue
                wait = min(self._handling.values()) + self._SLOW - time.monotonic()
                if wait <= 0:
                    return True
                self._state.wait(wait)
            return False

    def _finish(self) -> None:
        with self._state:
            self._done.set()
            self._state.notify_all()

    def _start_reader(self) -> bool:
        with self._state:
            if self._threads >= self._MAX_THREADS:
                return True  # the watchdog waits until a thread is free again
            self._threads += 1
            self._readers += 1
        try:
            threading.Thread(target=self._read_and_handle, daemon=True, name="mlx-worker").start()
        except RuntimeError:  # no memory left for a thread stack (under the cap): not now
            with self._state:
                self._threads -= 1
                self._readers -= 1
            return False
        return True

    def _read_and_handle(self) -> None:
        me = threading.get_ident()
        poll_s = 0.0  # how long the last request handled here allows polling for the next
        while not self._done.is_set():
            with self._read_lock:
                try:
                    if poll_s > 0 and self._gap_s < poll_s and not self._handling:
                        self._await_next(poll_s)
                    data = self.frames.take()
                except (EOFError, OSError):
                    self._finish()  # the service went away: end quietly
                    return
                self._gap_s = time.perf_counter() - self._answered_at
            req = decode(data)
            poll = req.get("poll")
            poll_s = float(poll) if isinstance(poll, int | float) else 0.0  # the service's word
            with self._state:
                self._readers -= 1
                self._handling[me] = time.monotonic()
                self._rids[me] = req.get("i")
                if self._readers == 0 and self._watchdog_idle:
                    self._state.notify()
            self.handle(req)
            self._answered_at = time.perf_counter()
            if req.get("k") == "stop":
                self._finish()
                return
            with self._state:
                del self._handling[me]
                del self._rids[me]
                if self._readers > 0:  # another thread took over reading meanwhile
                    self._threads -= 1
                    return
                self._readers += 1


def _failure(rid: Any, code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    return encode(
        {"i": rid, "ok": False, "e": {"code": code, "message": message, "details": details or {}}}
    )


def _cap_memory(megabytes: int) -> None:
    """Cap this process's address space. RLIMIT_AS counts what is mapped, not only what is
    touched: a cap well above the plugin's working set is needed (thread stacks, arenas)."""
    limit = megabytes * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _exit_over_memory() -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass
    os._exit(EXIT_OVER_MEMORY)


class _LevelPerLine(logging.Formatter):
    """Every line of a record (a traceback too) carries the mark and the level."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        head = f"{LOG_MARK}{record.levelname} "
        return head + text.replace("\n", "\n" + head)


def _setup_output() -> None:
    """Line-buffered stdout/stderr (each line reaches the service log when printed, also if the
    worker is killed), and the plugin's `logging` to stderr with its level."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True, errors="backslashreplace")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelPerLine("%(name)s: %(message)s"))
    logging.root.addHandler(handler)
    logging.root.setLevel(logging.INFO)
    default_hook = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        default_hook(args)
        if issubclass(args.exc_type, MemoryError):  # in a thread the plugin started
            _exit_over_memory()

    threading.excepthook = hook


def main(argv: list[str]) -> int:
    fd = int(argv[1])
    _setup_output()
    conn = Connection(fd)
    code = WorkerHost(conn).run()
    conn.close()
    # os._exit: plugin threads that still run (a hung call) must not keep the worker alive.
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv)
