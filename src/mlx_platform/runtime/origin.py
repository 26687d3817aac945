"""Where a plugin class's code lives on disk, told by the throwaway probe process.

The probe imports the class (the service never does); this module then says which files are
its code, so that the service can pin them by hashing those files (core/integrity.py) without
importing anything:

- a class from an installed distribution: that distribution (its ``.dist-info`` folder, whose
  RECORD lists every file it installed, with hashes);
- a class from an editable install, a plugin folder (``MLX_PLUGIN_PATH``) or anything else on
  the path: its top-level package folder, or the single module file;
- the service's own code (``mlx_platform``, the example plugins): not pinned, it changes with
  the service's upgrades.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import sys
from pathlib import Path
from typing import Any

SERVICE_PACKAGE = "mlx_platform"


def _real(path: object) -> str:
    return os.path.realpath(str(path))


def _top_entry(module_name: str, module_file: str) -> tuple[str, str]:
    """(sys.path entry, top-level entry name) holding `module_name`: for a.b.c at
    /x/a/b/c.py, ("/x", "a"); for a module m at /x/m.py, ("/x", "m.py")."""
    path = Path(module_file)
    depth = module_name.count(".")
    if path.stem == "__init__":
        depth += 1
    top = path
    for _ in range(depth):
        top = top.parent
    return str(top.parent), top.name


def _distribution_of(top: str, module_file: str) -> tuple[md.Distribution | None, str | None]:
    """The installed distribution that holds `module_file` (by its RECORD), and the name of
    one that provides `top` without holding the file (an editable install)."""
    names = md.packages_distributions().get(top.split(".")[0], [])
    editable: str | None = None
    wanted = _real(module_file)
    for name in dict.fromkeys(names):
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        for f in dist.files or []:
            if f.name == Path(module_file).name and _real(dist.locate_file(f)) == wanted:
                return dist, None
        editable = editable or name
    return None, editable


def _metadata_dir(dist: md.Distribution) -> str | None:
    for f in dist.files or []:
        if f.name == "METADATA" and f.parent.name.endswith(".dist-info"):
            return _real(dist.locate_file(f)).removesuffix(os.sep + "METADATA")
    return None


def _is_editable(name: str) -> bool:
    try:
        text = md.distribution(name).read_text("direct_url.json")
    except md.PackageNotFoundError:
        return False
    try:
        return bool(text and json.loads(text).get("dir_info", {}).get("editable"))
    except (ValueError, AttributeError):
        return False


def origin_of(cls: type) -> dict[str, Any] | None:
    """Where the code of `cls` (an imported class) lives; None when it has no file."""
    module_name = cls.__module__
    module = sys.modules.get(module_name)
    module_file = getattr(module, "__file__", None)
    if not module_file:
        return None
    root, top = _top_entry(module_name, module_file)
    if module_name.split(".")[0] == SERVICE_PACKAGE:
        return {"source": "service", "root": _real(root), "entries": [top]}
    dist, editable = _distribution_of(top, module_file)
    if dist is not None:
        meta_dir = _metadata_dir(dist)
        if meta_dir is not None:
            return {
                "source": "distribution",
                "root": _real(dist.locate_file("")),
                "distribution": dist.metadata["Name"],
                "distribution_version": dist.version,
                "metadata_path": meta_dir,
            }
    return {
        "source": "package" if Path(root, top).is_dir() else "module",
        "root": _real(root),
        "entries": [top],
        "distribution": editable if editable and _is_editable(editable) else None,
    }
