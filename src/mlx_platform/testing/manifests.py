"""Where a plugin's `mlx-plugin.toml` is, and which folders its `class_path` imports from."""

from __future__ import annotations

from pathlib import Path

from mlx_platform.plugins._manifest import MANIFEST_FILENAME


def find_manifests(path: Path) -> list[Path]:
    """The manifests a path names: the file itself; else the folder's own `mlx-plugin.toml`;
    else those of its direct subfolders (as a folder of MLX_PLUGIN_PATH is read); else those
    of `src/`'s subfolders (a package in the src layout, as `mlx plugins new` writes it)."""
    if path.is_file():
        return [path]
    if (path / MANIFEST_FILENAME).is_file():
        return [path / MANIFEST_FILENAME]
    for folder in (path, path / "src"):
        found = sorted(
            sub / MANIFEST_FILENAME
            for sub in _subfolders(folder)
            if (sub / MANIFEST_FILENAME).is_file()
        )
        if found:
            return found
    return []


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []


def import_roots(manifest: Path) -> list[Path]:
    """The folders to put on the path for the manifest's `class_path` to import: the folder
    above a manifest that sits in a package (`src/` for `src/pkg/mlx-plugin.toml`); the
    manifest's folder and the one above it otherwise (a folder of MLX_PLUGIN_PATH holds
    plugin folders, or is one)."""
    folder = manifest.resolve().parent
    if (folder / "__init__.py").is_file():
        return [folder.parent]
    return [folder, folder.parent]
