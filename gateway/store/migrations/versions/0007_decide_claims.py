"""Late decisions are claimed: one decider per intent stored undecided while Redis was away.

`decide_owner`/`decide_until` are a lease on an `undecided` notification (see
`gateway.store.undecided`); the partial index keeps the workers' once-a-second look for
undecided intents an index probe instead of a scan of every notification.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UNDECIDED = sa.text("status = 'undecided'")


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch_op:
        batch_op.add_column(sa.Column("decide_owner", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("decide_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_notifications_undecided",
        "notifications",
        ["created_at"],
        postgresql_where=UNDECIDED,
        sqlite_where=UNDECIDED,
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_undecided", table_name="notifications")
    with op.batch_alter_table("notifications") as batch_op:
        batch_op.drop_column("decide_until")
        batch_op.drop_column("decide_owner")
