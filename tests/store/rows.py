"""Rows for store tests, written and read with SQLAlchemy Core."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from gateway.ids import new_id
from gateway.store.database import Database
from gateway.store.tables import (
    AttemptRow,
    DeadLetterRow,
    DeliveryRow,
    IdempotencyRow,
    JobRow,
    NotificationRow,
)

NOTIFICATIONS = NotificationRow.__table__  # type: ignore[attr-defined]
DELIVERIES = DeliveryRow.__table__  # type: ignore[attr-defined]
ATTEMPTS = AttemptRow.__table__  # type: ignore[attr-defined]
JOBS = JobRow.__table__  # type: ignore[attr-defined]
IDEMPOTENCY = IdempotencyRow.__table__  # type: ignore[attr-defined]
DEAD_LETTERS = DeadLetterRow.__table__  # type: ignore[attr-defined]

T0 = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


def notification_row(notification_id: str | None = None, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": notification_id or new_id("n"),
        "event": "order.shipped",
        "user_id": "u_ada",
        "priority": "normal",
        "data": {"order_id": "A-1001"},
        "channels": None,
        "locale": None,
        "send_at": None,
        "idempotency_key": None,
        "producer": "orders",
        "status": "decided",
        "category": "transactional",
        "tier": "standard",
        "rule": "order_updates",
        "policy_version": "v1",
        "fallback": None,
        "created_at": T0,
        "decided_at": T0,
        "decide_owner": None,
        "decide_until": None,
        "bulk_id": None,
    }
    row.update(values)
    return row


def delivery_row(notification_id: str, channel: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": new_id("d"),
        "notification_id": notification_id,
        "user_id": "u_ada",
        "event": "order.shipped",
        "channel": channel,
        "status": "pending",
        "reason": None,
        "detail": None,
        "rule": "order_updates",
        "tier": "standard",
        "queue": "standard",
        "template": f"order.shipped.{channel}",
        "providers": [f"{channel}-provider"],
        "chain_position": None,
        "recipients": 1,
        "estimated_cost": 0.001,
        "fingerprint": f"fp-{channel}",
        "batch_key": None,
        "batch_max": None,
        "batch_closes_at": None,
        "grouped_into": None,
        "send_at": None,
        "expires_at": T0 + dt.timedelta(days=1),
        "attempts": 0,
        "next_attempt_at": None,
        "lease_owner": None,
        "lease_until": None,
        "provider": None,
        "provider_message_id": None,
        "created_at": T0,
        "updated_at": T0,
    }
    row.update(values)
    return row


async def insert(database: Database, table: sa.Table, *rows: dict[str, Any]) -> None:
    async with database.begin() as connection:
        await connection.execute(sa.insert(table), list(rows))


async def select(database: Database, table: sa.Table, *where: Any) -> list[Any]:
    """Rows of a table (primary key order), optionally filtered."""
    query = sa.select(table).where(*where).order_by(*table.primary_key.columns)
    async with database.connect() as connection:
        return list(await connection.execute(query))


async def count(database: Database, table: sa.Table, *where: Any) -> int:
    async with database.connect() as connection:
        found = await connection.scalar(sa.select(sa.func.count()).select_from(table).where(*where))
    return int(found or 0)
