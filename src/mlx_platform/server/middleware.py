"""Request ids, access log lines, and the last-resort 500 in the envelope.

A pure ASGI middleware (not BaseHTTPMiddleware) so that it sees every answer, including the
ones produced by the 500 path, and adds `X-Request-ID` to all of them.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlx_platform.server.errors import envelope
from mlx_platform.server.request_context import reset_request_id, set_request_id

log = logging.getLogger("mlx_platform.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, node_id: str = "") -> None:
        self.app = app
        # every answer names the replica that gave it (X-MLX-Node), for operators and tests
        self.node_header = (b"x-mlx-node", node_id.encode()) if node_id else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for key, value in scope.get("headers", []):
            if key == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if _VALID_ID.match(incoming) else f"req_{uuid.uuid4().hex[:16]}"
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
                body = json.dumps(
                    envelope(
                        "INTERNAL_ERROR",
                        f"Internal error: the service logged it under request id {request_id}",
                    )
                ).encode()
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
            elapsed = (time.perf_counter() - started) * 1000
            log.info(
                "%s %s %s %.1fms request_id=%s",
                scope.get("method"),
                scope.get("path"),
                status["code"],
                elapsed,
                request_id,
            )
            reset_request_id(token)
