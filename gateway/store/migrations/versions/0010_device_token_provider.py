"""Devices say which provider issued their token: `fcm` (every device so far) or `apns`.

A raw APNs device token goes to the APNs provider, an FCM registration token to FCM
(`gateway/providers/apns_push.py`, `Device.provider`); existing rows are FCM tokens.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch_op:
        batch_op.add_column(sa.Column("provider", sa.String(length=8), nullable=False, server_default="fcm"))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch_op:
        batch_op.drop_column("provider")
