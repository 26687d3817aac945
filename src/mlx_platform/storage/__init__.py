"""Storage: the single source of truth for desired state (SQLAlchemy 2, Alembic)."""

from mlx_platform.storage.db import Database
from mlx_platform.storage.tables import MetricBucketRow, PluginRow

__all__ = ["Database", "MetricBucketRow", "PluginRow"]
