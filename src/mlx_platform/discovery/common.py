"""What every discovery source hands back: found plugins and per-item errors."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from mlx_platform.plugins._manifest import MANIFEST_FILENAME
from mlx_platform.reasons import plain_reason
from mlx_platform.wire import RegisterPluginRequest

# Seconds allowed to one network step of discovery (an index page, a wheel, a git command).
NETWORK_TIMEOUT = 30.0


@dataclass
class Found:
    """One plugin a source found, before the rules (compatibility, conflicts) look at it."""

    source: str
    manifest: dict[str, Any]
    location: str
    installed: bool = True
    # Reasons the plugin cannot run here that the manifest alone does not tell (an index's
    # Requires-Python, no wheel for this platform).
    reasons: list[str] = field(default_factory=list)
    # (canonical distribution name, version) for plugins that come from a distribution.
    distribution: tuple[str, str] | None = None


@dataclass
class Scan:
    """What one source found: plugins, and the items it could not read."""

    found: list[Found] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def error(self, source: str, location: str | None, message: str) -> None:
        self.errors.append({"source": source, "location": location, "message": message})

    def add(
        self,
        source: str,
        manifest: dict[str, Any],
        location: str,
        *,
        error_at: str | None = None,
        label: str | None = None,
        distribution: tuple[str, str] | None = None,
    ) -> None:
        """`manifest` as found at `location`, or, when it is not a valid register request,
        an error at `error_at` (default `location`) prefixed with `label`."""
        problem = check_manifest(manifest)
        if problem:
            self.error(source, error_at or location, f"{label}: {problem}" if label else problem)
        else:
            self.found.append(Found(source, manifest, location, distribution=distribution))

    def extend(self, other: Scan) -> None:
        self.found += other.found
        self.errors += other.errors


def check_manifest(manifest: dict[str, Any]) -> str | None:
    """None when the manifest is a valid register request that names its plugin (a found
    manifest is not completed from its class, as a request of `class_path` alone is), else
    the first problem."""
    problems: list[str] = []
    try:
        RegisterPluginRequest.model_validate(manifest)
    except PydanticValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ())) or "manifest"
            problems.append(f"{loc}: {plain_reason(err)}")
    problems += [
        f"{key}: is required" for key in ("name", "type", "version") if not manifest.get(key)
    ]
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"invalid manifest: {problems[0]}{more}"


def manifest_folders(base: os.PathLike[str] | str) -> list[str]:
    """`base` itself when it holds a manifest, then its direct subfolders that hold one."""
    base = os.fspath(base)
    found = [base] if os.path.isfile(os.path.join(base, MANIFEST_FILENAME)) else []
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if os.path.isfile(os.path.join(entry.path, MANIFEST_FILENAME)):
            found.append(entry.path)
    return found
