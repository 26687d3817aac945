"""The example plugins shipped with the package, registered on a fresh database."""

from mlx_platform.builtin.local_tracker import LocalTracker
from mlx_platform.builtin.sqlite_source import SQLiteSource
from mlx_platform.builtin.tabular_folder import TabularFolderSource

BUILTIN_PLUGINS = [SQLiteSource, TabularFolderSource, LocalTracker]

__all__ = ["BUILTIN_PLUGINS", "LocalTracker", "SQLiteSource", "TabularFolderSource"]
