"""`insert_rows` stores exactly what SQLAlchemy's own INSERT stores, so every query reads it alike."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from gateway.store.bulk import insert_rows
from gateway.store.database import Database
from gateway.store.sqlite_values import sqlite_time
from tests.store.rows import ATTEMPTS, DELIVERIES, JOBS, NOTIFICATIONS, T0, delivery_row, notification_row

PARIS = dt.timezone(dt.timedelta(hours=1))


def twins(make: Any, **values: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two rows alike but for their ids: one for each way of inserting."""
    return make("a", **values), make("b", **values)


async def both_ways(
    database: Database, table: sa.Table, fast: list[dict[str, Any]], core: list[dict[str, Any]]
) -> None:
    async with database.begin() as connection:
        await insert_rows(connection, table, fast)
        await connection.execute(sa.insert(table), core)


def without(row: Any, *names: str) -> dict[str, Any]:
    return {k: v for k, v in row._mapping.items() if k not in names}


@pytest.mark.parametrize(
    "values",
    [
        {},
        # an offset other than UTC, microseconds of zero, JSON null and lists, unicode text
        {
            "created_at": dt.datetime(2026, 3, 29, 2, 30, tzinfo=PARIS),
            "send_at": T0 + dt.timedelta(seconds=5),
            "channels": ["push", "email"],
            "fallback": None,
            "data": {"name": "Zoë", "n": 3, "nested": {"ok": True, "none": None}},
            "locale": "fr-CA",
        },
    ],
)
async def test_a_notification_reads_back_the_same_either_way(
    database: Database, values: dict[str, Any]
) -> None:
    fast, core = twins(lambda i, **v: notification_row(f"n_{i}", **v), **values)
    await both_ways(database, NOTIFICATIONS, [fast], [core])
    async with database.connect() as connection:
        rows = {r.id: r for r in await connection.execute(sa.select(NOTIFICATIONS))}
    assert without(rows["n_a"], "id") == without(rows["n_b"], "id")
    assert rows["n_a"].created_at == values.get("created_at", T0)  # the same instant, as aware UTC
    assert rows["n_a"].created_at.tzinfo == dt.UTC


async def test_deliveries_jobs_and_attempts_read_back_the_same_and_compare_alike(database: Database) -> None:
    await both_ways(database, NOTIFICATIONS, [notification_row("n_a")], [notification_row("n_b")])
    lease = dt.datetime(2026, 11, 21, 12, 0, 0, 999_999, tzinfo=dt.UTC)
    fast = [
        delivery_row("n_a", c, id=f"d_a_{c}", lease_until=lease, providers=None) for c in ("push", "email")
    ]
    core = [
        delivery_row("n_b", c, id=f"d_b_{c}", lease_until=lease, providers=None) for c in ("push", "email")
    ]
    await both_ways(database, DELIVERIES, fast, core)
    job = {
        "queue": "standard",
        "deliveries": ["d_1", "d_2"],
        "priority": 1,
        "run_at": T0,
        "enqueued_at": None,
        "created_at": T0,
    }
    await both_ways(database, JOBS, [{**job, "id": "j_a"}], [{**job, "id": "j_b"}])
    attempt = {
        "at": T0,
        "provider": "fcm",
        "outcome": "delivered",
        "error": None,
        "provider_message_id": "m",
        "segments": None,
        "cost": 0.0075,
        "cost_source": "configured",
        "recipient": "3f2a9c0d1e",
    }
    await both_ways(
        database,
        ATTEMPTS,
        [{**attempt, "delivery_id": "d_a_push", "duration_ms": 1.5}],
        [{**attempt, "delivery_id": "d_b_push", "duration_ms": 1.5}],
    )
    async with database.connect() as connection:
        deliveries = {r.id: r for r in await connection.execute(sa.select(DELIVERIES))}
        for channel in ("push", "email"):
            assert without(deliveries[f"d_a_{channel}"], "id", "notification_id") == without(
                deliveries[f"d_b_{channel}"], "id", "notification_id"
            )
        # Comparisons made by SQLAlchemy-bound parameters see the fast rows as they see their twins.
        every = {f"d_{side}_{channel}" for side in "ab" for channel in ("push", "email")}
        for bound, wanted in (
            (lease - dt.timedelta(microseconds=1), set()),
            (lease, set()),
            (lease + dt.timedelta(microseconds=1), every),
        ):
            expired = set(
                await connection.scalars(sa.select(DELIVERIES.c.id).where(DELIVERIES.c.lease_until < bound))
            )
            assert expired == wanted, bound
        jobs = {r.id: r for r in await connection.execute(sa.select(JOBS))}
        assert without(jobs["j_a"], "id") == without(jobs["j_b"], "id")
        attempts = list(await connection.execute(sa.select(ATTEMPTS).order_by(ATTEMPTS.c.id)))
        assert without(attempts[0], "id", "delivery_id") == without(attempts[1], "id", "delivery_id")
        assert attempts[0].id is not None and attempts[0].id != attempts[1].id  # the key is still generated


async def test_the_rows_are_part_of_the_callers_transaction(database: Database) -> None:
    with pytest.raises(RuntimeError, match="abandon"):
        async with database.begin() as connection:
            await insert_rows(connection, NOTIFICATIONS, [notification_row("n_rolled_back")])
            raise RuntimeError("abandon the transaction")
    async with database.connect() as connection:
        assert await connection.scalar(sa.select(sa.func.count()).select_from(NOTIFICATIONS)) == 0


async def test_a_naive_datetime_is_refused(database: Database) -> None:
    with pytest.raises((ValueError, sa.exc.StatementError), match="aware"):
        async with database.begin() as connection:
            await insert_rows(
                connection, NOTIFICATIONS, [notification_row(created_at=dt.datetime(2026, 1, 1))]
            )


@settings(max_examples=200)
@given(
    st.datetimes(min_value=dt.datetime(1000, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_a_time_is_written_as_sqlalchemys_sqlite_datetime_writes_it(naive: dt.datetime, minutes: int) -> None:
    """The fast path's text is SQLAlchemy's for the same instant, whatever the offset."""
    aware = naive.replace(tzinfo=dt.timezone(dt.timedelta(minutes=minutes)))
    dialect = sqlite.dialect()
    sqlalchemy_writes = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert sqlalchemy_writes is not None
    expected = sqlalchemy_writes(aware.astimezone(dt.UTC).replace(tzinfo=None))
    assert sqlite_time(aware) == expected
    assert sqlite_time(aware.astimezone(dt.UTC)) == expected
