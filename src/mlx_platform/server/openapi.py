"""Error answers for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from mlx_platform.wire import ErrorEnvelope

_DESCRIPTIONS = {
    401: "UNAUTHORIZED: no token, or a bad one",
    403: "FORBIDDEN: the token lacks the scope",
    404: "PLUGIN_NOT_FOUND",
    409: "PLUGIN_CONFLICT, PLUGIN_ALREADY_EXISTS, DEPENDENCY_MISSING, INSUFFICIENT_RESOURCES, "
    "INVALID_STATE or PLUGIN_CODE_CHANGED",
    422: "VALIDATION_ERROR, INVALID_CONFIGURATION or INVALID_ARGUMENTS",
    500: "INTERNAL_ERROR",
    424: "PLUGIN_HEALTH_CHECK_FAILED (could not load, start or pass a health check) or "
    "PLUGIN_EXECUTION_ERROR (the plugin's code raised)",
    504: "OPERATION_TIMEOUT",
    413: "PAYLOAD_TOO_LARGE: the body is over MLX_MAX_BODY_BYTES (refused before it is read)",
    431: "HEADERS_TOO_LARGE: the headers are over MLX_MAX_HEADER_BYTES",
    503: "SERVICE_UNAVAILABLE: the database cannot be reached (or is busy): try again after "
    "the Retry-After header's seconds",
}


def errors_for(*statuses: int) -> dict[int | str, dict[str, Any]]:
    # every request may meet the size limits (server/limits.py), the last-resort 500 and a
    # database outage (503, server/errors.py)
    return {
        s: {"model": ErrorEnvelope, "description": _DESCRIPTIONS[s]}
        for s in (*statuses, 413, 431, 500, 503)
    }
