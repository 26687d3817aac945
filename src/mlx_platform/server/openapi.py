"""Error answers for the OpenAPI document, from the table of error codes.

Each operation lists exactly the codes it can answer (`errors_for`), grouped by HTTP status:
one response per status, the envelope as its schema, a description naming each code and
when it is answered, and an example answer per code. Every operation may also meet the size
limits (server/limits.py), the last-resort 500 and a database outage (503, server/errors.py);
every one that needs a token, 401 and 403.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute

from mlx_platform.errors import (
    ERROR_SPECS,
    ForbiddenError,
    HeadersTooLargeError,
    InternalError,
    MLXError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UnauthorizedError,
)
from mlx_platform.wire import ErrorEnvelope

EVERY_OPERATION: tuple[type[MLXError], ...] = (
    PayloadTooLargeError,
    HeadersTooLargeError,
    InternalError,
    ServiceUnavailableError,
)
WITH_A_TOKEN: tuple[type[MLXError], ...] = (UnauthorizedError, ForbiddenError)


def _example(code: str) -> dict[str, Any]:
    spec = ERROR_SPECS[code]
    return {
        "summary": code,
        "value": {
            "success": False,
            "error": {
                "code": code,
                "message": spec.description[:1].upper() + spec.description[1:],
                "details": {},
                "request_id": "req_3f9a1c2b7d4e5f60",
            },
        },
    }


def errors_for(*errors: type[MLXError], token: bool = True) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that can answer `errors` (besides those every operation,
    or every operation needing a token, can answer)."""
    codes: list[str] = []
    for cls in (*errors, *(WITH_A_TOKEN if token else ()), *EVERY_OPERATION):
        if cls.code not in ERROR_SPECS:
            raise ValueError(f"{cls.__name__}: {cls.code} is not in ERROR_TABLE")
        if cls.code not in codes:
            codes.append(cls.code)
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(ERROR_SPECS[code].http_status, []).append(code)
    return {
        status: {
            "model": ErrorEnvelope,
            "description": "\n".join(
                f"- `{code}`: {ERROR_SPECS[code].description}" for code in in_status
            ),
            "content": {
                "application/json": {"examples": {code: _example(code) for code in in_status}}
            },
        }
        for status, in_status in sorted(by_status.items())
    }


def operation_id(route: APIRoute) -> str:
    """The operation id of a route that sets none: `<first tag>_<function name>`
    (`service_healthz`). Routes of the API set theirs to the SDK's method names
    (`plugins_list` is `client.plugins.list`), for code generators and readers."""
    tag = str(route.tags[0]) if route.tags else "default"
    return f"{tag}_{route.name}"
