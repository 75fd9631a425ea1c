"""Digests: a batched delivery names the delivery that sent it as part of one grouped message.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 21:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch_op:
        # The delivery whose send carries this one (itself, for the one that sends).
        batch_op.add_column(sa.Column("grouped_into", sa.String(length=40), nullable=True))
        # The policy's `batch.max` when decided: a flush never groups more than this.
        batch_op.add_column(sa.Column("batch_max", sa.Integer(), nullable=True))
        # When the batch's window closes: a flush gathers its window's items and earlier ones.
        batch_op.add_column(sa.Column("batch_closes_at", sa.DateTime(timezone=True), nullable=True))
    # A flush gathers the open deliveries of its batch key; a resend reads its group back.
    op.create_index("ix_deliveries_batch_key", "deliveries", ["batch_key"], unique=False)
    op.create_index("ix_deliveries_grouped_into", "deliveries", ["grouped_into"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_deliveries_grouped_into", table_name="deliveries")
    op.drop_index("ix_deliveries_batch_key", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch_op:
        batch_op.drop_column("batch_closes_at")
        batch_op.drop_column("batch_max")
        batch_op.drop_column("grouped_into")
