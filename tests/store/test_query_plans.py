"""SQLite's plans for the worker's lookups that run inside its write transactions.

SQLite keeps no statistics unless asked, so its planner picks an index by the shape of the
WHERE clause alone. A lookup it sends down the status index, where one value (`suppressed`)
is most of the table, grows with the table and holds the write lock meanwhile; these tests
pin the plans that keep such lookups to the rows they are about.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.dialects import sqlite

from gateway.queue.relay import QUEUES_PRESENT, oldest_taken
from gateway.store.claims import Claims
from gateway.store.database import Database
from gateway.store.grouping import folded_query, group_of
from gateway.store.intake import IntakeWriter
from gateway.store.outcomes import Outcome, Outcomes
from gateway.store.sqlite_writes import sqlite_driver
from tests.store.rows import DELIVERIES, JOBS, NOTIFICATIONS, T0, delivery_row, insert, notification_row


async def _explain(driver: Any, sql: str) -> str:
    """SQLite's plan of `sql` as prepared, its parameters unbound: literal values would let the
    planner see them, which it does not when the statement runs."""
    rows = await driver.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}", [None] * sql.count("?"))
    return " / ".join(str(r[3]) for r in rows)


async def _plan(database: Database, query: Any) -> str:
    sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"render_postcompile": True}))
    async with database.connect() as connection:
        return await _explain(await sqlite_driver(connection), sql)


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


async def _traced_plans(database: Database, run: Any) -> dict[str, str]:
    """Run `run(connection)` in a write transaction; the plan of each statement it sent,
    as prepared (SQLite plans a statement before its parameters are bound)."""
    sent: list[str] = []
    async with database.begin() as connection:
        driver = await sqlite_driver(connection)
        await driver.set_trace_callback(sent.append)
        await run(connection)
        await driver.set_trace_callback(None)
        plans = {}
        for sql in sent:
            if sql.lstrip().startswith(("UPDATE deliveries", "SELECT")):
                plans[sql] = await _explain(driver, sql)
    return plans


async def test_claims_and_outcomes_find_their_deliveries_by_id_however_many_wait(sqlite_url: str) -> None:
    """A claim's `status IN (pending, ...)` and an outcome's `status = 'sending'` only narrow
    the rows their ids found: on the status index they would visit every delivery waiting
    (quiet hours defer thousands) or being sent, inside the write lock."""
    database = Database(sqlite_url)
    try:
        await insert(database, NOTIFICATIONS, notification_row("n_1"))
        later = T0 + dt.timedelta(hours=8)
        waiting = [delivery_row("n_1", "email", status="scheduled", send_at=later) for _ in range(300)]
        due = [delivery_row("n_1", "email") for _ in range(20)]
        await insert(database, DELIVERIES, *waiting, *due)
        claims = Claims(database)
        taken: list[Any] = []

        async def claim(connection: Any) -> None:
            ids = [r["id"] for r in due]
            found = await claims.claim_in(connection, ids, "w1", T0 + dt.timedelta(minutes=5), T0)
            taken.extend(c for c in found if c is not None)

        claim_plans = await _traced_plans(database, claim)

        async def record(connection: Any) -> None:
            done = [
                Outcome(c, "delivered", provider="p", provider_message_id=f"m{n}")
                for n, c in enumerate(taken)
            ]
            await Outcomes(database).apply(connection, done, T0)

        outcome_plans = await _traced_plans(database, record)
    finally:
        await database.dispose()
    assert len(taken) == 20
    traced = {**claim_plans, **outcome_plans}
    updates = {sql: plan for sql, plan in traced.items() if sql.lstrip().startswith("UPDATE")}
    assert len(updates) == 2, updates  # the claim's and the outcome's
    for sql, plan in updates.items():
        assert "USING INDEX sqlite_autoindex_deliveries_1 (id=?)" in plan, (sql, plan)
        assert "ix_deliveries_status_lease" not in plan, (sql, plan)


async def test_idempotency_keys_of_a_batch_are_found_by_key_not_by_reading_them_all(sqlite_url: str) -> None:
    """A batch's keys are looked up one primary-key search each, however many are stored."""
    database = Database(sqlite_url)
    sent: list[str] = []
    try:
        store = IntakeWriter(database, idempotency_window=lambda: dt.timedelta(hours=24), clock=lambda: T0)
        async with database.connect() as connection:  # the pool's one connection, traced
            await (await sqlite_driver(connection)).set_trace_callback(sent.append)
        pairs = [("orders", "k-1"), ("orders", "k-2"), ("billing", "k-1")]
        assert await store.lookup_keys(pairs, T0) == {}
        async with database.connect() as connection:
            driver = await sqlite_driver(connection)
            await driver.set_trace_callback(None)
            (lookup,) = [sql for sql in sent if "idempotency_keys" in sql]
            plan = await _explain(driver, lookup)
    finally:
        await database.dispose()
    assert "SEARCH i USING INDEX sqlite_autoindex_idempotency_keys_1 (scope=? AND key=?)" in plan, plan
    assert "SCAN i" not in plan


async def test_the_relay_finds_each_queue_s_oldest_jobs_on_the_queue_index(sqlite_url: str) -> None:
    """Every few seconds, however many jobs wait for their time: the queues present by a skip
    through the index, each queue's oldest taken jobs by a range read in order."""
    database = Database(sqlite_url)
    try:
        later = T0 + dt.timedelta(hours=8)
        waiting = [
            {"id": f"j_{i}", "queue": "bulk", "deliveries": [f"d_{i}"], "priority": 1, "run_at": later,
             "enqueued_at": T0, "created_at": T0}
            for i in range(300)
        ]  # fmt: skip
        await insert(database, JOBS, *waiting)
        present = await _plan(database, QUEUES_PRESENT)
        taken = await _plan(database, oldest_taken("bulk", T0, 500))
    finally:
        await database.dispose()
    assert "SCAN jobs" not in present.replace("SCAN jobs USING COVERING INDEX", ""), present
    assert "ix_jobs_queue_run_at" in present, present
    assert "SEARCH jobs USING INDEX ix_jobs_queue_run_at (queue=? AND run_at<?)" in taken, taken
    assert "TEMP B-TREE" not in taken, taken


async def test_a_group_is_found_on_the_index_of_grouped_rows_alone(sqlite_url: str) -> None:
    """`grouped_into`, like `batch_key` and `bulk_id`, is indexed only where set (migration
    0014): most deliveries are never grouped, and a full index took an entry for each."""
    database = Database(sqlite_url)
    try:
        await _suppressed(database, 50)
        plans = await _traced_plans(database, lambda connection: group_of(connection, "d_0"))
        async with database.connect() as connection:
            driver = await sqlite_driver(connection)
            indexes = await driver.execute_fetchall(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name IN "
                "('ix_deliveries_grouped_into', 'ix_deliveries_batch_key_status', 'ix_notifications_bulk_id')"
            )
    finally:
        await database.dispose()
    (plan,) = plans.values()
    assert "SEARCH deliveries USING INDEX ix_deliveries_grouped_into (grouped_into=?)" in plan, plan
    assert len(indexes) == 3
    for name, sql in indexes:
        assert sql.endswith("IS NOT NULL"), (name, sql)
