"""The API's routers, and how the app takes their routes.

Each router reads bodies strictly (`StrictJSONRoute`) and names its operations as the app
does (`operation_id`). The app takes their routes as they are (`add_routes`), not through
`include_router`: FastAPI (0.165) keeps an included router apart and, at the first request
that reaches it, builds each of its routes a second time (dependencies, parameter and
response models: what building the route at import already did), ~150 ms of the first
request after ready for the 15 routes in front of /readyz, and it checks the router's
version on every request. The routes are built once, at import, with the settings an
inclusion without arguments would give them (no prefix, tags or dependencies added), but
one: `app.dependency_overrides` does not reach them (they are built before the app, with
no overrides provider). Nothing in the service or its tests overrides a dependency.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from mlx_platform.server.json_body import StrictJSONRoute
from mlx_platform.server.openapi import operation_id


def api_router(prefix: str, tag: str) -> APIRouter:
    return APIRouter(
        prefix=prefix,
        tags=[tag],
        route_class=StrictJSONRoute,
        generate_unique_id_function=operation_id,
    )


def add_routes(app: FastAPI, *routers: APIRouter) -> None:
    """Every route of `routers`, in order, after the routes the app holds so far (the app's
    own added later, /healthz and the like, come after them)."""
    for router in routers:
        app.router.routes.extend(router.routes)
