"""The ``filesystem`` source: manifests in the folders of `MLX_PLUGIN_PATH`."""

from __future__ import annotations

from pathlib import Path

from mlx_platform.discovery.common import Scan, manifest_folders
from mlx_platform.plugins import ManifestError, load_manifest
from mlx_platform.plugins._manifest import MANIFEST_FILENAME


def scan_filesystem(dirs: list[Path]) -> Scan:
    scan = Scan()
    for base in dirs:
        if not base.is_dir():
            scan.error("filesystem", str(base), "not a folder")
            continue
        for folder in manifest_folders(base):
            location = str(Path(folder) / MANIFEST_FILENAME)
            try:
                manifest = load_manifest(folder)
            except (ManifestError, OSError, UnicodeDecodeError) as exc:
                scan.error("filesystem", folder, str(exc))
                continue
            scan.add("filesystem", manifest, location, error_at=folder, label=location)
    return scan
