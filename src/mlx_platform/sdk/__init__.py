"""The Python SDK: `MLXClient` (sync) and `AsyncMLXClient` (async) for the mlx-platform API.

```python
from mlx_platform import MLXClient

client = MLXClient(api_token="...")          # or MLX_API_TOKEN; base URL from MLX_API_URL
plugin = client.plugins.get("plugin_sqlite_source_001")
replicas = client.nodes.list()               # the service's replicas (scope plugins:admin)
for event in client.audit.list(plugin_id="plugin_sqlite_source_001"):  # who changed what
    print(event.at, event.actor, event.action, event.outcome)
```

Answers are the wire models of `mlx_platform.wire`; errors are the classes of
`mlx_platform.errors` (one per error code), `MLXConnectionError` when the service cannot be
reached, `MLXConfigurationError` when the client cannot be built: all of them `MLXError`s.
"""

from mlx_platform.sdk._base import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    RetryPolicy,
)
from mlx_platform.sdk._exceptions import InvalidResponseError, MLXConfigurationError
from mlx_platform.sdk._pages import AsyncPage, SyncPage
from mlx_platform.sdk.async_ import AsyncAudit, AsyncMLXClient, AsyncNodes, AsyncPlugins
from mlx_platform.sdk.sync import Audit, MLXClient, Nodes, Plugins

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "AsyncAudit",
    "AsyncMLXClient",
    "AsyncNodes",
    "AsyncPage",
    "AsyncPlugins",
    "Audit",
    "InvalidResponseError",
    "MLXClient",
    "MLXConfigurationError",
    "Nodes",
    "Plugins",
    "RetryPolicy",
    "SyncPage",
]
