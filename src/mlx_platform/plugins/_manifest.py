"""Plugin manifests: `mlx-plugin.toml` files and manifests carried by a class's attributes.

A manifest has the fields of the register request (name, type, version, description,
class_path, configuration_schema, metadata).
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Any

MANIFEST_FILENAME = "mlx-plugin.toml"
REQUIRED_KEYS = ("name", "type", "version", "class_path")
_MANIFEST_KEYS = (
    "name",
    "type",
    "version",
    "description",
    "class_path",
    "configuration_schema",
    "metadata",
    "category",
    "isolation",
    "documentation_url",
    "repository_url",
    "author",
    "license",
    "tags",
)


class ManifestError(ValueError):
    """A manifest that cannot be read, with the reason."""


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read a `mlx-plugin.toml` (or a folder holding one) into a register-request dict."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILENAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: no such file") from exc
    return manifest_from_toml(text, str(path))


def manifest_from_toml(
    text: str, where: str, *, defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A `mlx-plugin.toml` text as a register-request dict; ManifestError says what is wrong.

    The fields may stand at the top level or under a ``[plugin]`` table; name, type, version
    and class_path are required (`defaults` may supply some, e.g. a wheel's version). The one
    reader of manifests: folders, wheels in an index and git repositories all come here.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{where}: not valid TOML: {exc}") from exc
    if isinstance(data.get("plugin"), dict):
        data = data["plugin"]
    merged = {**(defaults or {}), **data}
    missing = [key for key in REQUIRED_KEYS if not merged.get(key)]
    if missing:
        raise ManifestError(f"{where}: missing required field(s): {', '.join(missing)}")
    return {key: merged[key] for key in _MANIFEST_KEYS if key in merged}


def manifest_from_class(cls: type, class_path: str | None = None) -> dict[str, Any]:
    """The manifest a `Plugin` subclass carries in its class attributes."""
    manifest: dict[str, Any] = {
        "name": getattr(cls, "name", None) or cls.__name__.lower(),
        "type": getattr(cls, "type", None) or "generic",
        "version": getattr(cls, "version", None) or "0.0.0",
        "description": getattr(cls, "description", "") or (cls.__doc__ or "").strip(),
        "class_path": class_path or f"{cls.__module__}.{cls.__qualname__}",
        "configuration_schema": dict(getattr(cls, "configuration_schema", {}) or {}),
        "metadata": dict(getattr(cls, "metadata", {}) or {}),
    }
    return manifest


def declared_manifest(cls: type, class_path: str) -> dict[str, Any]:
    """The manifest a class carries, as registration by `class_path` alone reads it: the
    `mlx-plugin.toml` beside the class's module (when its `class_path` names this class), with
    the class's own attributes over it where the class sets them. Nothing is made up: a field
    neither gives is left out (unlike `manifest_from_class`, which names a class without a
    name after itself), so that registration can say it is missing. JSON values only."""
    manifest: dict[str, Any] = {}
    module = sys.modules.get(cls.__module__)
    where = getattr(module, "__file__", None)
    if where:
        path = Path(where).parent / MANIFEST_FILENAME
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            data = {}
        if isinstance(data.get("plugin"), dict):
            data = data["plugin"]
        named = str(data.get("class_path", "")).replace(":", ".")
        if named in (class_path.replace(":", "."), f"{cls.__module__}.{cls.__qualname__}"):
            manifest.update({k: data[k] for k in _MANIFEST_KEYS if k in data})
    for key in ("name", "type", "version"):
        value = getattr(cls, key, None)
        if isinstance(value, str) and value:
            manifest[key] = value
    description = getattr(cls, "description", "") or ""
    if isinstance(description, str) and description:
        manifest["description"] = description
    elif "description" not in manifest and (cls.__doc__ or "").strip():
        manifest["description"] = (cls.__doc__ or "").strip()
    for key in ("configuration_schema", "metadata"):
        value = getattr(cls, key, None)
        if isinstance(value, dict) and value:
            manifest[key] = dict(value)
    manifest.pop("class_path", None)
    return {k: v for k, v in manifest.items() if _is_json(v)}


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
