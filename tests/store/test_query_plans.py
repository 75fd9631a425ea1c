"""SQLite's plans for the worker's lookups that run inside its write transactions.

SQLite keeps no statistics unless asked, so its planner picks an index by the shape of the
WHERE clause alone. A lookup it sends down the status index, where one value (`suppressed`)
is most of the table, grows with the table and holds the write lock meanwhile; these tests
pin the plans that keep such lookups to the rows they are about.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from gateway.store.database import Database
from gateway.store.grouping import folded_query
from tests.store.rows import DELIVERIES, NOTIFICATIONS, delivery_row, insert, notification_row


async def _plan(database: Database, query: sa.Select[tuple[str]]) -> str:
    compiled = query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    async with database.connect() as connection:
        rows = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
        return " / ".join(str(r[3]) for r in rows)


async def _suppressed(database: Database, count: int) -> None:
    """`count` suppressed deliveries of no batch, as every opted-out channel leaves."""
    await insert(database, NOTIFICATIONS, notification_row("n_1"))
    rows = [
        delivery_row("n_1", "sms", id=f"d_{i}", status="suppressed", reason="opted_out") for i in range(count)
    ]
    await insert(database, DELIVERIES, *rows)


async def test_a_digest_finds_its_folded_messages_by_batch_key_not_among_every_suppressed_one(
    sqlite_url: str,
) -> None:
    database = Database(sqlite_url)
    try:
        await _suppressed(database, 500)
        plan = await _plan(database, folded_query("u_1", "marketing.weekly_digest", "email"))
    finally:
        await database.dispose()
    assert "ix_deliveries_batch_key_status (batch_key=? AND status=?)" in plan, plan
    assert "ix_deliveries_status_lease" not in plan
