"""The error tree shared by the service and the SDK.

    MLXError                       every error the API can answer (has `code` and `http_status`)
     ├── PluginNotFoundError            PLUGIN_NOT_FOUND            404
     ├── PluginConflictError            PLUGIN_CONFLICT             409
     ├── InvalidConfigurationError      INVALID_CONFIGURATION       422
     ├── PluginHealthCheckFailedError   PLUGIN_HEALTH_CHECK_FAILED  424
     ├── InsufficientResourcesError     INSUFFICIENT_RESOURCES      409
     ├── DependencyMissingError         DEPENDENCY_MISSING          409
     ├── PluginAlreadyExistsError       PLUGIN_ALREADY_EXISTS       409
     ├── InvalidStateError              INVALID_STATE               409
     ├── PluginCodeChangedError         PLUGIN_CODE_CHANGED         409
     ├── OperationNotFoundError         OPERATION_NOT_FOUND         404
     ├── InvalidArgumentsError          INVALID_ARGUMENTS           422
     ├── OperationTimeoutError          OPERATION_TIMEOUT           504
     ├── PluginExecutionError           PLUGIN_EXECUTION_ERROR      424
     ├── ValidationError                VALIDATION_ERROR            422
     ├── PayloadTooLargeError           PAYLOAD_TOO_LARGE           413
     ├── HeadersTooLargeError           HEADERS_TOO_LARGE           431
     ├── UnauthorizedError              UNAUTHORIZED                401
     ├── ForbiddenError                 FORBIDDEN                   403
     ├── RateLimitedError               RATE_LIMITED                429
     ├── ServiceUnavailableError        SERVICE_UNAVAILABLE         503
     └── InternalError                  INTERNAL_ERROR              500
    MLXConnectionError             the service could not be reached (SDK only)
     └── MLXTimeoutError

`core` raises these knowing nothing of HTTP; the server maps `code` to its status in one
place; the SDK maps the `code` of an error answer back to the class.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MLXError(Exception):
    """An error answered by the API, in the envelope's terms."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    http_status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        request_id: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.request_id = request_id
        self.status_code = status_code if status_code is not None else self.http_status

    def __str__(self) -> str:
        suffix = f" (request_id={self.request_id})" if self.request_id else ""
        return f"{self.code}: {self.message}{suffix}"

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides the envelope: `Retry-After` (seconds) when
        `details.retry_after` says how long to wait (RATE_LIMITED, SERVICE_UNAVAILABLE)."""
        wait = self.details.get("retry_after")
        if isinstance(wait, int) and not isinstance(wait, bool) and wait >= 0:
            return {"Retry-After": str(wait)}
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "request_id": self.request_id,
        }


class PluginNotFoundError(MLXError):
    code = "PLUGIN_NOT_FOUND"
    http_status = 404


class PluginConflictError(MLXError):
    code = "PLUGIN_CONFLICT"
    http_status = 409


class InvalidConfigurationError(MLXError):
    code = "INVALID_CONFIGURATION"
    http_status = 422


class PluginHealthCheckFailedError(MLXError):
    """The plugin could not be loaded or started, or failed its health check. 424 Failed
    Dependency, not a 5xx: the service worked; the plugin it depends on did not (and generic
    clients must not retry it as an outage)."""

    code = "PLUGIN_HEALTH_CHECK_FAILED"
    http_status = 424


class InsufficientResourcesError(MLXError):
    code = "INSUFFICIENT_RESOURCES"
    http_status = 409


class DependencyMissingError(MLXError):
    code = "DEPENDENCY_MISSING"
    http_status = 409


class PluginAlreadyExistsError(MLXError):
    code = "PLUGIN_ALREADY_EXISTS"
    http_status = 409


class InvalidStateError(MLXError):
    """The plugin is not in a state that allows the operation (activate an active one...)."""

    code = "INVALID_STATE"
    http_status = 409


class PluginCodeChangedError(MLXError):
    """The plugin's files differ from those pinned when it was registered: activation is
    refused until it is registered again (details name the changed, added, removed files)."""

    code = "PLUGIN_CODE_CHANGED"
    http_status = 409


class OperationNotFoundError(MLXError):
    """The plugin has no `@operation` of that name."""

    code = "OPERATION_NOT_FOUND"
    http_status = 404


class InvalidArgumentsError(MLXError):
    """The arguments do not fit the operation's signature."""

    code = "INVALID_ARGUMENTS"
    http_status = 422


class OperationTimeoutError(MLXError):
    code = "OPERATION_TIMEOUT"
    http_status = 504


class PluginExecutionError(MLXError):
    """The plugin's own code raised: the message is the plugin's, secrets masked."""

    code = "PLUGIN_EXECUTION_ERROR"
    http_status = 424


class ValidationError(MLXError):
    code = "VALIDATION_ERROR"
    http_status = 422


class PayloadTooLargeError(MLXError):
    """The request body is larger than the service accepts (`MLX_MAX_BODY_BYTES`); refused
    before any of it is read."""

    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class HeadersTooLargeError(MLXError):
    """The request's headers (with its target) are larger than the service accepts."""

    code = "HEADERS_TOO_LARGE"
    http_status = 431


class UnauthorizedError(MLXError):
    code = "UNAUTHORIZED"
    http_status = 401


class ForbiddenError(MLXError):
    code = "FORBIDDEN"
    http_status = 403


class RateLimitedError(MLXError):
    code = "RATE_LIMITED"
    http_status = 429


class ServiceUnavailableError(MLXError):
    code = "SERVICE_UNAVAILABLE"
    http_status = 503


class InternalError(MLXError):
    code = "INTERNAL_ERROR"
    http_status = 500


class MLXConnectionError(Exception):
    """The service could not be reached: refused, reset, DNS, TLS. Raised by the SDK."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url


class MLXTimeoutError(MLXConnectionError):
    """The service did not answer in time."""


ERROR_CLASSES: dict[str, type[MLXError]] = {
    cls.code: cls
    for cls in (
        PluginNotFoundError,
        PluginConflictError,
        InvalidConfigurationError,
        PluginHealthCheckFailedError,
        InsufficientResourcesError,
        DependencyMissingError,
        PluginAlreadyExistsError,
        InvalidStateError,
        PluginCodeChangedError,
        OperationNotFoundError,
        InvalidArgumentsError,
        OperationTimeoutError,
        PluginExecutionError,
        ValidationError,
        PayloadTooLargeError,
        HeadersTooLargeError,
        UnauthorizedError,
        ForbiddenError,
        RateLimitedError,
        ServiceUnavailableError,
        InternalError,
    )
}


def error_from_payload(
    payload: dict[str, Any], *, status_code: int, request_id: str | None = None
) -> MLXError:
    """Build the typed error for an error envelope's `error` object."""
    code = str(payload.get("code") or "INTERNAL_ERROR")
    cls = ERROR_CLASSES.get(code, MLXError)
    err = cls(
        str(payload.get("message") or code),
        payload.get("details") if isinstance(payload.get("details"), dict) else {},
        request_id=payload.get("request_id") or request_id,
        status_code=status_code,
    )
    if cls is MLXError:
        # An error code this SDK version does not know yet: keep the server's code.
        err.code = code  # type: ignore[misc]
    return err
