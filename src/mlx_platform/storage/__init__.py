"""Storage: the single source of truth for desired state (SQLAlchemy 2, Alembic)."""

from mlx_platform.storage.db import Database
from mlx_platform.storage.tables import (
    MetricBucketRow,
    NodeRow,
    PluginInstanceRow,
    PluginRow,
)

__all__ = ["Database", "MetricBucketRow", "NodeRow", "PluginInstanceRow", "PluginRow"]
