"""Import a plugin class from its dotted path, and describe it."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from mlx_platform.plugins import Plugin, operations_of


class ClassLoadError(Exception):
    """The class path does not import, or does not name a `Plugin` subclass."""


def import_plugin_class(class_path: str) -> type[Plugin]:
    if ":" in class_path:
        module_name, _, attr_path = class_path.partition(":")
    else:
        module_name, _, attr_path = class_path.rpartition(".")
    if not module_name or not attr_path:
        raise ClassLoadError(f"'{class_path}' is not a dotted path of the form module.Class")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ClassLoadError(
            f"module '{module_name}' not found ({exc.name} is not importable)"
        ) from exc
    except BaseException as exc:  # noqa: BLE001 - plugin code may raise anything on import
        raise ClassLoadError(
            f"importing module '{module_name}' failed: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ClassLoadError(f"module '{module_name}' has no attribute '{attr_path}'") from exc
    if not inspect.isclass(obj) or not issubclass(obj, Plugin):
        raise ClassLoadError(f"'{class_path}' is not a subclass of mlx_platform.plugins.Plugin")
    if inspect.isabstract(obj):
        raise ClassLoadError(f"'{class_path}' is abstract and cannot be instantiated")
    return obj


def describe_class(cls: type[Plugin]) -> dict[str, Any]:
    """What registration records about a loadable class: its operations and their signatures."""
    ops: dict[str, Any] = {}
    for name, func in operations_of(cls).items():
        try:
            sig = inspect.signature(func)
            params = [p for p in sig.parameters if p != "self"]
        except (TypeError, ValueError):
            params = []
        ops[name] = {"parameters": params, "doc": (inspect.getdoc(func) or "").split("\n")[0]}
    return {"operations": ops}
