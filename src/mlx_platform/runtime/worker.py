"""The worker process that hosts one plugin instance (isolation ``process``).

Started by the service as ``python -m mlx_platform.runtime.worker FD``, FD being its end of
a socket pair. Requests are read and handled by a set of threads in turn (see `run`), so a
long invocation does not hold up a health check; answers are written under a lock. The
process ends when the service closes the socket or sends ``stop``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from mlx_platform.runtime.instance import OperationSpec
from mlx_platform.runtime.protocol import decode, encode


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
        self.write_lock = threading.Lock()
        self.plugin: Any = None
        self.operations: dict[str, Any] = {}
        self.specs: dict[str, OperationSpec] = {}
        self.stopping = False

    def send(self, message: dict[str, Any]) -> None:
        try:
            data = encode(message)
        except (TypeError, ValueError) as exc:
            data = encode(
                {
                    "i": message.get("i"),
                    "ok": False,
                    "e": {
                        "code": "PLUGIN_EXECUTION_ERROR",
                        "message": f"the plugin returned a value that is not JSON: {exc}",
                        "details": {},
                    },
                }
            )
        with self.write_lock:
            self.conn.send_bytes(data)

    # ------------------------------------------------------------------ handlers

    def do_load(self, req: dict[str, Any]) -> Any:
        from mlx_platform.plugins import operations_of
        from mlx_platform.runtime.loading import ClassLoadError, import_plugin_class

        try:
            cls = import_plugin_class(req["class_path"])
        except ClassLoadError as exc:
            raise _Failure("CLASS_NOT_LOADABLE", str(exc)) from None
        try:
            self.plugin = cls()
        except Exception as exc:
            raise _Failure(
                "PLUGIN_EXECUTION_ERROR", f"creating the plugin instance failed: {_describe(exc)}"
            ) from None
        self.operations = operations_of(cls)
        self.specs = {n: OperationSpec.of(f) for n, f in self.operations.items()}
        return {"operations": sorted(self.operations), "pid": os.getpid()}

    def _call(self, what: str, func: Any, *args: Any) -> Any:
        try:
            return func(*args)
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
        except Exception as exc:
            raise _Failure(
                "PLUGIN_EXECUTION_ERROR",
                f"operation '{name}' failed: {_describe(exc)}",
                {"operation": name, "exception": type(exc).__name__},
            ) from None

    # ------------------------------------------------------------------ loop

    def handle(self, req: dict[str, Any]) -> None:
        rid = req.get("i")
        handler = getattr(self, f"do_{req.get('k')}", None)
        try:
            if handler is None:
                raise _Failure("INTERNAL_ERROR", f"unknown request kind {req.get('k')!r}")
            value = handler(req)
            self.send({"i": rid, "ok": True, "v": value})
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
        run for longer than `_SLOW` seconds and nobody is reading, the watchdog starts another
        reader, so a long or hung call never holds up the next request (a health check) for
        more than a few milliseconds. A reader that finishes while another reads just ends."""
        self._read_lock = threading.Lock()
        self._state = threading.Lock()
        self._done = threading.Event()
        self._readers = 0
        self._threads = 0
        self._handling: dict[int, float] = {}
        self._start_reader()
        while not self._done.wait(self._SLOW):
            now = time.monotonic()
            with self._state:
                stuck = self._readers == 0 and any(
                    now - t > self._SLOW for t in self._handling.values()
                )
            if stuck:
                self._start_reader()
        return 0

    _MAX_THREADS = 64
    _SLOW = 0.005

    def _start_reader(self) -> None:
        with self._state:
            if self._threads >= self._MAX_THREADS:
                return
            self._threads += 1
            self._readers += 1
        threading.Thread(target=self._read_and_handle, daemon=True, name="mlx-worker").start()

    def _read_and_handle(self) -> None:
        me = threading.get_ident()
        while not self._done.is_set():
            with self._read_lock:
                try:
                    data = self.conn.recv_bytes()
                except (EOFError, OSError):
                    self._done.set()  # the service went away: end quietly
                    return
            with self._state:
                self._readers -= 1
                self._handling[me] = time.monotonic()
            req = decode(data)
            self.handle(req)
            if req.get("k") == "stop":
                self._done.set()
                return
            with self._state:
                del self._handling[me]
                if self._readers > 0:  # another thread took over reading meanwhile
                    self._threads -= 1
                    return
                self._readers += 1


def main(argv: list[str]) -> int:
    fd = int(argv[1])
    conn = Connection(fd)
    code = WorkerHost(conn).run()
    conn.close()
    # os._exit: plugin threads that still run (a hung call) must not keep the worker alive.
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv)
