"""`POST /v1/plugins/{id}/invoke` answered in front of the framework, when nothing about the
call needs it (docs/decisions.md, "The API at catalogue scale").

An invocation of a plugin in a worker process costs the worker ~40 us; FastAPI's routing,
dependencies and body model cost several times that. This layer answers the call itself
when every part of it is plain:

- a token (checked by the app's TokenVerifier, whose cache of verified tokens makes that a
  lookup) with `plugins:write`;
- a JSON body that the route's model would take as it is: an object of `operation` (a
  string of 1-200 characters), `arguments` (an object) and `timeout` (a number in
  (0, 3600]), nothing else, nested no deeper than the model allows;
- a plugin id of 1-160 characters without control characters, whose started instance in a
  worker process this replica knows without the database (lifecycle.ready_instance).

Anything else goes to the route, with the body it was sent, so every refusal (401, 403,
422, 404, 409...) is the route's own. The call itself is server/invocation.py's `invoke`,
the route's too; its errors are answered in the envelope as the route's handlers answer
them.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlx_platform.core import lifecycle
from mlx_platform.core.context import Core
from mlx_platform.errors import MLXError
from mlx_platform.server.deps import holds_scope
from mlx_platform.server.errors import error_response
from mlx_platform.server.invocation import invoke
from mlx_platform.server.middleware import Serving
from mlx_platform.wire import MAX_JSON_DEPTH, _too_deep  # the model's own depth check

_INVOKE = re.compile(r"^/v1/plugins/([^/\x00-\x1f\x7f-\x9f]{1,160})/invoke$")
_FIELDS = frozenset({"operation", "arguments", "timeout"})
_JSON = (b"content-type", b"application/json")


class FrontLayer:
    """A layer in front of the framework that answers some requests itself (`answered`
    counts them) and hands every other to `app`."""

    def __init__(self, app: ASGIApp, core: Core) -> None:
        self.app = app
        self.core = core
        self.answered = 0


class FastInvokeMiddleware(FrontLayer):
    """`serving`: the app's count of requests in flight. While the call is the only one,
    the event loop may poll for the worker's answer for up to `MLX_CALL_SPIN_US` rather than
    sleep (runtime/channel.py; docs/decisions.md, "Waiting for a worker's answer")."""

    def __init__(self, app: ASGIApp, core: Core, serving: Serving) -> None:
        super().__init__(app, core)
        self.serving = serving
        self.spin_s = core.settings.call_spin_us / 1e6

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match = _INVOKE.match(scope["path"])
        if match is None or not self._may_write(scope):
            await self.app(scope, receive, send)
            return
        body, more = await _read_body(receive)
        call = None if more else _plain_call(body)
        plugin_id = match.group(1)
        instance = None if call is None else lifecycle.ready_instance(self.core, plugin_id)
        if call is None or instance is None:
            await self.app(scope, _replay(body, receive, more), send)
            return
        operation, arguments, timeout = call
        if timeout is None:
            timeout = self.core.settings.invoke_timeout
        try:
            spin = self.spin_s if self.serving.count == 1 else 0.0
            content = await invoke(
                self.core, plugin_id, operation, arguments, timeout, instance, spin
            )
        except MLXError as exc:
            self.answered += 1
            # the answer the route's handler gives (server/errors.py)
            refusal = error_response(
                exc.http_status, exc.code, exc.message, exc.details, headers=exc.headers or None
            )
            await refusal(scope, receive, send)
            return
        self.answered += 1
        await send_json(send, content)

    def _may_write(self, scope: Scope) -> bool:
        headers = dict(reversed(scope["headers"]))  # the first of a repeated header, as routes read
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        return content_type == b"application/json" and holds_scope(scope, headers, "plugins:write")


async def send_json(send: Send, content: bytes) -> None:
    """A 200 answer of JSON bytes, with the headers a route's `Response` sends."""
    headers = [_JSON, (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": content})


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The body as far as the first message that ends it; (what was read, True) when the
    client went away or sent something else first (then the route reads on)."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts), True
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts), False


def _replay(body: bytes, receive: Receive, more: bool) -> Receive:
    """A receive that gives the route the body already read, then what is left."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


def _plain_call(body: bytes) -> tuple[str, dict[str, Any], float | None] | None:
    """(operation, arguments, timeout) when the route's model would take the body as it is;
    None when the route is to judge it."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not data.keys() <= _FIELDS:
        return None
    operation = data.get("operation")
    arguments = data.get("arguments", {})
    timeout = data.get("timeout")
    if not isinstance(operation, str) or not 1 <= len(operation) <= 200:
        return None
    if not isinstance(arguments, dict) or _too_deep(arguments, MAX_JSON_DEPTH):
        return None
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600
    ):
        return None
    return operation, arguments, None if timeout is None else float(timeout)
