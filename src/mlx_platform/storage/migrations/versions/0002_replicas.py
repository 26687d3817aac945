"""Several replicas on one database: desired state, nodes, observed state, per-node metrics.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from mlx_platform.storage.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_METRIC_COLUMNS = (
    "plugin_id, resolution, bucket_start, count, errors, sum_ms, sketch, mem_samples, "
    "mem_sum_mb, mem_peak_mb, cpu_samples, cpu_sum_percent"
)


def _metric_columns(with_node: bool) -> list[sa.Column]:  # type: ignore[type-arg]
    cols: list[sa.Column] = [  # type: ignore[type-arg]
        sa.Column("plugin_id", sa.String(160), primary_key=True),
        sa.Column("resolution", sa.Integer, primary_key=True),
        sa.Column("bucket_start", UTCDateTime(), primary_key=True),
    ]
    if with_node:
        cols.append(sa.Column("node_id", sa.String(80), primary_key=True, server_default=""))
    return [
        *cols,
        sa.Column("count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("errors", sa.Integer, nullable=False, server_default="0"),
        sa.Column("sum_ms", sa.Float, nullable=False, server_default="0"),
        sa.Column("sketch", sa.JSON, nullable=False),
        sa.Column("mem_samples", sa.Integer, nullable=False, server_default="0"),
        sa.Column("mem_sum_mb", sa.Float, nullable=False, server_default="0"),
        sa.Column("mem_peak_mb", sa.Float, nullable=False, server_default="0"),
        sa.Column("cpu_samples", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cpu_sum_percent", sa.Float, nullable=False, server_default="0"),
    ]


def upgrade() -> None:
    op.add_column(
        "plugins",
        sa.Column("running_configuration", sa.JSON, nullable=False, server_default="{}"),
    )
    op.add_column(
        "plugins", sa.Column("generation", sa.Integer, nullable=False, server_default="0")
    )
    op.add_column(
        "plugins", sa.Column("auto_start", sa.Boolean, nullable=False, server_default=sa.true())
    )
    # what runs is what was stored, until a cold change waits for its restart
    op.execute("UPDATE plugins SET running_configuration = configuration")

    # metric buckets gain the replica that wrote them, in the primary key: rebuild the table
    # (SQLite cannot change a primary key in place)
    op.create_table("metric_buckets_v2", *_metric_columns(True))
    op.execute(
        f"INSERT INTO metric_buckets_v2 ({_METRIC_COLUMNS}, node_id) "
        f"SELECT {_METRIC_COLUMNS}, '' FROM metric_buckets"
    )
    op.drop_table("metric_buckets")
    op.rename_table("metric_buckets_v2", "metric_buckets")

    op.create_table(
        "nodes",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("address", sa.String(255)),
        sa.Column("version", sa.String(64), nullable=False, server_default=""),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.Column("capacity", sa.JSON, nullable=False),
    )
    op.create_table(
        "plugin_instances",
        sa.Column("plugin_id", sa.String(160), primary_key=True),
        sa.Column("node_id", sa.String(80), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("pid", sa.Integer),
        sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
        sa.Column("config_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("health_status", sa.String(16), nullable=False, server_default="unknown"),
        sa.Column("health_message", sa.Text),
        sa.Column("health_last_check", UTCDateTime()),
        sa.Column("health_response_time_ms", sa.Float),
        sa.Column("last_error", sa.Text),
        sa.Column("restarts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_plugin_instances_node", "plugin_instances", ["node_id"])


def downgrade() -> None:
    op.drop_index("ix_plugin_instances_node", "plugin_instances")
    op.drop_table("plugin_instances")
    op.drop_table("nodes")
    op.create_table("metric_buckets_v1", *_metric_columns(False))
    op.execute(
        f"INSERT INTO metric_buckets_v1 ({_METRIC_COLUMNS}) "
        f"SELECT plugin_id, resolution, bucket_start, sum(count), sum(errors), sum(sum_ms), "
        f"min(sketch), sum(mem_samples), sum(mem_sum_mb), max(mem_peak_mb), sum(cpu_samples), "
        f"sum(cpu_sum_percent) FROM metric_buckets GROUP BY plugin_id, resolution, bucket_start"
    )
    op.drop_table("metric_buckets")
    op.rename_table("metric_buckets_v1", "metric_buckets")
    op.drop_column("plugins", "auto_start")
    op.drop_column("plugins", "generation")
    op.drop_column("plugins", "running_configuration")
