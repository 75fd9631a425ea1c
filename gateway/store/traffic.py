"""Real traffic for `notigate diff --from-store`: the intents of the last days, as stored.

Each stored notification still holds its intent (event, priority, data, channels, locale,
send_at); its user is read as stored now. Oldest first, at most `limit`, so a large store
gives a bounded sample of its most recent past.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from gateway.model import Intent
from gateway.store.database import Database
from gateway.store.tables import NotificationRow

notifications = NotificationRow.__table__  # type: ignore[attr-defined]


async def recent_intents(
    database: Database, since: dt.datetime, limit: int
) -> list[tuple[Intent, dt.datetime]]:
    """(intent, accepted at) for notifications created since `since`, newest `limit` of them."""
    n = notifications.c
    query = (
        sa.select(n.event, n.user_id, n.priority, n.data, n.channels, n.locale, n.send_at, n.created_at)
        .where(n.created_at >= since)
        .order_by(n.created_at.desc())
        .limit(limit)
    )
    async with database.connect() as connection:
        rows = list(await connection.execute(query))
    found = [
        (
            Intent(
                event=r.event,
                user_id=r.user_id,
                priority=r.priority,
                data=r.data or {},
                channels=r.channels,
                locale=r.locale,
                send_at=r.send_at,
            ),
            r.created_at,
        )
        for r in rows
    ]
    return found[::-1]
