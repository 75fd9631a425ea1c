"""Delivery tracking: what providers report about a message after taking it (webhooks).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_events",
        sa.Column("id", sa.Integer(), nullable=False),
        # A provider retries a webhook it thinks failed: the same event is stored once.
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("delivery_id", sa.String(length=40), nullable=True),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("provider_message_id", sa.String(length=200), nullable=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key"),
    )
    op.create_index("ix_delivery_events_delivery_id", "delivery_events", ["delivery_id"], unique=False)
    op.create_index(
        "ix_delivery_events_provider_message_id", "delivery_events", ["provider_message_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_delivery_events_provider_message_id", table_name="delivery_events")
    op.drop_index("ix_delivery_events_delivery_id", table_name="delivery_events")
    op.drop_table("delivery_events")
