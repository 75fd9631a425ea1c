"""The batch key's index covers the status too.

A digest claimed takes the messages folded into it: `batch_key = ? AND channel = ? AND
status = 'suppressed'`. With an index on `batch_key` alone and one on `(status,
lease_until)`, SQLite's planner (which has no statistics) chose the status index and
visited every suppressed delivery, most of the table, inside the claim's write
transaction: 20-26 ms a digest at 28,000 suppressed rows in a 10-minute soak, growing with
the table. On `(batch_key, status)` the lookup is two equalities and takes well under a
millisecond; a batch's gathering (`batch_key = ?` with a status list) uses its first column.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 00:50:00
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_batch_key_status", "deliveries", ["batch_key", "status"], unique=False)
    op.drop_index("ix_deliveries_batch_key", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_batch_key", "deliveries", ["batch_key"], unique=False)
    op.drop_index("ix_deliveries_batch_key_status", table_name="deliveries")
