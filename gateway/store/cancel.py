"""Scheduled notifications: listing those still waiting, and cancelling what has not been sent.

Cancelling is one compare-and-set, `pending|scheduled|retrying|standby -> cancelled`, so it
races safely with a worker's claim (`pending|scheduled|retrying -> sending`): whichever
commits first wins, and a cancelled delivery is never claimed, since the claim only takes
those three statuses. Its queue job still runs, finds nothing open and finishes. What is
`sending` or already final is left as it is, and so is a delivery taken into a batch's
group (it goes with the others); a capped message waiting to fold into a digest is
cancelled, so no digest carries it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from gateway.store.database import Database
from gateway.store.tables import DeliveryRow, NotificationRow

deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]
notifications = NotificationRow.__table__  # type: ignore[attr-defined]

CANCELLABLE = ("pending", "scheduled", "retrying", "standby")
WAITING = ("pending", "scheduled", "retrying")


@dataclass(frozen=True, slots=True)
class Waiting:
    notification_id: str
    event: str
    user_id: str
    producer: str
    created_at: dt.datetime
    next_send_at: dt.datetime | None
    deliveries: int  # how many of its deliveries wait


class CancelStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def cancel(self, notification_id: str, reason: str, now: dt.datetime) -> list[str]:
        """Cancel a notification's unsent deliveries; the ids this call cancelled (none on a repeat)."""
        async with self.database.begin() as connection:
            unsent = sa.or_(
                # Open and in no group: a group's leader or member goes (or retries) as one
                # message with the others, so it is in flight, not cancellable on its own.
                sa.and_(deliveries.c.status.in_(CANCELLABLE), deliveries.c.grouped_into.is_(None)),
                # Capped and waiting to be folded into the next digest.
                sa.and_(
                    deliveries.c.status == "suppressed",
                    deliveries.c.batch_key.is_not(None),
                    deliveries.c.grouped_into.is_(None),
                ),
            )
            result = await connection.execute(
                sa.update(deliveries)
                .where(deliveries.c.notification_id == notification_id, unsent)
                .values(status="cancelled", reason="cancelled", detail=reason, updated_at=now)
                .returning(deliveries.c.id)
            )
            return sorted(r.id for r in result)

    async def waiting(
        self, now: dt.datetime, *, user_id: str | None, producer: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Waiting], str | None]:
        """Notifications with deliveries due later than now, newest id first; keyset paged by id."""
        waiting = (
            sa.select(
                deliveries.c.notification_id,
                sa.func.min(deliveries.c.send_at).label("next_send_at"),
                sa.func.count().label("waiting_count"),
            )
            .where(deliveries.c.status.in_(WAITING), deliveries.c.send_at > now)
            .group_by(deliveries.c.notification_id)
            .subquery()
        )
        query = (
            sa.select(notifications, waiting.c.next_send_at, waiting.c.waiting_count)
            .join(waiting, waiting.c.notification_id == notifications.c.id)
            .order_by(notifications.c.id.desc())
            .limit(limit + 1)
        )
        if user_id is not None:
            query = query.where(notifications.c.user_id == user_id)
        if producer is not None:
            query = query.where(notifications.c.producer == producer)
        if cursor:
            query = query.where(notifications.c.id < cursor)
        async with self.database.connect() as connection:
            rows = list(await connection.execute(query))
        page = [
            Waiting(
                notification_id=r.id,
                event=r.event,
                user_id=r.user_id,
                producer=r.producer,
                created_at=r.created_at,
                next_send_at=_aware(r.next_send_at),
                deliveries=r.waiting_count,
            )
            for r in rows[:limit]
        ]
        return page, page[-1].notification_id if len(rows) > limit else None


def _aware(value: dt.datetime | str | None) -> dt.datetime | None:
    """min() over a column loses its type on SQLite: the naive UTC text comes back."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value
