"""`GET /v1/plugins` answered in front of the framework, when every part of the request is
plain (docs/decisions.md, "The API at catalogue scale"; issue 13).

The list's own work (the query, the page's bytes: routes/plugins.py `list_page`) costs about
as much as FastAPI's routing, query models, dependency graph and exception layers around it
(~1-2 ms of a request on this kind of machine). This layer answers the list itself when the
route would take the request as it is:

- a token (checked by the app's TokenVerifier, whose cache of verified tokens makes that a
  lookup) with `plugins:read`;
- a query string whose parameters are each one of the route's, given once, with a value the
  route's query models take unchanged: `type` (1-64 characters) and `category` (1-100) and
  `search` (1-200) without control characters, `status` and `sort` among their values
  (`sort` not with `search`), `page` (1-1,000,000) and `limit` (1-100) as plain decimals.

Anything else goes to the route, untouched (a GET has no body to replay), so every refusal
(401, 403, 422) and every odd spelling of a value is the route's own. A failure of the list
itself (the database away, say) also hands the request to the route, which fails the same
way and answers it with its handlers, in the envelope: nothing has been sent by then.
"""

from __future__ import annotations

import re
from typing import Any, get_args
from urllib.parse import parse_qsl

import anyio.to_thread
from starlette.types import Receive, Scope, Send

from mlx_platform.server.deps import holds_scope
from mlx_platform.server.fast_invoke import FrontLayer, send_json
from mlx_platform.server.routes.plugins import (
    CONTROL,
    LIST_LIMIT_MAX,
    LIST_PAGE_MAX,
    LIST_TEXT_LIMITS,
    ListStatus,
    list_page,
)
from mlx_platform.storage.listing import PluginFilter
from mlx_platform.wire import PluginSort

_LIST = "/v1/plugins"
_STATUSES = frozenset(get_args(ListStatus))
_SORTS = frozenset(get_args(PluginSort))
_DECIMAL = re.compile(r"[1-9][0-9]{0,6}")


class FastListMiddleware(FrontLayer):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != _LIST:
            await self.app(scope, receive, send)
            return
        asked = plain_query(scope.get("query_string", b""))
        if asked is None or not self._may_read(scope):
            await self.app(scope, receive, send)
            return
        flt, page, limit, sort = asked
        try:
            content = await anyio.to_thread.run_sync(list_page, self.core, flt, page, limit, sort)
        except Exception:  # noqa: BLE001 - the route runs it again and answers the failure
            await self.app(scope, receive, send)
            return
        self.answered += 1
        await send_json(send, content)

    def _may_read(self, scope: Scope) -> bool:
        headers = dict(reversed(scope["headers"]))  # the first of a repeated header, as routes read
        return holds_scope(scope, headers, "plugins:read")


def plain_query(
    query_string: bytes,
) -> tuple[PluginFilter, int, int, str | None] | None:
    """(filter, page, limit, sort) when the route's query models would take `query_string`
    as it is; None when the route is to judge it. Decoded as Starlette decodes it."""
    values: dict[str, str] = {}
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key in values or not value:
            return None
        values[key] = value
    number: dict[str, int] = {"page": 1, "limit": 20}
    for key, value in values.items():
        if key in LIST_TEXT_LIMITS:
            if len(value) > LIST_TEXT_LIMITS[key] or CONTROL.search(value):
                return None
        elif key == "status":
            if value not in _STATUSES:
                return None
        elif key == "sort":
            if value not in _SORTS:
                return None
        elif key in number:
            if not _DECIMAL.fullmatch(value):
                return None
            number[key] = int(value)
        else:
            return None
    if number["page"] > LIST_PAGE_MAX or number["limit"] > LIST_LIMIT_MAX:
        return None
    if "sort" in values and "search" in values:
        return None  # the route's 422
    get: Any = values.get
    flt = PluginFilter(
        type=get("type"), status=get("status"), category=get("category"), search=get("search")
    )
    return flt, number["page"], number["limit"], get("sort")
