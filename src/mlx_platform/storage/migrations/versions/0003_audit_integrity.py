"""Audit trail of state changes; the code digest a plugin was registered with.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from mlx_platform.storage.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("plugin_id", sa.String(160)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("node_id", sa.String(80)),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at", "id"])
    op.create_index("ix_audit_events_plugin", "audit_events", ["plugin_id", "at"])
    op.create_index("ix_audit_events_actor", "audit_events", ["actor", "at"])
    op.add_column("plugins", sa.Column("code_digest", sa.JSON, nullable=False, server_default="{}"))


def downgrade() -> None:
    op.drop_column("plugins", "code_digest")
    op.drop_index("ix_audit_events_actor", "audit_events")
    op.drop_index("ix_audit_events_plugin", "audit_events")
    op.drop_index("ix_audit_events_at", "audit_events")
    op.drop_table("audit_events")
