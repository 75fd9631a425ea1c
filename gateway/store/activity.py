"""Reads for the activity view: a user's recent notifications, a notification's dead letters.

Both are keyset reads on indexed columns (`notifications.user_id`, and the notification's
own deliveries): a console listing a user's last 50 notifications never scans the table.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec
import sqlalchemy as sa

from gateway.model import DeadLetter
from gateway.store.database import Database
from gateway.store.dead_letters import dead_letter_of, dead_letters
from gateway.store.tables import DeliveryRow, NotificationRow

deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]
notifications = NotificationRow.__table__  # type: ignore[attr-defined]


class ChannelState(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    status: str


class NotificationSummary(msgspec.Struct, frozen=True, kw_only=True):
    notification_id: str
    event: str
    user_id: str
    priority: str
    created_at: dt.datetime
    status: Literal["decided", "undecided"]
    category: str | None
    tier: str | None
    rule: str | None
    deliveries: list[ChannelState]


class NotificationPage(msgspec.Struct, frozen=True, kw_only=True):
    notifications: list[NotificationSummary]
    next_cursor: str | None  # the last id of this page: pass it as `cursor` for the next


async def recent_for_user(
    database: Database, user_id: str, *, limit: int, cursor: str | None, producer: str | None
) -> NotificationPage:
    """Newest first (ids are time-ordered). `producer` narrows to what that key sent."""
    query = (
        sa.select(notifications)
        .where(notifications.c.user_id == user_id)
        .order_by(notifications.c.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        query = query.where(notifications.c.id < cursor)
    if producer is not None:
        query = query.where(notifications.c.producer == producer)
    async with database.connect() as connection:
        rows = list(await connection.execute(query))
        page = rows[:limit]
        states: dict[str, list[ChannelState]] = {r.id: [] for r in page}
        if page:
            for d in await connection.execute(
                sa.select(deliveries.c.notification_id, deliveries.c.channel, deliveries.c.status)
                .where(deliveries.c.notification_id.in_(list(states)))
                .order_by(deliveries.c.id)
            ):
                states[d.notification_id].append(ChannelState(channel=d.channel, status=d.status))
    return NotificationPage(
        notifications=[
            NotificationSummary(
                notification_id=r.id,
                event=r.event,
                user_id=r.user_id,
                priority=r.priority,
                created_at=r.created_at,
                status=r.status,
                category=r.category,
                tier=r.tier,
                rule=r.rule,
                deliveries=states[r.id],
            )
            for r in page
        ],
        next_cursor=page[-1].id if len(rows) > limit else None,
    )


async def dead_letters_of(database: Database, notification_id: str) -> list[DeadLetter]:
    async with database.connect() as connection:
        rows = await connection.execute(
            sa.select(dead_letters)
            .where(dead_letters.c.notification_id == notification_id)
            .order_by(dead_letters.c.id)
        )
        return [dead_letter_of(r) for r in rows]
