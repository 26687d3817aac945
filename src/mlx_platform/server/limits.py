"""Size limits applied before anything of a request is read: its head and its body.

A pure ASGI middleware, inside `RequestContextMiddleware` (so its answers carry the request
id and reach the access log) and outside everything else: a request over a limit is refused
before the token is checked and before the body is parsed.

- The head (target and headers) over `MLX_MAX_HEADER_BYTES`: 431 `HEADERS_TOO_LARGE`.
  Heads over `SERVER_HEAD_LIMIT` are refused by the HTTP protocol itself, with the same 431,
  before they are kept whole (server/http_protocol.py).
- A body whose Content-Length is over `MLX_MAX_BODY_BYTES`: 413 `PAYLOAD_TOO_LARGE` at once,
  none of it read. A body without a Content-Length (chunked) is counted while the
  application reads it; the chunk that crosses the limit gets the 413 and the application
  is told the client went away. Nothing beyond the limit is ever held in memory.

Written by hand, not Starlette's `RequestBodyLimitMiddleware`: that one answers in plain
text, raises an `HTTPException` through the application's handlers (which would answer
it as a generic error) and lets the application run (token check included) before it
refuses a declared Content-Length.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlx_platform.server.errors import envelope

# The head size above which the HTTP protocol refuses a request itself (server/http_protocol.py).
SERVER_HEAD_LIMIT = 1024 * 1024


def size_text(n: int) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


def head_refusal(limit_bytes: int) -> tuple[str, dict[str, Any]]:
    """The message and details of 431 HEADERS_TOO_LARGE for a head over `limit_bytes`."""
    limit = size_text(limit_bytes)
    return (
        f"The request headers are too large: the limit is {limit} for the target and "
        "headers together",
        {"headers": f"larger than {limit}", "limit_bytes": limit_bytes},
    )


def head_size(scope: Scope) -> int:
    """The request head's size as it came on the wire, near enough: target and headers."""
    target = len(scope.get("raw_path") or scope.get("path", "").encode()) + len(
        scope.get("query_string", b"")
    )
    return target + sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))


def _body_framing(scope: Scope) -> tuple[int | None, bool]:
    """Content-Length as a number (None: absent or malformed), and whether the body is sent
    with a Transfer-Encoding, in one pass over the headers."""
    declared: int | None = None
    chunked = False
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = None
                chunked = True  # malformed: count what arrives rather than trust it
        elif key == b"transfer-encoding":
            chunked = True
    return declared, chunked


async def _answer(
    send: Send, status: int, code: str, message: str, details: dict[str, Any]
) -> None:
    body = json.dumps(envelope(code, message, details)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is not wanted: the server may close rather than read it.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if head_size(scope) > self.max_header_bytes:
            await _answer(send, 431, "HEADERS_TOO_LARGE", *head_refusal(self.max_header_bytes))
            return
        declared, chunked = _body_framing(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(send)
            return
        if not chunked:
            # No Transfer-Encoding: the body is the Content-Length, already checked, and the
            # HTTP server delivers no more than that; without either, there is no body (RFC
            # 9112, 6.3). Only a chunked body is counted as the application reads it.
            await self.app(scope, receive, send)
            return
        await _LimitedRequest(self, send)(scope, receive)

    async def _too_large(self, send: Send) -> None:
        limit = size_text(self.max_body_bytes)
        await _answer(
            send,
            413,
            "PAYLOAD_TOO_LARGE",
            f"The request body is too large: the limit is {limit}",
            {"body": f"larger than {limit}", "limit_bytes": self.max_body_bytes},
        )


class _LimitedRequest:
    """One request whose body is counted as the application reads it."""

    def __init__(self, limits: RequestLimitsMiddleware, send: Send) -> None:
        self.limits = limits
        self.send = send
        self.received = 0
        self.started = False
        self.refused = False  # the body went over the limit: no more of it is read
        self.answered = False  # ...and the 413 went out (the application had not answered yet)

    async def __call__(self, scope: Scope, receive: Receive) -> None:
        async def receive_limited() -> Message:
            if self.refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limits.max_body_bytes:
                    self.refused = True
                    if not self.started:
                        self.answered = True
                        await self.limits._too_large(self.send)
                    # The application stops reading: to it, the client has gone.
                    return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message: Message) -> None:
            if self.answered:
                return  # the client has its 413; the application's answer is dropped
            if message["type"] == "http.response.start":
                self.started = True
            await self.send(message)

        try:
            await self.limits.app(scope, receive_limited, send_unless_refused)
        except Exception:
            if self.answered:
                return  # the application failed on the body it was denied: already answered
            raise
