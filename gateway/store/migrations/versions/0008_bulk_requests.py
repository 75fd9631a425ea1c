"""Bulk requests are stored whole and expanded by workers: one row per request, and each
notification it produced names it.

`expanded` is the cursor into `user_ids` (recipients before it are stored notifications);
`claim_owner`/`claim_until` lease the request to one expanding worker, so a worker that dies
mid-expansion leaves the rest to the next one, which replays the chunk it was storing.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UNFINISHED = sa.text("state <> 'expanded'")


def upgrade() -> None:
    op.create_table(
        "bulk_requests",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("producer", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=400), nullable=True),
        sa.Column("event", sa.String(length=128), nullable=False),
        sa.Column("priority", sa.String(length=8), nullable=False),
        sa.Column("intent", sa.JSON(), nullable=False),
        sa.Column("user_ids", sa.JSON(), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("expanded", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("first_refusal", sa.String(length=1000), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("claim_owner", sa.String(length=80), nullable=True),
        sa.Column("claim_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expanded_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("producer", "idempotency_key", name="uq_bulk_requests_producer_key"),
    )
    op.create_index(
        "ix_bulk_requests_unfinished",
        "bulk_requests",
        ["created_at"],
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )
    with op.batch_alter_table("notifications") as batch_op:
        batch_op.add_column(sa.Column("bulk_id", sa.String(length=40), nullable=True))
    op.create_index("ix_notifications_bulk_id", "notifications", ["bulk_id"])


def downgrade() -> None:
    op.drop_index("ix_notifications_bulk_id", table_name="notifications")
    with op.batch_alter_table("notifications") as batch_op:
        batch_op.drop_column("bulk_id")
    op.drop_index("ix_bulk_requests_unfinished", table_name="bulk_requests")
    op.drop_table("bulk_requests")
