"""Request ids, access log lines, and the last-resort 500 in the envelope.

A pure ASGI middleware (not BaseHTTPMiddleware) so that it sees every answer, including the
ones produced by the 500 path, and adds `X-Request-ID` to all of them.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import random
import re
import threading
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlx_platform.core.secrets import REDACTOR
from mlx_platform.server.errors import internal_error_envelope
from mlx_platform.server.logging_setup import LINE_FORMAT
from mlx_platform.server.request_context import reset_request_id, set_request_id

log = logging.getLogger("mlx_platform.access")
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)  # a forked child does not repeat its parent's ids
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Serving:
    """How many HTTP requests the app is serving now (counted by RequestContextMiddleware,
    from the request's start to its answer's end): a layer that would keep the event loop
    busy for a while asks whether it has anything else to do (server/fast_invoke.py)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, node_id: str = "", serving: Serving | None = None) -> None:
        self.app = app
        # every answer names the replica that gave it (X-MLX-Node), for operators and tests
        self.node_header = (b"x-mlx-node", node_id.encode()) if node_id else None
        self.serving = serving if serving is not None else Serving()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for key, value in scope.get("headers", []):
            if key == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        # 64 random bits from the process's generator (seeded from os.urandom at start): an id
        # only has to be unique in the logs, and uuid4 reads the kernel's random source for
        # every request (a system call: a fifth of a cached read's time here)
        request_id = incoming if _VALID_ID.match(incoming) else f"req_{_ids.getrandbits(64):016x}"
        token = set_request_id(request_id)
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500, "sent": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                if self.node_header is not None:
                    headers.append(self.node_header)
                message["headers"] = headers
            await send(message)

        serving = self.serving
        serving.count += 1
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unhandled error in %s %s (request_id=%s)",
                scope.get("method"),
                scope.get("path"),
                request_id,
            )
            if not status["sent"]:
                body = json.dumps(internal_error_envelope()).encode()
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            serving.count -= 1
            if ACCESS.enabled():
                elapsed = (time.perf_counter() - started) * 1000
                ACCESS.add(
                    (scope.get("method"), scope.get("path"), status["code"], elapsed, request_id)
                )
            reset_request_id(token)


class AccessLog:
    """The access lines, written by a thread rather than on the event loop.

    Formatting a record, passing it through the secret redactor and writing it costs about as
    much as the bare framework spends on a whole request; the event loop only appends the
    request's figures (and the time) to a deque, and a thread writes the same lines, with the
    request's own time, at most `INTERVAL_S` later (as records, or directly when the service's
    own handler is the only one: `_only_handler`). Kept in order; bounded
    (`MAX_PENDING`: past it the oldest lines are dropped and the count of them is logged).
    Flushed when the app stops (and at exit)."""

    INTERVAL_S = 0.05
    MAX_PENDING = 100_000
    FORMAT = "%s %s %s %.1fms request_id=%s"

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.pending: collections.deque[tuple[float, tuple[Any, ...]]] = collections.deque()
        self.dropped = 0
        self.wake = threading.Event()
        self.lock = threading.Lock()  # one flush at a time, so lines stay in order
        self.thread: threading.Thread | None = None
        self._second = -1
        self._stamp = ""
        os.register_at_fork(after_in_child=self._forget_thread)
        atexit.register(self.flush)

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def add(self, args: tuple[Any, ...]) -> None:
        if len(self.pending) >= self.MAX_PENDING:
            self.pending.popleft()
            self.dropped += 1
        self.pending.append((time.time(), args))
        if self.thread is None:
            self._start()
        if not self.wake.is_set():
            self.wake.set()

    def flush(self) -> None:
        with self.lock:
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                self.logger.warning("%d access lines dropped: the log could not keep up", dropped)
            batch = []
            while True:
                try:
                    batch.append(self.pending.popleft())
                except IndexError:
                    break
            if not batch:
                return
            handler = self._only_handler()
            if handler is None:
                for created, args in batch:
                    record = self.logger.makeRecord(
                        self.logger.name, logging.INFO, __file__, 0, self.FORMAT, args, None
                    )
                    record.created = created
                    record.msecs = int((created - int(created)) * 1000) + 0.0
                    self.logger.handle(record)
                return
            text = REDACTOR.redact("".join(self._line(created, args) for created, args in batch))
            handler.acquire()
            try:
                handler.stream.write(text)
                handler.flush()
            finally:
                handler.release()

    def _only_handler(self) -> logging.StreamHandler[Any] | None:
        """The service's own stderr handler when it is the only one these lines reach, with
        its own format: then the lines are written as that handler would write them, a batch
        at a time (~1 us a line instead of ~10 for a record, its filters and its formatter).
        None when logging is configured otherwise (then every line is a record, as usual)."""
        logger, root = self.logger, logging.getLogger()
        if logger.handlers or logger.filters or not logger.propagate or logger.parent is not root:
            return None
        if len(root.handlers) != 1 or root.filters:
            return None
        handler = root.handlers[0]
        if not getattr(handler, "_mlx", False) or handler.level > logging.INFO:
            return None
        if not isinstance(handler, logging.StreamHandler) or handler.formatter is None:
            return None
        if handler.formatter._fmt != LINE_FORMAT:  # noqa: SLF001 - the format it was made with
            return None
        return handler

    def _line(self, created: float, args: tuple[Any, ...]) -> str:
        second = int(created)
        if second != self._second:
            # logging.Formatter's default asctime: local time, then ",mmm"
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        method, path, status, ms, request_id = args
        return (
            f"{self._stamp},{int((created - second) * 1000):03d} INFO {self.logger.name}: "
            f"{method} {path} {status} {ms:.1f}ms request_id={request_id}\n"
        )

    def _start(self) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="mlx-access-log", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            self.wake.wait()
            time.sleep(self.INTERVAL_S)  # let a burst gather: one wake-up for many lines
            self.wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a failing handler must not end the access log
                pass

    def _forget_thread(self) -> None:
        self.thread = None
        self.lock = threading.Lock()
        self.pending.clear()


ACCESS = AccessLog(log)
