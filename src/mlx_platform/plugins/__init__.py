"""The plugin author API: subclass `Plugin`, mark callable methods with `@operation`.

```python
from mlx_platform.plugins import Plugin, operation

class CustomDataSource(Plugin):
    def configure(self, config: dict) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def health_check(self) -> dict | bool: ...

    @operation
    def query(self, sql: str) -> list[dict]: ...
```
"""

from mlx_platform.plugins._base import Plugin, PluginError, operation, operations_of
from mlx_platform.plugins._manifest import ManifestError, load_manifest, manifest_from_class

__all__ = [
    "ManifestError",
    "Plugin",
    "PluginError",
    "load_manifest",
    "manifest_from_class",
    "operation",
    "operations_of",
]
