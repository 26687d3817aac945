"""The HTTP/1.1 protocol `mlx serve` runs: uvicorn's httptools protocol, with a bound on the
size of a request's head.

httptools (llhttp, in C) parses about twice as fast as h11 (pure Python), and it is what
the bare-framework baseline of the API's performance targets runs. But llhttp has no limit
of its own on a head's size: uvicorn would keep every header of a 100 MB head in memory.
h11's `max_incomplete_event_size` was that limit; here the head is counted as the parser
hands it over (target, then each header), and a head over `SERVER_HEAD_LIMIT` is answered
431 in the service's envelope and the connection closed, before more of it is kept (so is
a target over 64 KiB, which httptools cannot parse). Heads between `MLX_MAX_HEADER_BYTES`
and this limit reach the service, whose limits middleware answers the same 431
(server/limits.py).
"""

from __future__ import annotations

import json
import uuid

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mlx_platform.server.errors import envelope
from mlx_platform.server.limits import SERVER_HEAD_LIMIT, head_refusal, size_text
from mlx_platform.server.request_context import reset_request_id, set_request_id


class _HeadTooLarge(Exception):
    """Raised in a parser callback: the head went over the limit (the parser stops)."""


# httptools parses a target into 16-bit offsets: a longer one cannot be served at all.
MAX_TARGET_BYTES = 65535


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    head_limit = SERVER_HEAD_LIMIT

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._refused_at = 0  # the limit the head went over, once it did

    def _count(self, n: int, limit: int) -> None:
        self._head_bytes += n
        if self._head_bytes > limit:
            self._refused_at = limit
            raise _HeadTooLarge

    def on_url(self, url: bytes) -> None:
        self._count(len(url), min(self.head_limit, MAX_TARGET_BYTES))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4, self.head_limit)  # ": " and CRLF
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request the parser refused: our 431 when the head was too
        large, else uvicorn's own plain-text 400 (a malformed request)."""
        limit = getattr(self, "_refused_at", 0)
        if not limit:
            super().send_400_response(msg)
            return
        request_id = f"req_{uuid.uuid4().hex[:16]}"
        token = set_request_id(request_id)
        try:
            body = json.dumps(envelope("HEADERS_TOO_LARGE", *head_refusal(limit))).encode()
        finally:
            reset_request_id(token)
        self.logger.warning(
            "request head over %s refused (request_id=%s)", size_text(limit), request_id
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"x-request-id: " + request_id.encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
