"""The one place that turns errors into HTTP answers, always in the spec's envelope."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from mlx_platform.core.definition import body_problems
from mlx_platform.core.secrets import REDACTOR, redact_value
from mlx_platform.errors import MLXError
from mlx_platform.reasons import plain_reason
from mlx_platform.server.deps import authorize
from mlx_platform.server.json_body import NOT_A_NUMBER
from mlx_platform.server.request_context import current_request_id
from mlx_platform.storage.availability import (
    RETRY_AFTER_BUSY_S,
    RETRY_AFTER_OUTAGE_S,
    classify,
    reason_of,
)

log = logging.getLogger("mlx_platform.server")

_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 415: "UNSUPPORTED_MEDIA_TYPE"}


def envelope(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The error envelope. Every known secret value is masked in it, wherever it came from
    (a plugin may quote its own password in an exception message)."""
    return {
        "success": False,
        "error": {
            "code": code,
            "message": REDACTOR.redact(message),
            "details": redact_value(details or {}),
            "request_id": current_request_id(),
        },
    }


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(envelope(code, message, details), status_code=status, headers=headers)


def internal_error_envelope() -> dict[str, Any]:
    """The last-resort 500's envelope: no detail of the fault, the id it is logged under."""
    return envelope(
        "INTERNAL_ERROR",
        f"Internal error: the service logged it under request id {current_request_id()}",
    )


def unavailable_response(kind: str, what: str = "The database") -> JSONResponse:
    """503 SERVICE_UNAVAILABLE with Retry-After: `kind` "outage" (cannot be reached) or
    "busy" (could not serve this now). Nothing of the driver's message reaches the client."""
    seconds = RETRY_AFTER_OUTAGE_S if kind == "outage" else RETRY_AFTER_BUSY_S
    state = "cannot be reached" if kind == "outage" else "is busy"
    return error_response(
        503,
        "SERVICE_UNAVAILABLE",
        f"{what} {state}: try again in {seconds} s",
        {"retry_after_seconds": seconds},
        headers={"Retry-After": str(seconds)},
    )


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("query", "path", "header", "body"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_details(
    exc: RequestValidationError, more: dict[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """One entry per bad field or parameter: {name: reason}, in plain words (no regular
    expression: mlx_platform.reasons); `more`, the problems found beside the model's (a
    register body's definition checks), after them. The input is never quoted."""
    details: dict[str, str] = {}
    first_kind = "field"
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        kind = err.get("type", "")
        field = _field_name(loc)
        if kind == "json_invalid":
            field, reason = "body", "is not valid JSON"
            if (err.get("ctx") or {}).get("error") == NOT_A_NUMBER:
                reason += f": {NOT_A_NUMBER}"
        elif kind == "missing" and loc == ("body",):
            field, reason = "body", "a JSON body is required"
        else:
            reason = plain_reason(err)  # pydantic's msg never quotes the input
        if not details:
            where = loc[0] if loc else "body"
            first_kind = {"query": "query parameter", "path": "path parameter"}.get(
                str(where), "field"
            )
        details.setdefault(field, reason)
    for field, reason in (more or {}).items():
        details.setdefault(field, reason)
    first = next(iter(details), "body")
    message = f"Invalid {first_kind} '{first}': {details.get(first, 'is invalid')}"
    if len(details) > 1:
        message += f" (and {len(details) - 1} more)"
    return message, details


def _allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document lists for the request's path."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        regex, _, _ = compile_path(template)
        if regex.match(request.url.path):
            methods.update(m.upper() for m in operations if m.isalpha())
    return sorted(methods)


def _refused(request: Request) -> JSONResponse | None:
    """The token check of the route, for answers FastAPI gives before its dependencies run.

    FastAPI reads and validates the body before it runs the dependencies that check the
    token: checked here first, no one without the right token learns anything about what the
    endpoint accepts."""
    route = request.scope.get("route")
    if route is None:
        return None
    try:
        authorize(request, route)
    except MLXError as denied:
        return error_response(denied.http_status, denied.code, denied.message, denied.details)
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Exception)
    async def _fault(_request: Request, _exc: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware answers with this, then raises the error on to
        # the request context in front of the app, which logs it with its traceback.
        return JSONResponse(internal_error_envelope(), status_code=500)

    @app.exception_handler(MLXError)
    async def _mlx_error(_request: Request, exc: MLXError) -> JSONResponse:
        return error_response(
            exc.http_status, exc.code, exc.message, exc.details, headers=exc.headers or None
        )

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # The database away or refusing this request now: 503 with Retry-After, and no
        # traceback (the outage is logged once, by storage.availability). Anything else is
        # a fault of the service: the last-resort 500, logged with its traceback.
        kind = classify(exc)
        if kind is None:
            raise exc
        if kind == "busy":
            log.warning(
                "database busy in %s %s (%s): answered 503",
                request.method,
                request.url.path,
                reason_of(exc),
            )
        return unavailable_response(kind)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        denied = _refused(request)
        if denied is not None:
            return denied
        more: dict[str, str] = {}
        if request.method == "POST" and request.url.path.rstrip("/") == "/v1/plugins":
            # a register body: the definition's own checks too, so that one answer names
            # every problem (a bad version beside a bad name), not one pass at a time
            more = body_problems(exc.body)
        message, details = _validation_details(exc, more)
        return error_response(422, "VALIDATION_ERROR", message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI answers 400 when the body is not even text (bytes that are not UTF-8):
            # to the client that is one more malformed body, after the token check.
            denied = _refused(request)
            if denied is not None:
                return denied
            return error_response(
                422,
                "VALIDATION_ERROR",
                "Invalid field 'body': is not valid JSON (UTF-8 text)",
                {"body": "is not valid JSON (UTF-8 text)"},
            )
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        if exc.status_code == 404:
            message = "No such endpoint: see /docs for the API"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route that matched the path; a path
            # served by several routes (GET and POST /v1/plugins) answers all of them.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(exc.status_code, code, message, headers=headers)
