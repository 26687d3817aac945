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
        raise ClassLoadError(_not_found(module_name, exc)) from exc
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


def _not_found(module_name: str, exc: ModuleNotFoundError) -> str:
    """Which module is missing: the plugin's own (or a package above it), or one it imports
    (a dependency that is not installed, named so that it can be installed)."""
    missing = exc.name or ""
    if not missing or module_name == missing or module_name.startswith(missing + "."):
        return f"module '{module_name}' not found ({missing or module_name} is not importable)"
    top = missing.partition(".")[0]
    if top == module_name.partition(".")[0]:  # a module of the plugin's own package
        return f"module '{module_name}' imports '{missing}', which does not exist"
    return (
        f"module '{module_name}' imports '{missing}', which is not installed: install the "
        f"package that provides '{top}' where the plugin runs, or declare it among the "
        "plugin's dependencies"
    )


def describe_class(cls: type[Plugin]) -> dict[str, Any]:
    """What registration records about a loadable class: its operations, their parameters
    and which of those have no default (an invocation must give them)."""
    ops: dict[str, Any] = {}
    kinds = inspect.Parameter
    for name, func in operations_of(cls).items():
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            params, required = [], []
        else:
            given = [p for p in sig.parameters.values() if p.name != "self"]
            params = [p.name for p in given]
            required = [
                p.name
                for p in given
                if p.default is kinds.empty
                and p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
            ]
        ops[name] = {
            "parameters": params,
            "required": required,
            "doc": (inspect.getdoc(func) or "").split("\n")[0],
        }
    return {"operations": ops}
