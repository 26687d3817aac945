"""Request bodies read as JSON, and only JSON: no NaN, no Infinity.

Python's `json.loads`, which the framework reads bodies with, takes `NaN`, `Infinity` and
`-Infinity` (an extension: RFC 8259 has no such numbers) and turns a number too large for a
float, such as `1e400`, into infinity. Such a value passed the models (a float field takes
it) and then failed where it was stored: PostgreSQL's json type refuses the `NaN` that
`json.dumps` writes (an activation answered 500), and SQLite kept a document no other JSON
reader reads. Here a body holding one is not valid JSON: the route answers 422, field
`body`, with the reason (server/errors.py).

`StrictJSONRoute` is the framework's documented way to change how a route reads its request
("Custom Request and APIRoute class"); every router of the service uses it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

NOT_A_NUMBER = "NaN and Infinity are not JSON numbers, nor is a number beyond a float's range"


def strict_loads(body: bytes | str) -> Any:
    """`json.loads`, refusing what is not a JSON number (json.JSONDecodeError, as for any
    other invalid JSON)."""

    def refuse(text: str) -> json.JSONDecodeError:
        # the document as text only when refusing it: a body that passes is not decoded twice
        doc = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        return json.JSONDecodeError(NOT_A_NUMBER, doc, max(doc.find(text), 0))

    def constant(name: str) -> Any:
        raise refuse(name)

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise refuse(text)
        return value

    return json.loads(body, parse_constant=constant, parse_float=finite)


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
