"""Intents stored `undecided` while Redis was away, and the one worker that decides each.

Every worker with a relay looks for undecided intents once Redis answers again. Without a
claim, two workers would decide the same intent at once: both reserve its deliveries in
Redis, the second sees the first's reservation, and whichever commits first wins, possibly
the decision that called the intent a duplicate of itself. So a worker first *claims* a
page of undecided intents with a lease (`decide_owner`, `decide_until`):

- on PostgreSQL the page is chosen `FOR UPDATE SKIP LOCKED`, so two workers claiming at the
  same moment take different rows instead of waiting on each other;
- on SQLite the whole `UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING` is one statement
  under the database's single write lock, which gives the same guarantee.

The decision is recorded only while the lease is still the recorder's
(`status = 'undecided' AND decide_owner = me`): a worker that stalled past its lease and
lost the intent to another changes nothing, and releases what it reserved.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from gateway.store.bulk import insert_rows
from gateway.store.database import Database
from gateway.store.intake import NewJob, Pending, form_jobs, insert_jobs
from gateway.store.tables import DeliveryRow, NotificationRow

notifications = NotificationRow.__table__  # type: ignore[attr-defined]
deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]

_FIELDS = (
    notifications.c.id,
    notifications.c.event,
    notifications.c.user_id,
    notifications.c.data,
    notifications.c.priority,
    notifications.c.channels,
    notifications.c.idempotency_key,
    notifications.c.send_at,
    notifications.c.locale,
    notifications.c.producer,
    notifications.c.created_at,
)


@dataclass(frozen=True, slots=True)
class Undecided:
    """An accepted intent waiting for its decision, as it was stored."""

    id: str
    event: str
    user_id: str
    data: dict[str, Any]
    priority: str
    channels: list[str] | None
    idempotency_key: str | None
    send_at: dt.datetime | None
    locale: str | None
    producer: str
    created_at: dt.datetime


class UndecidedStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def claim(self, owner: str, now: dt.datetime, lease: dt.timedelta, limit: int) -> list[Undecided]:
        """Take up to `limit` undecided intents, oldest first: unclaimed ones, ones whose lease
        ran out, and ones this owner already holds (a retry after Redis failed again)."""
        free = sa.or_(
            notifications.c.decide_until.is_(None),
            notifications.c.decide_until < now,
            notifications.c.decide_owner == owner,
        )
        page = (
            sa.select(notifications.c.id)
            .where(notifications.c.status == "undecided", free)
            .order_by(notifications.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            sa.update(notifications)
            .where(notifications.c.id.in_(page), notifications.c.status == "undecided")
            .values(decide_owner=owner, decide_until=now + lease)
            .returning(*_FIELDS)
        )
        async with self.database.begin() as connection:
            rows = list(await connection.execute(statement))
        rows.sort(key=lambda r: (r.created_at, r.id))
        return [Undecided(**r._asdict()) for r in rows]

    async def release(self, owner: str, ids: Sequence[str]) -> None:
        """Give back claims this owner could not decide (Redis went away again)."""
        if not ids:
            return
        async with self.database.begin() as connection:
            await connection.execute(
                sa.update(notifications)
                .where(
                    notifications.c.id.in_(list(ids)),
                    notifications.c.status == "undecided",
                    notifications.c.decide_owner == owner,
                )
                .values(decide_owner=None, decide_until=None)
            )

    async def record(self, pending: Pending, owner: str, now: dt.datetime) -> list[NewJob] | None:
        """Store a late decision while the claim is still ours; returns its jobs, or None when
        another worker took the intent over (then nothing is written)."""
        note = pending.notification
        async with self.database.begin() as connection:
            updated = await connection.execute(
                sa.update(notifications)
                .where(
                    notifications.c.id == note["id"],
                    notifications.c.status == "undecided",
                    notifications.c.decide_owner == owner,
                )
                .values(
                    status="decided",
                    category=note["category"],
                    tier=note["tier"],
                    rule=note["rule"],
                    policy_version=note["policy_version"],
                    fallback=note["fallback"],
                    decided_at=now,
                    decide_owner=None,
                    decide_until=None,
                )
            )
            if not updated.rowcount:
                return None
            await insert_rows(connection, deliveries, pending.deliveries)
            new_jobs = form_jobs(pending.job_specs)
            await insert_jobs(connection, new_jobs, now)
        return new_jobs
