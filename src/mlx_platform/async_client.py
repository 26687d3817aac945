"""The asynchronous client: ``from mlx_platform.async_client import AsyncMLXClient``."""

from mlx_platform.sdk._pages import AsyncPage
from mlx_platform.sdk.async_ import AsyncAudit, AsyncMLXClient, AsyncNodes, AsyncPlugins

__all__ = ["AsyncAudit", "AsyncMLXClient", "AsyncNodes", "AsyncPage", "AsyncPlugins"]
