"""Errors only the SDK raises, beside the API's own tree in `mlx_platform.errors`.

MLXError
 ├── MLXConfigurationError     the client cannot be built: no token, a bad base URL
 │                             (also a ValueError, as documented before it was an MLXError)
 └── InvalidResponseError      the answer is not the API's envelope (a proxy, another service)
"""

from __future__ import annotations

from mlx_platform.errors import MLXError


class MLXConfigurationError(MLXError, ValueError):
    """The client was given (or found in the environment) something it cannot work with.

    Raised by the constructor, before any request: a missing token fails here rather than as
    a 401 on the first call. Nothing was sent, so `status_code` is None. Both `except
    MLXError` and `except ValueError` catch it.
    """

    code = "CONFIGURATION_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.status_code = None

    def __str__(self) -> str:
        return self.message


class InvalidResponseError(MLXError):
    """The service answered something that is not the API's envelope, or not the expected shape."""

    code = "INVALID_RESPONSE"
    http_status = 502
