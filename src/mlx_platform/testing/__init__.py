"""Tooling for plugin authors: a plugin hosted as the service hosts it, a live service with
the plugin registered, and the checks of `mlx plugins check`.

`mlx_platform.testing.pytest_plugin` gives these to pytest as fixtures (entry point
`pytest11`: installed with mlx-platform, loaded by every pytest run in its environment).
Nothing here is imported by the service; the names below load their modules on first use, so
that importing this package (as pytest does) costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlx_platform.testing.hosting import HostedPlugin, host_plugin
    from mlx_platform.testing.manifests import find_manifests, import_roots
    from mlx_platform.testing.service import LiveService, start_service

__all__ = [
    "HostedPlugin",
    "LiveService",
    "find_manifests",
    "host_plugin",
    "import_roots",
    "start_service",
]

_WHERE = {
    "HostedPlugin": "hosting",
    "host_plugin": "hosting",
    "LiveService": "service",
    "start_service": "service",
    "find_manifests": "manifests",
    "import_roots": "manifests",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mlx_platform.testing' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"mlx_platform.testing.{module}"), name)
