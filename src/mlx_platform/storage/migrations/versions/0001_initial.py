"""Initial schema: plugins, id sequences, metric buckets, service facts, search index.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from mlx_platform.storage.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plugins",
        sa.Column("id", sa.String(160), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("category", sa.String(100)),
        sa.Column("class_path", sa.String(400), nullable=False),
        sa.Column("isolation", sa.String(16), nullable=False, server_default="process"),
        sa.Column("status", sa.String(16), nullable=False, server_default="registered"),
        sa.Column("status_reason", sa.Text),
        sa.Column("loadable", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("class_info", sa.JSON, nullable=False),
        sa.Column("configuration_schema", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("configuration", sa.JSON, nullable=False),
        sa.Column("config_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("extra", sa.JSON, nullable=False),
        sa.Column("documentation_url", sa.String(500)),
        sa.Column("repository_url", sa.String(500)),
        sa.Column("singleton_slot", sa.String(64)),
        sa.Column("health_status", sa.String(16), nullable=False, server_default="unknown"),
        sa.Column("health_last_check", UTCDateTime()),
        sa.Column("health_response_time_ms", sa.Float),
        sa.Column("health_message", sa.Text),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("activated_at", UTCDateTime()),
        sa.Column("deactivated_at", UTCDateTime()),
        sa.UniqueConstraint("name", "version", name="uq_plugins_name_version"),
        sa.UniqueConstraint("singleton_slot", name="uq_plugins_singleton_slot"),
    )
    op.create_index("ix_plugins_order", "plugins", ["created_at", "id"])
    op.create_index("ix_plugins_status", "plugins", ["status"])
    op.create_index("ix_plugins_type", "plugins", ["type"])
    op.create_index("ix_plugins_category", "plugins", ["category"])

    op.create_table(
        "plugin_id_sequences",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("last_seq", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "metric_buckets",
        sa.Column("plugin_id", sa.String(160), primary_key=True),
        sa.Column("resolution", sa.Integer, primary_key=True),
        sa.Column("bucket_start", UTCDateTime(), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("errors", sa.Integer, nullable=False, server_default="0"),
        sa.Column("sum_ms", sa.Float, nullable=False, server_default="0"),
        sa.Column("sketch", sa.JSON, nullable=False),
        sa.Column("mem_samples", sa.Integer, nullable=False, server_default="0"),
        sa.Column("mem_sum_mb", sa.Float, nullable=False, server_default="0"),
        sa.Column("mem_peak_mb", sa.Float, nullable=False, server_default="0"),
        sa.Column("cpu_samples", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cpu_sum_percent", sa.Float, nullable=False, server_default="0"),
    )
    op.create_table(
        "service_meta",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False, server_default=""),
    )

    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        # Search index (used by PluginRepository._search_ids in storage/repositories.py): FTS5
        # with the trigram tokenizer gives case-insensitive substring search over names and
        # descriptions.
        op.execute(
            "CREATE VIRTUAL TABLE plugins_fts USING fts5("
            "plugin_id UNINDEXED, name, description, tokenize='trigram')"
        )
        op.execute(
            "CREATE TRIGGER plugins_fts_ai AFTER INSERT ON plugins BEGIN "
            "INSERT INTO plugins_fts(plugin_id, name, description) "
            "VALUES (new.id, new.name, new.description); END"
        )
        op.execute(
            "CREATE TRIGGER plugins_fts_ad AFTER DELETE ON plugins BEGIN "
            "DELETE FROM plugins_fts WHERE plugin_id = old.id; END"
        )
        op.execute(
            "CREATE TRIGGER plugins_fts_au AFTER UPDATE OF name, description ON plugins BEGIN "
            "UPDATE plugins_fts SET name = new.name, description = new.description "
            "WHERE plugin_id = old.id; END"
        )
    elif dialect == "postgresql":
        # The equivalent of the FTS5 index: a trigram GIN index over lower(name || description).
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX ix_plugins_search ON plugins USING gin "
            "((lower(name || ' ' || description)) gin_trgm_ops)"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TABLE IF EXISTS plugins_fts")
    op.drop_table("service_meta")
    op.drop_table("metric_buckets")
    op.drop_table("plugin_id_sequences")
    op.drop_table("plugins")
