"""Storage: the single source of truth for desired state (SQLAlchemy 2, Alembic)."""

from mlx_platform.storage.db import Database
from mlx_platform.storage.tables import (
    AuditEventRow,
    MetricBucketRow,
    NodeRow,
    PluginInstanceRow,
    PluginRow,
)

__all__ = [
    "AuditEventRow",
    "Database",
    "MetricBucketRow",
    "NodeRow",
    "PluginInstanceRow",
    "PluginRow",
]
