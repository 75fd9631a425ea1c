"""Each attempt names the address it was for, as a short hash (never the address itself).

Push fans out to every device of a user: when one device got the message and another
failed for a reason worth retrying, the retry goes to the devices not reached yet, and
this column is how a worker knows which those are (`gateway/delivery/pipeline.py`).
Existing rows were written before per-device retries and stay without one.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.add_column(sa.Column("recipient", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.drop_column("recipient")
