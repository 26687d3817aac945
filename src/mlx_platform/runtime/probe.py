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


def probe_class(
    class_path: str, *, timeout: float, extra_paths: list[str] | None = None
) -> ProbeResult:
    try:
        data = run_module(
            "mlx_platform.runtime.probe", class_path, timeout=timeout, extra_paths=extra_paths
        )
    except ThrowawayFailed as exc:
        return ProbeResult(False, f"importing the class failed: {exc}")
    return ProbeResult(bool(data["loadable"]), data.get("error"), data.get("info") or {})


def _main(class_path: str) -> int:
    from mlx_platform.runtime.loading import ClassLoadError, describe_class, import_plugin_class

    try:
        cls = import_plugin_class(class_path)
        payload: dict[str, Any] = {"loadable": True, "info": describe_class(cls)}
    except ClassLoadError as exc:
        payload = {"loadable": False, "error": str(exc)}
    answer(payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1]))
