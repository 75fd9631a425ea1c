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
from sqlalchemy.ext.asyncio import AsyncConnection

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
        return (await add_many(connection, [item]))[0]


async def add_many(connection: AsyncConnection, items: list[InboxItem], now: Any = None) -> list[bool]:
    """Store the items no delivery stored yet, in one statement; per item, whether it was new.

    `now` is unused: the signature of a group-commit write (`gateway.store.group_commit`).
    """
    insert = (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(inbox_items)
    statement = (
        insert.values([{name: getattr(item, name) for name in _COLUMNS} for item in items])
        .on_conflict_do_nothing(index_elements=[inbox_items.c.id])
        .returning(inbox_items.c.id)
    )
    written = {row.id for row in await connection.execute(statement)}
    return [item.id in written and not _seen_before(item, items, i) for i, item in enumerate(items)]


def _seen_before(item: InboxItem, items: list[InboxItem], index: int) -> bool:
    """The same delivery twice in one batch is written once: only its first copy counts."""
    return any(other.id == item.id for other in items[:index])


def too_long(item: InboxItem) -> str | None:
    """The first field longer than its column allows, so one bad item never fails a batch."""
    for name, limit in _LIMITS.items():
        value = getattr(item, name)
        if value is not None and len(value) > limit:
            return f"{name} is {len(value)} characters, the store holds {limit}"
    return None


_LIMITS: dict[str, int] = {
    c.name: c.type.length for c in inbox_items.columns if isinstance(getattr(c.type, "length", None), int)
}


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
