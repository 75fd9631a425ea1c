"""Longer idempotency keys: a bulk intent claims `<key>:<user_id>`, up to 256 + 1 + 128 characters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 17:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.alter_column(
            "key", existing_type=sa.String(length=300), type_=sa.String(length=400), existing_nullable=False
        )
    with op.batch_alter_table("notifications") as batch_op:
        batch_op.alter_column(
            "idempotency_key",
            existing_type=sa.String(length=256),
            type_=sa.String(length=400),
            existing_nullable=True,
        )


def downgrade() -> None:
    # Keys longer than the old width would not fit: refuse rather than truncate them.
    bind = op.get_bind()
    for table, column, width in (("idempotency_keys", "key", 300), ("notifications", "idempotency_key", 256)):
        longest = bind.execute(
            sa.select(sa.func.max(sa.func.length(sa.column(column)))).select_from(sa.table(table))
        ).scalar()
        if longest is not None and longest > width:
            raise RuntimeError(
                f"cannot downgrade: {table}.{column} holds a key of {longest} characters, "
                f"more than the {width} revision 0001 allows"
            )
    with op.batch_alter_table("notifications") as batch_op:
        batch_op.alter_column(
            "idempotency_key",
            existing_type=sa.String(length=400),
            type_=sa.String(length=256),
            existing_nullable=True,
        )
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.alter_column(
            "key", existing_type=sa.String(length=400), type_=sa.String(length=300), existing_nullable=False
        )
