"""Check that a class path loads, in a throwaway process.

Importing a broken or hostile module there cannot crash or pollute the service: the service
only reads one JSON line from this process's stdout. Run as
``python -m mlx_platform.runtime.probe CLASS_PATH``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from mlx_platform.runtime.throwaway import ThrowawayFailed, answer, run_module


@dataclass
class ProbeResult:
    loadable: bool
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    # where the class's code lives (runtime/origin.py), for registration to pin its files
    origin: dict[str, Any] | None = None
    # the manifest the class carries (plugins._manifest.declared_manifest), for registration
    # by class_path alone
    manifest: dict[str, Any] = field(default_factory=dict)


def probe_class(
    class_path: str, *, timeout: float, extra_paths: list[str] | None = None
) -> ProbeResult:
    try:
        data = run_module(
            "mlx_platform.runtime.probe", class_path, timeout=timeout, extra_paths=extra_paths
        )
    except ThrowawayFailed as exc:
        return ProbeResult(False, f"importing the class failed: {exc}")
    origin = data.get("origin")
    manifest = data.get("manifest")
    return ProbeResult(
        bool(data["loadable"]),
        data.get("error"),
        data.get("info") or {},
        origin if isinstance(origin, dict) else None,
        manifest if isinstance(manifest, dict) else {},
    )


def _main(class_path: str) -> int:
    from mlx_platform.runtime.loading import ClassLoadError, describe_class, import_plugin_class

    try:
        cls = import_plugin_class(class_path)
        payload: dict[str, Any] = {"loadable": True, "info": describe_class(cls)}
        payload["origin"] = _origin(cls)
        payload["manifest"] = _manifest(cls, class_path)
    except ClassLoadError as exc:
        payload = {"loadable": False, "error": str(exc)}
    answer(payload)
    return 0


def _manifest(cls: type, class_path: str) -> dict[str, Any]:
    from mlx_platform.plugins._manifest import declared_manifest

    try:
        return declared_manifest(cls, class_path)
    except Exception:  # noqa: BLE001 - odd attributes: the class still loads, without a manifest
        return {}


def _origin(cls: type) -> dict[str, Any] | None:
    from mlx_platform.runtime.origin import origin_of

    try:
        return origin_of(cls)
    except Exception:  # noqa: BLE001 - odd metadata on the path: the class still loads
        return None


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1]))
