"""The list's orders (issue 15, `GET /v1/plugins?sort=`): an index per order, and one per
filter in front of each, as migration 0004 made for creation order.

- `name`: (name, id); `type`: (type, name, id), which is also the type filter's index of the
  name order (and of the type order, whose rows of one type are in name order).
- The status and category filters: (column, name, id) and (column, type, name, id).
- A descending order (`-name`) reads the same index backwards: no index of its own.

A page and the walk to a deep page's first row then read one index in the page's order, on
SQLite and on PostgreSQL (storage/listing.py). Made from the plugins already stored.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# name -> columns, as tables.py declares them
INDEXES = {
    "ix_plugins_name_order": ["name", "id"],
    "ix_plugins_type_name_order": ["type", "name", "id"],
    "ix_plugins_status_name_order": ["status", "name", "id"],
    "ix_plugins_category_name_order": ["category", "name", "id"],
    "ix_plugins_status_type_order": ["status", "type", "name", "id"],
    "ix_plugins_category_type_order": ["category", "type", "name", "id"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "plugins", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, "plugins")
