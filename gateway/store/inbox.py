"""The in-app inbox in the store: items written once per delivery, read newest first.

`add` is keyed on the delivery id, with `INSERT ... ON CONFLICT DO NOTHING` on SQLite and
PostgreSQL alike: a worker that died after writing and sends the delivery again adds no
second copy, and the send still counts as delivered.

The feed (`page`) is read newest first in the order of the `ix_inbox_items_feed` index,
(created_at DESC, id), and paged by keyset: the cursor names the last item shown, so a page
neither skips nor repeats items when new ones arrive in between, and items sharing a
timestamp are split between pages by id. Unread counts use the partial index of items
neither read nor archived. Every read and mark is scoped to one user: another user's item
id is simply not found.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.errors import ClientError
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
    # The same delivery twice in one batch is written once: only its first copy counts.
    first: set[str] = set()
    new = []
    for item in items:
        new.append(item.id in written and item.id not in first)
        first.add(item.id)
    return new


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


async def get(database: Database, user_id: str, item_id: str) -> InboxItem | None:
    """The user's item `item_id`; None when there is none, or it is another user's."""
    async with database.connect() as connection:
        row = (
            await connection.execute(
                sa.select(inbox_items).where(inbox_items.c.id == item_id, inbox_items.c.user_id == user_id)
            )
        ).first()
        return None if row is None else InboxItem(**row._mapping)


async def page(
    database: Database,
    user_id: str,
    *,
    limit: int,
    cursor: str | None = None,
    unread_only: bool = False,
    include_archived: bool = False,
) -> tuple[list[InboxItem], str | None]:
    """One page of the feed and the cursor of the next (None on the last page).

    Raises ClientError (field `cursor`) for a cursor this function did not hand out.
    """
    query = sa.select(inbox_items).where(inbox_items.c.user_id == user_id)
    if not include_archived:
        query = query.where(inbox_items.c.archived_at.is_(None))
    if unread_only:
        query = query.where(inbox_items.c.read_at.is_(None))
    if cursor is not None:
        at, after_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                inbox_items.c.created_at < at,
                sa.and_(inbox_items.c.created_at == at, inbox_items.c.id > after_id),
            )
        )
    query = query.order_by(inbox_items.c.created_at.desc(), inbox_items.c.id).limit(limit + 1)
    async with database.connect() as connection:
        items = [InboxItem(**row._mapping) for row in await connection.execute(query)]
    if len(items) <= limit:
        return items, None
    items = items[:limit]
    return items, encode_cursor(items[-1])


async def unread_count(database: Database, user_id: str) -> int:
    """Items neither read nor archived (what a badge shows)."""
    async with database.connect() as connection:
        counted = await connection.scalar(
            sa.select(sa.func.count()).select_from(inbox_items).where(*_unread(user_id))
        )
        return int(counted or 0)


async def mark_read(database: Database, user_id: str, item_id: str, now: dt.datetime) -> bool:
    """Mark the item read (an item read before keeps its first read time); False when the
    user has no such item."""
    return await _mark(database, user_id, item_id, inbox_items.c.read_at, now)


async def archive(database: Database, user_id: str, item_id: str, now: dt.datetime) -> bool:
    """Take the item out of the feed and the unread count; False when the user has no such item."""
    return await _mark(database, user_id, item_id, inbox_items.c.archived_at, now)


async def mark_all_read(
    database: Database, user_id: str, now: dt.datetime, up_to: dt.datetime | None = None
) -> int:
    """Mark every unread item read, or only those created at or before `up_to` (so an item
    that arrived after the user looked stays unread); how many were marked."""
    statement = sa.update(inbox_items).where(*_unread(user_id)).values(read_at=now)
    if up_to is not None:
        statement = statement.where(inbox_items.c.created_at <= up_to)
    async with database.begin() as connection:
        return int((await connection.execute(statement)).rowcount or 0)


def _unread(user_id: str) -> tuple[Any, ...]:
    """The conditions of the partial index `ix_inbox_items_unread`, so counts use it."""
    return (
        inbox_items.c.user_id == user_id,
        inbox_items.c.read_at.is_(None),
        inbox_items.c.archived_at.is_(None),
    )


async def _mark(database: Database, user_id: str, item_id: str, column: Any, now: dt.datetime) -> bool:
    statement = (
        sa.update(inbox_items)
        .where(inbox_items.c.id == item_id, inbox_items.c.user_id == user_id)
        .values({column.name: sa.func.coalesce(column, sa.bindparam("now", now, type_=column.type))})
    )
    async with database.begin() as connection:
        return bool((await connection.execute(statement)).rowcount)


def encode_cursor(item: InboxItem) -> str:
    """Opaque to clients: the last item's position, (created_at, id)."""
    raw = f"{item.created_at.astimezone(dt.UTC).isoformat()}|{item.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, separator, item_id = raw.partition("|")
        at = dt.datetime.fromisoformat(stamp)
        if not separator or not item_id or at.tzinfo is None:
            raise ValueError("not a cursor")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ClientError(
            "this cursor is not one the feed handed out: pass `next_cursor` from the previous page unchanged",
            field="cursor",
            code="invalid_cursor",
        ) from None
    return at, item_id
