"""Bulk requests: stored whole when posted, expanded into notifications by workers.

A bulk request of 10,000 recipients used to be decided and stored before its answer, so it
held the intake (and the database's writer) for seconds. Now the API stores one row and
answers; a worker *claims* the row with a lease (`claim_owner`, `claim_until`), expands it a
chunk at a time and moves the cursor `expanded` after each chunk is stored, renewing the lease.

A worker that dies mid-expansion leaves the cursor before the chunk it was storing: the next
claimant stores that chunk again and every recipient of it is an idempotent replay (each
recipient's notification carries the idempotency key `model.recipient_key(base, user_id)`,
the base being the request's own key or, without one, the bulk id), so nobody is lost and
nobody gets two.
A cursor write from a worker whose lease was taken over changes nothing (`claim_owner = me`).

Claims are chosen `FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite the single writer
serializes the compare-and-set update, which gives the same guarantee.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from gateway.errors import Conflict
from gateway.store.database import Database
from gateway.store.tables import BulkRequestRow, DeliveryRow, NotificationRow

bulk_requests = BulkRequestRow.__table__  # type: ignore[attr-defined]
notifications = NotificationRow.__table__  # type: ignore[attr-defined]
deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]

UNFINISHED = bulk_requests.c.state != "expanded"
ON_NOTIFICATION = deliveries.c.notification_id == notifications.c.id


@dataclass(frozen=True, slots=True)
class NewBulk:
    id: str
    producer: str
    idempotency_key: str | None
    event: str
    priority: str
    intent: dict[str, Any]  # the request as posted, less its recipients
    user_ids: list[str]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A bulk request leased to one worker, from its cursor on."""

    id: str
    producer: str
    intent: dict[str, Any]
    user_ids: list[str]
    expanded: int


@dataclass(frozen=True, slots=True)
class BulkProgress:
    id: str
    producer: str
    event: str
    priority: str
    state: str
    recipients: int
    expanded: int
    refused: int
    first_refusal: str | None
    created_at: dt.datetime
    expanded_at: dt.datetime | None
    deliveries: dict[str, int]  # delivery status -> count, over the notifications it produced


class BulkStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def create(self, bulk: NewBulk, now: dt.datetime) -> tuple[str, bool]:
        """Store a posted request; returns (bulk id, replay). A producer's second request with
        the same idempotency key is the first one's replay."""
        row = {
            "id": bulk.id,
            "producer": bulk.producer,
            "idempotency_key": bulk.idempotency_key,
            "event": bulk.event,
            "priority": bulk.priority,
            "intent": bulk.intent,
            "user_ids": bulk.user_ids,
            "recipients": len(bulk.user_ids),
            "expanded": 0,
            "refused": 0,
            "first_refusal": None,
            "state": "accepted",
            "claim_owner": None,
            "claim_until": None,
            "created_at": now,
            "expanded_at": None,
        }
        if bulk.idempotency_key is not None and (known := await self._by_key(bulk)) is not None:
            return known, True
        try:
            async with self.database.begin() as connection:
                await connection.execute(sa.insert(bulk_requests), [row])
        except Conflict:  # the same key posted concurrently: the first one stored wins
            if bulk.idempotency_key is None or (known := await self._by_key(bulk)) is None:
                raise
            return known, True
        return bulk.id, False

    async def _by_key(self, bulk: NewBulk) -> str | None:
        async with self.database.connect() as connection:
            found: str | None = await connection.scalar(
                sa.select(bulk_requests.c.id).where(
                    bulk_requests.c.producer == bulk.producer,
                    bulk_requests.c.idempotency_key == bulk.idempotency_key,
                )
            )
        return found

    async def claim(self, owner: str, now: dt.datetime, lease: dt.timedelta) -> Claimed | None:
        """Lease the oldest unfinished request nobody holds (or whose holder's lease ran out)."""
        free = sa.or_(
            bulk_requests.c.claim_until.is_(None),
            bulk_requests.c.claim_until < now,
            bulk_requests.c.claim_owner == owner,
        )
        oldest = (
            sa.select(bulk_requests.c.id)
            .where(UNFINISHED, free)
            .order_by(bulk_requests.c.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            sa.update(bulk_requests)
            .where(bulk_requests.c.id == oldest, UNFINISHED, free)
            .values(claim_owner=owner, claim_until=now + lease, state="expanding")
            .returning(
                bulk_requests.c.id,
                bulk_requests.c.producer,
                bulk_requests.c.intent,
                bulk_requests.c.user_ids,
                bulk_requests.c.expanded,
            )
        )
        async with self.database.begin() as connection:
            row = (await connection.execute(statement)).first()
        return Claimed(**row._asdict()) if row is not None else None

    async def advance(
        self,
        claimed: Claimed,
        owner: str,
        *,
        expanded: int,
        refusals: list[str],
        now: dt.datetime,
        lease: dt.timedelta,
    ) -> bool:
        """Move the cursor past a stored chunk and renew the lease; False when the lease was
        lost to another worker (then nothing is written and the caller stops)."""
        done = expanded >= len(claimed.user_ids)
        values: dict[str, Any] = {
            "expanded": expanded,
            "refused": bulk_requests.c.refused + len(refusals),
            "claim_until": None if done else now + lease,
            "claim_owner": None if done else owner,
            "state": "expanded" if done else "expanding",
            "expanded_at": now if done else None,
        }
        if refusals:
            values["first_refusal"] = sa.func.coalesce(bulk_requests.c.first_refusal, refusals[0][:1000])
        async with self.database.begin() as connection:
            result = await connection.execute(
                sa.update(bulk_requests)
                .where(bulk_requests.c.id == claimed.id, bulk_requests.c.claim_owner == owner)
                .values(**values)
            )
        return bool(result.rowcount)

    async def unexpanded(self) -> int:
        """Recipients of stored bulk requests not yet expanded: work accepted but not queued."""
        async with self.database.connect() as connection:
            total = await connection.scalar(
                sa.select(
                    sa.func.coalesce(sa.func.sum(bulk_requests.c.recipients - bulk_requests.c.expanded), 0)
                ).where(UNFINISHED)
            )
        return int(total or 0)

    async def progress(self, bulk_id: str) -> BulkProgress | None:
        async with self.database.connect() as connection:
            row = (
                await connection.execute(
                    sa.select(
                        bulk_requests.c.id,
                        bulk_requests.c.producer,
                        bulk_requests.c.event,
                        bulk_requests.c.priority,
                        bulk_requests.c.state,
                        bulk_requests.c.recipients,
                        bulk_requests.c.expanded,
                        bulk_requests.c.refused,
                        bulk_requests.c.first_refusal,
                        bulk_requests.c.created_at,
                        bulk_requests.c.expanded_at,
                    ).where(bulk_requests.c.id == bulk_id)
                )
            ).first()
            if row is None:
                return None
            counts = await connection.execute(
                sa.select(deliveries.c.status, sa.func.count())
                .select_from(
                    deliveries.join(notifications, deliveries.c.notification_id == notifications.c.id)
                )
                .where(notifications.c.bulk_id == bulk_id)
                .group_by(deliveries.c.status)
            )
            by_status = {status: int(n) for status, n in counts}
        return BulkProgress(**row._asdict(), deliveries=by_status)

    async def release(self, claimed: Claimed, owner: str) -> None:
        """Give a claim back (the worker is stopping): the next worker need not wait out the lease."""
        async with self.database.begin() as connection:
            await connection.execute(
                sa.update(bulk_requests)
                .where(bulk_requests.c.id == claimed.id, bulk_requests.c.claim_owner == owner, UNFINISHED)
                .values(claim_owner=None, claim_until=None)
            )
