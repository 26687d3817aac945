"""`create_app`: the FastAPI application, its error handlers and its lifespan."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlx_platform import __version__
from mlx_platform.core.bootstrap import StartFailed, start_core
from mlx_platform.core.context import Core
from mlx_platform.server.docs import install_docs
from mlx_platform.server.errors import error_response, install_error_handlers
from mlx_platform.server.fast_invoke import FastInvokeMiddleware
from mlx_platform.server.fast_list import FastListMiddleware
from mlx_platform.server.limits import RequestLimitsMiddleware
from mlx_platform.server.logging_setup import configure_logging
from mlx_platform.server.middleware import ACCESS, RequestContextMiddleware, Serving
from mlx_platform.server.openapi import operation_id
from mlx_platform.server.prometheus import render as render_prometheus
from mlx_platform.server.read_cache import ReadCacheMiddleware
from mlx_platform.server.routes import audit, nodes, plugins
from mlx_platform.server.routing import add_routes
from mlx_platform.server.ui import install_ui
from mlx_platform.settings import Settings
from mlx_platform.storage.availability import RETRY_AFTER_OUTAGE_S
from mlx_platform.wire import ErrorEnvelope

log = logging.getLogger("mlx_platform.server")

DESCRIPTION = """
Register, discover, validate, configure, run, watch and measure plugins.

Every endpoint under `/v1/plugins` needs `Authorization: Bearer <token>` (create one with
`mlx token create`). Scopes: `plugins:read` (every GET), `plugins:write` (activate,
deactivate, configuration, validate-composition, discover, invoke), `plugins:admin`
(everything, including register, unregister and discover with auto_register).
Every error answer is `{"success": false, "error": {"code", "message", "details", "request_id"}}`.
"""

# examples of the answers of /healthz and /metrics in the OpenAPI document
HEALTHZ_EXAMPLE = {"status": "ok", "version": __version__, "database": "sqlite"}
PROMETHEUS_EXAMPLE = """\
# HELP mlx_plugin_active 1 when the plugin's stored status is active
# TYPE mlx_plugin_active gauge
mlx_plugin_active{plugin_id="plugin_sqlite_source_001"} 1.0
# HELP mlx_plugin_instances Live plugin instances in this replica
# TYPE mlx_plugin_instances gauge
mlx_plugin_instances{node="vm-651-8dbdd8"} 1.0
"""


class ServiceApp(FastAPI):
    """The FastAPI app behind the service's own pure ASGI layers (`front`, set by create_app).

    Starlette puts user middleware inside its ServerErrorMiddleware and FastAPI's own layers,
    which every request crosses; a read answered from kept bytes needs none of them (they cost
    about as much as the bare framework's whole request), so the service's layers run first
    and hand on to the framework (`framework`) only what they do not answer themselves."""

    front: ASGIApp | None = None
    read_cache: ReadCacheMiddleware | None = None
    fast_invoke: FastInvokeMiddleware | None = None
    fast_list: FastListMiddleware | None = None
    # the lifespan logged why the start failed, in one line (`lifespan` in create_app)
    start_failure_logged = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self  # as Starlette sets it, for the layers in front
        if scope["type"] == "lifespan":
            send = self._without_start_traceback(send)
        await (self.front or self.framework)(scope, receive, send)

    def _without_start_traceback(self, send: Send) -> Send:
        """Starlette sends the traceback of a failed start as its text, which uvicorn logs:
        left out when the lifespan has said why in one line (uvicorn still ends the start)."""

        async def sending(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and self.start_failure_logged:
                message = {"type": message["type"], "message": ""}
            await send(message)

        return sending

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(self, scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    core = Core.create(settings)
    core.address = f"http://{settings.host}:{settings.port}"
    state: dict[str, Any] = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            running = await run_in_threadpool(start_core, core)
        except StartFailed as exc:
            # One line naming the step and the reason (no secret: core.bootstrap); the
            # traceback only for whoever asks for it (MLX_LOG_LEVEL=DEBUG).
            log.error("mlx-platform could not start: %s", exc)
            log.debug("the failure that stopped the start", exc_info=exc.__cause__)
            core.db.dispose()
            if isinstance(app, ServiceApp):
                app.start_failure_logged = True
            raise
        # Everything loaded so far (the framework, the models, the routes: most of the heap)
        # lives as long as the process: moved out of the collector's sight, a full collection
        # under load walks only what requests made, not the whole heap (~30-50 ms here).
        # Not collected first: a full collection here walked the whole heap (~0.1 s of the
        # start) to find ~2,500 unreachable objects of the imports, which stay frozen (well
        # under 1 MB). `mlx serve` disables the collector while it loads: enabled from here.
        gc.freeze()
        gc.enable()
        state["ready"] = True
        log.info("mlx-platform %s ready (database: %s)", __version__, core.db.dialect)
        try:
            yield
        finally:
            state["ready"] = False
            await run_in_threadpool(running.stop, 10.0)
            core.db.dispose()
            ACCESS.flush()

    app = ServiceApp(
        title="mlx-platform plugin management API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        docs_url=None,  # served by install_docs from shipped assets, not a CDN
        redoc_url=None,
    )
    app.state.core = core
    install_error_handlers(app)
    # In front of the framework's own layers (ServiceApp): the request context (request id,
    # access line, last-resort 500), then the size limits (refused before a token is checked
    # or a body read), then the read cache (a kept answer is served only after those two
    # have seen the request, like any other; it counts every invocation as a change), then
    # the lists and the invocations that need no route.
    alive = orjson.dumps({"status": "ok", "version": __version__, "database": core.db.dialect})
    serving = Serving()
    app.fast_invoke = FastInvokeMiddleware(app.framework, core=core, serving=serving)
    app.fast_list = FastListMiddleware(app.fast_invoke, core=core)
    cache = ReadCacheMiddleware(
        app.fast_list,
        core=core,
        fixed={"/healthz": lambda: alive if state["ready"] else None},  # else the route's 503
    )
    limits = RequestLimitsMiddleware(
        cache, max_body_bytes=settings.max_body_bytes, max_header_bytes=settings.max_header_bytes
    )
    app.front = RequestContextMiddleware(limits, node_id=core.node_id, serving=serving)
    app.read_cache = cache
    add_routes(app, plugins.router, nodes.router, audit.router)
    install_docs(app)
    install_ui(app)

    @app.get(
        "/healthz",
        tags=["service"],
        summary="Liveness (no auth)",
        description="200 while the process runs and serves, whatever the state of the "
        "database (a restart would not bring that back): for a liveness probe. Whether this "
        "replica can serve requests is `/readyz`.",
        responses={
            200: {
                "description": "Alive",
                "content": {"application/json": {"example": HEALTHZ_EXAMPLE}},
            }
        },
    )
    async def healthz() -> Any:  # no I/O: on the event loop, not a thread pool's round trip
        if not state["ready"]:
            return error_response(503, "SERVICE_UNAVAILABLE", "The service is starting")
        return {"status": "ok", "version": __version__, "database": core.db.dialect}

    @app.get(
        "/readyz",
        tags=["service"],
        summary="Readiness (no auth)",
        description="200 when this replica can serve requests: started, and its database "
        "answers (`SELECT 1`, probed at most once a second whoever asks, answered within "
        "2 s). Else 503 `SERVICE_UNAVAILABLE` with `Retry-After`: for a load balancer's "
        "readiness check.",
        responses={
            200: {
                "description": "Ready",
                "content": {
                    "application/json": {
                        "example": {"status": "ready", "version": __version__, "database": "sqlite"}
                    }
                },
            },
            503: {
                "model": ErrorEnvelope,
                "description": "SERVICE_UNAVAILABLE: starting, or the database cannot be reached",
            },
        },
    )
    def readyz() -> Any:
        if not state["ready"]:
            return error_response(
                503, "SERVICE_UNAVAILABLE", "The service is starting", headers={"Retry-After": "1"}
            )
        problem = core.db.readiness()
        if problem is not None:
            return error_response(
                503,
                "SERVICE_UNAVAILABLE",
                f"Not ready: {problem}",
                {"database": problem, "retry_after_seconds": RETRY_AFTER_OUTAGE_S},
                headers={"Retry-After": str(RETRY_AFTER_OUTAGE_S)},
            )
        return {"status": "ready", "version": __version__, "database": core.db.dialect}

    @app.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics (no auth, for scraping)",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"example": PROMETHEUS_EXAMPLE}}}},
    )
    def prometheus_metrics() -> PlainTextResponse:
        return PlainTextResponse(render_prometheus(core), media_type=CONTENT_TYPE_LATEST)

    return app
