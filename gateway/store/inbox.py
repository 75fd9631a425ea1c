"""The in-app inbox in the store: items written once per delivery, read newest first.

`add` is keyed on the delivery id, with `INSERT ... ON CONFLICT DO NOTHING` on SQLite and
PostgreSQL alike: a worker that died after writing and sends the delivery again adds no
second copy, and the send still counts as delivered. The feed API (cursor pages, unread
counts, read and archive marks) comes later; `feed` here is the plain newest-first read, in
the order of the `ix_inbox_items_feed` index.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from gateway.store.database import Database
from gateway.store.tables import InboxItemRow

inbox_items = InboxItemRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class InboxItem:
    id: str  # the delivery id
    notification_id: str
    user_id: str
    event: str
    title: str
    body: str
    created_at: dt.datetime
    category: str | None = None
    action_url: str | None = None
    icon: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    read_at: dt.datetime | None = None
    archived_at: dt.datetime | None = None


_COLUMNS = tuple(c.name for c in inbox_items.columns)


async def add(database: Database, item: InboxItem) -> bool:
    """Store `item` unless its delivery already did; True when this call wrote it."""
    async with database.begin() as connection:
        insert = (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(
            inbox_items
        )
        statement = (
            insert.values({name: getattr(item, name) for name in _COLUMNS})
            .on_conflict_do_nothing(index_elements=[inbox_items.c.id])
            .returning(inbox_items.c.id)
        )
        return (await connection.execute(statement)).first() is not None


async def feed(database: Database, user_id: str, limit: int = 50) -> list[InboxItem]:
    """A user's items, newest first (ties by id), archived ones included."""
    async with database.connect() as connection:
        rows = await connection.execute(
            sa.select(inbox_items)
            .where(inbox_items.c.user_id == user_id)
            .order_by(inbox_items.c.created_at.desc(), inbox_items.c.id)
            .limit(limit)
        )
        return [InboxItem(**row._mapping) for row in rows]
