"""The outbox is indexed by queue and run time.

Every few seconds the relay asks each queue for its oldest due jobs that Redis took
(`gateway/queue/relay.py`, `_recover`). Without an index it read the whole outbox, jobs
deferred to the end of their users' quiet hours included, and sorted it: 2 ms at 14,000
rows in a 10-minute soak, growing with every deferral. On `(queue, run_at)` it is a range
read in order that stops at its limit, and the queues present are found by a skip through
the same index rather than a DISTINCT over every row.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 02:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_queue_run_at", "jobs", ["queue", "run_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_jobs_queue_run_at", table_name="jobs")
