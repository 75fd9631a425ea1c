"""What each attempt cost: the SMS segments it took and its price, as reported or configured.

`cost` is the provider's reported price when it gives one (Twilio), else the provider's
configured unit cost (times the segments for SMS); `cost_source` says which. Old attempts
keep NULLs: their cost was never known.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 16:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.add_column(sa.Column("segments", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("cost", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("cost_source", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.drop_column("cost_source")
        batch_op.drop_column("cost")
        batch_op.drop_column("segments")
