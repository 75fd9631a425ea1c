"""Deliveries for the store tests of claims, outcomes, status and dead letters: seed them,
read one back, claim one, apply outcomes in a transaction of their own."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from gateway.store.claims import Claimed
from gateway.store.database import Database
from gateway.store.deliveries import DeliveryStore
from gateway.store.outcomes import Applied, Outcome
from tests.store.rows import DELIVERIES, NOTIFICATIONS, T0, delivery_row, insert, notification_row, select

LEASE = dt.timedelta(seconds=30)
INDIA = dt.timezone(dt.timedelta(hours=5, minutes=30))
PACIFIC = dt.timezone(dt.timedelta(hours=-8))
TOKYO = dt.timezone(dt.timedelta(hours=9))


def aware_utc(value: dt.datetime | None) -> bool:
    return value is not None and value.tzinfo is not None and value.utcoffset() == dt.timedelta(0)


async def seed(database: Database, *deliveries: dict[str, Any], **notification: Any) -> str:
    """One notification with the given delivery rows (made by `delivery_row(...)` for `NID`)."""
    note = notification_row(**notification)
    rows = [{**row, "notification_id": note["id"]} for row in deliveries]
    await insert(database, NOTIFICATIONS, note)
    if rows:
        await insert(database, DELIVERIES, *rows)
    return str(note["id"])


def delivery(channel: str, **values: Any) -> dict[str, Any]:
    return delivery_row("filled-in-by-seed", channel, **values)


async def one(database: Database, delivery_id: str) -> Any:
    (row,) = await select(database, DELIVERIES, DELIVERIES.c.id == delivery_id)
    return row


async def apply(
    database: Database, store: DeliveryStore, outcomes: Sequence[Outcome], now: dt.datetime
) -> list[Applied]:
    async with database.begin() as connection:
        return await store.apply(connection, outcomes, now)


async def claim_one(store: DeliveryStore, delivery_id: str, owner: str, now: dt.datetime = T0) -> Claimed:
    (claimed,) = await store.claim([delivery_id], owner, LEASE, now)
    return claimed
