"""The error codes of the API, in one table, and the error tree shared by the service and the SDK.

`ERROR_TABLE` is the one list of codes: each row gives the HTTP status, whether a client may
try again, the `mlx` exit code and what the code means. Everything else is derived from it:
the exception classes (each names its code; status, retry rule and description come from its
row), `ERROR_CLASSES`, the OpenAPI error answers (`server/openapi.py`), the SDK's retry rules
and reading of non-envelope answers (`sdk/_base.py`) and the CLI's exit codes (`cli/output.py`).

    MLXError                       every error of the API and of the SDK (`code`, `message`...)
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
     ├── RateLimitedError               RATE_LIMITED                429  (retryable)
     ├── ServiceUnavailableError        SERVICE_UNAVAILABLE         503  (retryable)
     ├── InternalError                  INTERNAL_ERROR              500
     ├── EndpointNotFoundError          NOT_FOUND                   404  (no such path)
     ├── MethodNotAllowedError          METHOD_NOT_ALLOWED          405
     ├── MLXConnectionError             the service could not be reached (SDK only; no status)
     │    └── MLXTimeoutError
     ├── MLXConfigurationError          the client cannot be built (SDK only; a ValueError too)
     └── InvalidResponseError           the answer is not the API's envelope (SDK only)

`core` raises these knowing nothing of HTTP; the server answers each with its row's status;
the SDK maps the `code` of an error answer back to the class.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import Any, ClassVar


class ExitCode(IntEnum):
    """The exit codes of `mlx`: scripts can tell these failures apart."""

    OK = 0
    ERROR = 1  # anything else: an internal error of the service, an unexpected answer
    INVALID_INPUT = 2  # a bad argument or file, no token, or an answer saying the input is bad
    NOT_FOUND = 3  # no such plugin, operation or endpoint
    CONFLICT = 4  # the state of the plugins refuses it; also `validate` of an invalid composition
    NOT_ALLOWED = 5  # no token, a bad one, or a missing scope
    PLUGIN_FAILED = 6  # the plugin could not start, raised, or did not answer in time
    UNREACHABLE = 7  # the service cannot be reached, or says to try again later


@dataclass(frozen=True)
class ErrorSpec:
    """One error code of the API."""

    code: str
    http_status: int
    # A client may send the same request again later and expect another outcome (the SDK
    # retries idempotent calls on these, honouring Retry-After).
    retryable: bool
    exit_code: ExitCode
    # When the service answers it (shown in the OpenAPI document and the README).
    description: str
    # An answer of this status that is not the API's envelope (a proxy's, a load balancer's)
    # is read as this code by the SDK. At most one code per status says so.
    from_status: bool = False


_E = ExitCode
ERROR_TABLE: tuple[ErrorSpec, ...] = (
    ErrorSpec("PLUGIN_NOT_FOUND", 404, False, _E.NOT_FOUND, "no plugin with that id"),
    ErrorSpec(
        "PLUGIN_CONFLICT",
        409,
        False,
        _E.CONFLICT,
        "conflicts with an active plugin (`conflicts_with`, singleton type, another version), "
        "or unregistering one an active plugin requires",
    ),
    ErrorSpec(
        "INVALID_CONFIGURATION",
        422,
        False,
        _E.INVALID_INPUT,
        "the configuration breaks the plugin's schema: `details` has one entry per bad field",
    ),
    ErrorSpec(
        "PLUGIN_HEALTH_CHECK_FAILED",
        424,
        False,
        _E.PLUGIN_FAILED,
        "the plugin could not be loaded or started, or failed its first health check (the "
        "service worked: the plugin it depends on did not)",
    ),
    ErrorSpec(
        "INSUFFICIENT_RESOURCES",
        409,
        False,
        _E.CONFLICT,
        "the plugin's memory, CPU or GPU needs exceed what is left: `details.shortfall` has "
        "the figures",
    ),
    ErrorSpec(
        "DEPENDENCY_MISSING",
        409,
        False,
        _E.CONFLICT,
        "a `requires` entry is not active; says whether a registered version would do",
    ),
    ErrorSpec(
        "PLUGIN_ALREADY_EXISTS",
        409,
        False,
        _E.CONFLICT,
        "a plugin of that name and version is registered already",
    ),
    ErrorSpec(
        "INVALID_STATE",
        409,
        False,
        _E.CONFLICT,
        "the plugin's status does not allow it: activate an active plugin, deactivate an "
        "inactive one, unregister an active one, invoke one that is not running...",
    ),
    ErrorSpec(
        "PLUGIN_CODE_CHANGED",
        409,
        False,
        _E.CONFLICT,
        "the plugin's files differ from those pinned at registration (`details` names them): "
        "register it again to accept the new code",
    ),
    ErrorSpec(
        "OPERATION_NOT_FOUND", 404, False, _E.NOT_FOUND, "the plugin has no such `@operation`"
    ),
    ErrorSpec(
        "INVALID_ARGUMENTS",
        422,
        False,
        _E.INVALID_INPUT,
        "the arguments do not fit the operation's signature",
    ),
    ErrorSpec(
        "OPERATION_TIMEOUT",
        504,
        False,
        _E.PLUGIN_FAILED,
        "the operation did not answer within its `timeout`",
    ),
    ErrorSpec(
        "PLUGIN_EXECUTION_ERROR",
        424,
        False,
        _E.PLUGIN_FAILED,
        "the plugin's own code raised, or returned what cannot be answered (its message, "
        "secrets masked)",
    ),
    ErrorSpec(
        "VALIDATION_ERROR",
        422,
        False,
        _E.INVALID_INPUT,
        "a malformed body or parameter: `details` names each one and why",
    ),
    ErrorSpec(
        "PAYLOAD_TOO_LARGE",
        413,
        False,
        _E.INVALID_INPUT,
        "the body is over MLX_MAX_BODY_BYTES (refused before it is read)",
        from_status=True,
    ),
    ErrorSpec(
        "HEADERS_TOO_LARGE",
        431,
        False,
        _E.INVALID_INPUT,
        "the target and headers are over MLX_MAX_HEADER_BYTES",
        from_status=True,
    ),
    ErrorSpec(
        "UNAUTHORIZED",
        401,
        False,
        _E.NOT_ALLOWED,
        "no token, or one that is not valid (expired, badly signed...)",
        from_status=True,
    ),
    ErrorSpec(
        "FORBIDDEN", 403, False, _E.NOT_ALLOWED, "the token lacks the scope", from_status=True
    ),
    ErrorSpec(
        "RATE_LIMITED",
        429,
        True,
        _E.UNREACHABLE,
        "the token's subject made more writes than MLX_WRITE_RATE_LIMIT allows: try again "
        "after the Retry-After header's seconds",
        from_status=True,
    ),
    ErrorSpec(
        "SERVICE_UNAVAILABLE",
        503,
        True,
        _E.UNREACHABLE,
        "the database cannot be reached (or is busy), or the service is starting: try again "
        "after the Retry-After header's seconds",
        from_status=True,
    ),
    ErrorSpec(
        "INTERNAL_ERROR",
        500,
        False,
        _E.ERROR,
        "a fault of the service: logged with the request id, no trace in the answer",
        from_status=True,
    ),
    ErrorSpec(
        "NOT_FOUND",
        404,
        False,
        _E.NOT_FOUND,
        "no such endpoint (a wrong path, or a service of another version): see /docs",
    ),
    ErrorSpec(
        "METHOD_NOT_ALLOWED",
        405,
        False,
        _E.ERROR,
        "the path does not take that method: the `Allow` header lists those it takes",
    ),
)
del _E

ERROR_SPECS: MappingProxyType[str, ErrorSpec] = MappingProxyType(
    {spec.code: spec for spec in ERROR_TABLE}
)


class MLXError(Exception):
    """An error of the API, in the envelope's terms; the base of every error the SDK raises.

    A subclass names its code (`class PluginNotFoundError(MLXError, code="PLUGIN_NOT_FOUND")`)
    and takes its status, retry rule and description from that code's row of `ERROR_TABLE`.
    """

    code: ClassVar[str] = "INTERNAL_ERROR"
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init_subclass__(cls, code: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if code is None:
            return  # an SDK-only error, or a narrower kind of its parent's code
        spec = ERROR_SPECS.get(code)
        if spec is None:
            raise TypeError(f"{cls.__name__}: {code} is not in ERROR_TABLE")
        if code in _CLASSES:
            raise TypeError(f"{cls.__name__}: {code} already has {_CLASSES[code].__name__}")
        cls.code = spec.code
        cls.http_status = spec.http_status
        cls.retryable = spec.retryable
        if cls.__doc__ is None:
            cls.__doc__ = spec.description[:1].upper() + spec.description[1:] + "."
        _CLASSES[code] = cls

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
        # The HTTP status answered; None for an error no answer came with (MLXConnectionError).
        self.status_code: int | None = status_code if status_code is not None else self.http_status

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


_CLASSES: dict[str, type[MLXError]] = {}


class PluginNotFoundError(MLXError, code="PLUGIN_NOT_FOUND"):
    pass


class PluginConflictError(MLXError, code="PLUGIN_CONFLICT"):
    pass


class InvalidConfigurationError(MLXError, code="INVALID_CONFIGURATION"):
    pass


class PluginHealthCheckFailedError(MLXError, code="PLUGIN_HEALTH_CHECK_FAILED"):
    """The plugin could not be loaded or started, or failed its health check. 424 Failed
    Dependency, not a 5xx: the service worked; the plugin it depends on did not (and generic
    clients must not retry it as an outage)."""


class InsufficientResourcesError(MLXError, code="INSUFFICIENT_RESOURCES"):
    pass


class DependencyMissingError(MLXError, code="DEPENDENCY_MISSING"):
    pass


class PluginAlreadyExistsError(MLXError, code="PLUGIN_ALREADY_EXISTS"):
    pass


class InvalidStateError(MLXError, code="INVALID_STATE"):
    """The plugin is not in a state that allows the operation (activate an active one...)."""


class PluginCodeChangedError(MLXError, code="PLUGIN_CODE_CHANGED"):
    """The plugin's files differ from those pinned when it was registered: activation is
    refused until it is registered again (details name the changed, added, removed files)."""


class OperationNotFoundError(MLXError, code="OPERATION_NOT_FOUND"):
    """The plugin has no `@operation` of that name."""


class InvalidArgumentsError(MLXError, code="INVALID_ARGUMENTS"):
    """The arguments do not fit the operation's signature."""


class OperationTimeoutError(MLXError, code="OPERATION_TIMEOUT"):
    pass


class PluginExecutionError(MLXError, code="PLUGIN_EXECUTION_ERROR"):
    """The plugin's own code raised: the message is the plugin's, secrets masked."""


class ValidationError(MLXError, code="VALIDATION_ERROR"):
    pass


class PayloadTooLargeError(MLXError, code="PAYLOAD_TOO_LARGE"):
    """The request body is larger than the service accepts (`MLX_MAX_BODY_BYTES`); refused
    before any of it is read."""


class HeadersTooLargeError(MLXError, code="HEADERS_TOO_LARGE"):
    """The request's headers (with its target) are larger than the service accepts."""


class UnauthorizedError(MLXError, code="UNAUTHORIZED"):
    pass


class ForbiddenError(MLXError, code="FORBIDDEN"):
    pass


class RateLimitedError(MLXError, code="RATE_LIMITED"):
    pass


class ServiceUnavailableError(MLXError, code="SERVICE_UNAVAILABLE"):
    pass


class InternalError(MLXError, code="INTERNAL_ERROR"):
    pass


class EndpointNotFoundError(MLXError, code="NOT_FOUND"):
    """No such endpoint: a wrong path, or a service of another version."""


class MethodNotAllowedError(MLXError, code="METHOD_NOT_ALLOWED"):
    """The path does not take that method."""


class MLXConnectionError(MLXError):
    """The service could not be reached: refused, reset, DNS, TLS. Raised by the SDK.

    An `MLXError` like every other error of the SDK, so that `except MLXError` also catches an
    unreachable service; nothing was answered, so `status_code` and `request_id` are None.
    """

    code = "CONNECTION_ERROR"

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.status_code = None
        self.url = url

    def __str__(self) -> str:
        return self.message


class MLXTimeoutError(MLXConnectionError):
    """The service did not answer in time."""

    code = "TIMEOUT"


# Every code of ERROR_TABLE and its class (test_error_table checks that none is missing).
ERROR_CLASSES: MappingProxyType[str, type[MLXError]] = MappingProxyType(_CLASSES)


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
