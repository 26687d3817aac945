"""`Plugin`, the base class plugin authors subclass, and the `@operation` marker."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_OPERATION_MARK = "__mlx_operation__"


def operation(func: F) -> F:
    """Mark a method as callable through ``POST /v1/plugins/{id}/invoke``."""
    setattr(func, _OPERATION_MARK, True)
    return func


class PluginError(Exception):
    """Raise from a plugin to report a failure with a message meant for the caller."""


class Plugin:
    """Base class of every plugin.

    Class attributes may carry the plugin's manifest (read by discovery without starting the
    plugin): ``name``, ``type``, ``version``, ``description``, ``configuration_schema`` and
    ``metadata``.
    """

    name: ClassVar[str | None] = None
    type: ClassVar[str | None] = None
    version: ClassVar[str | None] = None
    description: ClassVar[str] = ""
    configuration_schema: ClassVar[dict[str, Any]] = {}
    metadata: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}

    def configure(self, config: dict[str, Any]) -> None:
        """Receive the configuration: on activation, and on every hot configuration update."""
        self.config = dict(config)

    def start(self) -> None:
        """Called after `configure`, before the first use."""

    def stop(self) -> None:
        """Called on deactivation and on service shutdown."""

    def health_check(self) -> dict[str, Any] | bool:
        """Check connectivity. True, or a dict with ``status`` ("healthy"/"unhealthy")."""
        return True


def operations_of(cls: type) -> dict[str, Callable[..., Any]]:
    """The `@operation` methods of a plugin class, by name."""
    found: dict[str, Callable[..., Any]] = {}
    for attr_name, value in inspect.getmembers(cls, predicate=callable):
        if getattr(value, _OPERATION_MARK, False):
            found[attr_name] = value
    return found
