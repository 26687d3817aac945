"""The hot reads answered from bytes: `GET /v1/plugins` (any query) and `GET /v1/plugins/{id}`.

A pure ASGI layer in front of the routes (docs/decisions.md, "The API at catalogue scale"):
the bare framework serves a request in ~35 us on this kind of machine, less than FastAPI's
dependency graph, a thread-pool hop, a query and the answer's models cost. So a read whose
answer is known is answered here, with the bytes the route wrote for it.

- The token is checked by the app's TokenVerifier (its cache of verified tokens makes that a
  dictionary lookup) and must carry `plugins:read`; any other case (no token, a bad one, a
  missing scope, a HEAD, another path) goes to the route, which answers it as always.
- An answer (200 only) is kept by path and query string, stamped with two counters read
  *before* the route read anything:
  - the *decisive* one: requests that may change something, through this replica (any method
    but GET and HEAD, invocations included: a plugin's figures change; counted when the
    answer starts, after the route committed, and again when it ends), and change
    notifications (`Database.announcement`: desired-state changes on any replica). An answer
    from before such a change is never served again: a client that changed something reads
    its change at once, here or on a replica that heard of it;
  - the database's `generation` (`Database.changed`: after every write transaction of this
    process: heartbeats, health checks, observed states, metrics flushes). An answer older
    than that, or older than `FRESH_S` (what a plugin's shown status derives from time, and
    what other replicas observe of their own instances), is read again by the next request,
    which waits for the route; the requests that come meanwhile get the kept answer (for at
    most `STALE_S` after its reads). So a background write never makes every connection
    wait, and a client that asks now and then always gets a fresh answer.
- A miss that must wait is computed once: the other requests for the same answer wait for
  it (32 connections missing at once would otherwise make 32 route calls).
- At most `MAX_BYTES` in all, answers of at most `MAX_ANSWER_BYTES`; the whole cache is
  dropped when full (refilling costs one route call per answer).

Why not an HTTP cache (ETag, Cache-Control): the clients that matter (the SDK, the CLI,
scripts on 127.0.0.1) do not cache, and the replicas would still compute every answer.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlx_platform.core.context import Core
from mlx_platform.server.deps import holds_scope

FRESH_S = 1.0
STALE_S = 3.0
MAX_BYTES = 16 * 1024 * 1024
MAX_ANSWER_BYTES = 1024 * 1024
SAFE_METHODS = frozenset({"GET", "HEAD"})
_LIST = "/v1/plugins"
# one plugin: /v1/plugins/<id>, and not the routes that share that shape
_ONE = re.compile(r"^/v1/plugins/[^/]+$")
_NOT_A_PLUGIN = frozenset({"/v1/plugins/discover"})
_JSON = (b"content-type", b"application/json")
_NO_CACHE = re.compile(r"(^|[\s,])no-(cache|store)([\s,=]|$)", re.IGNORECASE)

Stamp = tuple[int, int]  # (local changes, announcements)


class _Answer:
    __slots__ = ("decisive", "generation", "read_at", "headers", "body")

    def __init__(
        self,
        decisive: Stamp,
        generation: int,
        read_at: float,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        self.decisive = decisive
        self.generation = generation
        self.read_at = read_at
        self.headers = headers  # the route's own: the outer layers add theirs to each answer
        self.body = body


class ReadCacheMiddleware:
    def __init__(
        self, app: ASGIApp, core: Core, fixed: dict[str, Callable[[], bytes | None]] | None = None
    ) -> None:
        self.app = app
        # answers that need no token and no database, by path: a function gives the JSON
        # body, or None when the route is to answer (e.g. /healthz while starting)
        self.fixed = fixed or {}
        self.db = core.db
        self.changes = 0  # requests through this replica that may have changed something
        self.answers: dict[str, _Answer] = {}
        self.size = 0
        self.filling: dict[str, tuple[Stamp, asyncio.Future[None]]] = {}
        self.refreshing: set[asyncio.Task[None]] = set()
        self.counts = {"fresh": 0, "stale": 0, "miss": 0}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in SAFE_METHODS:
            await self._change(scope, receive, send)
            return
        path: str = scope["path"]
        fixed = self.fixed.get(path)
        if fixed is not None and scope["method"] == "GET":
            body = fixed()
            if body is not None:
                await _serve_bytes(body, send)
                return
        if scope["method"] != "GET" or not _cacheable(path) or not self._may_read(scope):
            await self.app(scope, receive, send)
            return
        query: bytes = scope["query_string"]
        key = f"{path}?{query.decode('latin-1')}" if query else path
        decisive = (self.changes, self.db.announcement)
        answer = self.answers.get(key)
        if answer is not None and answer.decisive == decisive:
            age = time.monotonic() - answer.read_at
            if answer.generation == self.db.generation and age < FRESH_S:
                self.counts["fresh"] += 1
                await _serve(answer, send)
                return
            if age < STALE_S and key in self.filling:
                # another request is reading it again: this one has the kept answer now
                self.counts["stale"] += 1
                await _serve(answer, send)
                return
            if age < STALE_S:  # this request reads it again, and waits for it
                self.counts["miss"] += 1
                await self._fill(key, decisive, scope, receive, send)
                return
        self.counts["miss"] += 1
        pending = self.filling.get(key)
        if pending is not None and pending[0] == decisive:
            # the same answer is being read, after every change this request could know of
            await asyncio.shield(pending[1])
            answer = self.answers.get(key)
            if answer is not None and answer.decisive == decisive:
                await _serve(answer, send)
                return
            await self.app(scope, receive, send)  # the route did not answer 200: ask it
            return
        await self._fill(key, decisive, scope, receive, send)

    async def _change(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.changes += 1  # the route has committed: nothing kept before is served
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            self.changes += 1  # and anything read while it ran is not kept

    def _may_read(self, scope: Scope) -> bool:
        """Whether a kept answer may be given: a token with `plugins:read`, and no request
        for a fresh answer (`Cache-Control: no-cache` or `no-store`, or `Pragma: no-cache`:
        RFC 9111, 5.2.1: that request goes to the route)."""
        headers = dict(reversed(scope["headers"]))  # the first of a repeated header, as routes read
        for name in (b"cache-control", b"pragma"):
            value = headers.get(name)
            if value is not None and _NO_CACHE.search(value.decode("latin-1")):
                return False
        return holds_scope(scope, headers, "plugins:read")

    async def _fill(
        self, key: str, decisive: Stamp, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Answer through the route, and keep its answer stamped with the counters as they
        were before the route read anything."""
        done = asyncio.get_running_loop().create_future()
        self.filling[key] = (decisive, done)
        generation = self.db.generation
        read_at = time.monotonic()
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        parts: list[bytes] = []
        whole = True

        async def keep(message: Message) -> None:
            nonlocal status, headers, whole
            if message["type"] == "http.response.start":
                # copied before the outer layers add this request's id to them
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body" and whole:
                parts.append(message.get("body", b""))
                if message.get("more_body", False):
                    whole = False  # a streamed answer: not kept
            await send(message)

        try:
            await self.app(scope, receive, keep)
            body = b"".join(parts)
            if status == 200 and whole and len(body) <= MAX_ANSWER_BYTES:
                self._keep(key, _Answer(decisive, generation, read_at, headers, body))
        finally:
            if self.filling.get(key, (None, None))[1] is done:
                del self.filling[key]
            done.set_result(None)

    def _keep(self, key: str, answer: _Answer) -> None:
        old = self.answers.pop(key, None)
        if old is not None:
            self.size -= len(old.body)
        if self.size + len(answer.body) > MAX_BYTES:
            self.answers.clear()
            self.size = 0
        self.answers[key] = answer
        self.size += len(answer.body)


async def _serve(answer: _Answer, send: Send) -> None:
    await _serve_bytes(answer.body, send, answer.headers)


async def _serve_bytes(
    body: bytes, send: Send, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A 200 answer of JSON `body` (with the route's own `headers`, when kept). A new message
    each time: the outer layers add their headers to the one they get."""
    if headers is None:
        headers = [(b"content-length", str(len(body)).encode()), _JSON]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _cacheable(path: str) -> bool:
    if path == _LIST:
        return True
    return path.startswith("/v1/plugins/") and path not in _NOT_A_PLUGIN and bool(_ONE.match(path))
