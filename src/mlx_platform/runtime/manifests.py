"""Read the manifests of installed entry points, in a throwaway process.

Entry-point targets are classes: reading their manifest means importing them, and plugin
code never runs in the service process. Run as ``python -m mlx_platform.runtime.manifests``;
prints one JSON line with a manifest or an error per entry point.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from mlx_platform.runtime.throwaway import ThrowawayFailed, answer, run_module

GROUP = "mlx_platform.plugins"


def read_entry_point_manifests(timeout: float) -> tuple[list[dict[str, Any]], str | None]:
    try:
        return run_module("mlx_platform.runtime.manifests", timeout=timeout), None
    except ThrowawayFailed as exc:
        return [], f"reading entry points failed: {exc}"


def _main() -> int:
    from mlx_platform.plugins import manifest_from_class
    from mlx_platform.runtime.loading import ClassLoadError, import_plugin_class

    out: list[dict[str, Any]] = []
    for ep in entry_points(group=GROUP):
        dist = ep.dist
        item: dict[str, Any] = {
            "entry_point": ep.name,
            "value": ep.value,
            "distribution": dist.name if dist else None,
            "dist_version": dist.version if dist else None,
        }
        try:
            cls = import_plugin_class(ep.value.replace(":", ".") if ":" in ep.value else ep.value)
            item["manifest"] = manifest_from_class(cls, ep.value.replace(":", "."))
        except ClassLoadError as exc:
            item["error"] = str(exc)
        out.append(item)
    answer(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
