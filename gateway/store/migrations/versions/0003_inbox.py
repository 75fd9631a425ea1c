"""The in-app inbox: one row per in-app delivery, read newest first and counted while unread.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 20:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UNREAD = sa.text("read_at IS NULL AND archived_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "inbox_items",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("notification_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("event", sa.String(length=128), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("body", sa.String(), nullable=False),
        sa.Column("action_url", sa.String(length=2048), nullable=True),
        sa.Column("icon", sa.String(length=2048), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    # The feed: a user's items newest first, paged by the cursor (created_at, id).
    op.create_index(
        "ix_inbox_items_feed", "inbox_items", ["user_id", sa.text("created_at DESC"), "id"], unique=False
    )
    # Unread counts: a partial index holding only the items still unread and not archived.
    op.create_index(
        "ix_inbox_items_unread",
        "inbox_items",
        ["user_id"],
        unique=False,
        sqlite_where=UNREAD,
        postgresql_where=UNREAD,
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_items_unread", table_name="inbox_items")
    op.drop_index("ix_inbox_items_feed", table_name="inbox_items")
    op.drop_table("inbox_items")
