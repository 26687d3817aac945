"""mlx-platform: a plugin manager for ML platforms.

The SDK is the public surface of this package: ``from mlx_platform import MLXClient`` (or
``AsyncMLXClient``), imported when first asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__api_version__ = "1.0"

from mlx_platform.errors import (  # noqa: E402
    DependencyMissingError,
    EndpointNotFoundError,
    ForbiddenError,
    HeadersTooLargeError,
    InsufficientResourcesError,
    InternalError,
    InvalidArgumentsError,
    InvalidConfigurationError,
    InvalidStateError,
    MethodNotAllowedError,
    MLXConnectionError,
    MLXError,
    MLXTimeoutError,
    OperationNotFoundError,
    OperationTimeoutError,
    PayloadTooLargeError,
    PluginAlreadyExistsError,
    PluginCodeChangedError,
    PluginConflictError,
    PluginExecutionError,
    PluginHealthCheckFailedError,
    PluginNotFoundError,
    RateLimitedError,
    ServiceUnavailableError,
    UnauthorizedError,
    ValidationError,
)

__all__ = [
    "AsyncMLXClient",
    "DependencyMissingError",
    "EndpointNotFoundError",
    "ForbiddenError",
    "HeadersTooLargeError",
    "InsufficientResourcesError",
    "InternalError",
    "InvalidArgumentsError",
    "InvalidConfigurationError",
    "InvalidResponseError",
    "InvalidStateError",
    "MLXClient",
    "MLXConfigurationError",
    "MLXConnectionError",
    "MLXError",
    "MLXTimeoutError",
    "MethodNotAllowedError",
    "OperationNotFoundError",
    "OperationTimeoutError",
    "PayloadTooLargeError",
    "PluginAlreadyExistsError",
    "PluginCodeChangedError",
    "PluginConflictError",
    "PluginExecutionError",
    "PluginHealthCheckFailedError",
    "PluginNotFoundError",
    "RateLimitedError",
    "ServiceUnavailableError",
    "UnauthorizedError",
    "ValidationError",
]


if TYPE_CHECKING:
    from mlx_platform.sdk import (
        AsyncMLXClient,
        InvalidResponseError,
        MLXClient,
        MLXConfigurationError,
    )


def __getattr__(name: str) -> Any:
    # The client is imported lazily so `import mlx_platform` stays light for plugin authors.
    if name == "MLXClient":
        from mlx_platform.sdk.sync import MLXClient

        return MLXClient
    if name == "AsyncMLXClient":
        from mlx_platform.sdk.async_ import AsyncMLXClient

        return AsyncMLXClient
    if name == "MLXConfigurationError":
        from mlx_platform.sdk._exceptions import MLXConfigurationError

        return MLXConfigurationError
    if name == "InvalidResponseError":
        from mlx_platform.sdk._exceptions import InvalidResponseError

        return InvalidResponseError
    raise AttributeError(f"module 'mlx_platform' has no attribute {name!r}")
