"""Three indexes hold only the rows whose column is set.

`deliveries.batch_key` (with `status`), `deliveries.grouped_into` and `notifications.bulk_id`
are NULL on most rows: a message that is not batched, not grouped, not from a bulk request.
Their full indexes still took an entry for each such row at every insert, and the one on
`(batch_key, status)` moved that entry at every status change of every delivery. Every lookup
through them is `column = value`, which SQLite and PostgreSQL both know implies `IS NOT NULL`,
so the partial indexes serve the same queries (tests/store/test_query_plans.py) for a share of
the writes.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 03:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# (index, table, columns): the first column is the one that must be set.
_INDEXES = (
    ("ix_deliveries_batch_key_status", "deliveries", ["batch_key", "status"]),
    ("ix_deliveries_grouped_into", "deliveries", ["grouped_into"]),
    ("ix_notifications_bulk_id", "notifications", ["bulk_id"]),
)


def upgrade() -> None:
    for name, table, columns in _INDEXES:
        condition = sa.text(f"{columns[0]} IS NOT NULL")
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns, sqlite_where=condition, postgresql_where=condition)


def downgrade() -> None:
    for name, table, columns in _INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns)
