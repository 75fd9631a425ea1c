"""Claims on intents stored undecided: one decider each, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

from gateway.store.database import Database
from gateway.store.intake import Pending
from gateway.store.undecided import UndecidedStore
from tests.store.rows import NOTIFICATIONS, T0, insert, notification_row, select

LEASE = dt.timedelta(seconds=30)


async def undecided(database: Database, count: int) -> list[str]:
    rows = [
        notification_row(status="undecided", created_at=T0 + dt.timedelta(milliseconds=n), decided_at=None)
        for n in range(count)
    ]
    await insert(database, NOTIFICATIONS, *rows)
    return [r["id"] for r in rows]


async def test_racing_claims_take_each_intent_once(database: Database) -> None:
    ids = await undecided(database, 40)
    store = UndecidedStore(database)
    claims = await asyncio.gather(*(store.claim(f"worker-{n}", T0, LEASE, 15) for n in range(4)))
    taken = [row.id for claim in claims for row in claim]
    assert sorted(taken) == sorted(ids)  # every intent claimed, none twice
    assert all(claim == sorted(claim, key=lambda r: r.created_at) for claim in claims)  # oldest first


async def test_a_claim_is_taken_over_only_after_its_lease(database: Database) -> None:
    [intent] = await undecided(database, 1)
    store = UndecidedStore(database)
    assert [r.id for r in await store.claim("first", T0, LEASE, 10)] == [intent]
    assert await store.claim("second", T0 + LEASE / 2, LEASE, 10) == []
    assert [r.id for r in await store.claim("first", T0 + LEASE / 2, LEASE, 10)] == [intent]  # its own again
    assert [r.id for r in await store.claim("second", T0 + LEASE * 2, LEASE, 10)] == [intent]


async def test_only_the_claim_holder_records_the_decision(database: Database) -> None:
    [intent] = await undecided(database, 1)
    store = UndecidedStore(database)
    await store.claim("stalled", T0, LEASE, 10)
    await store.claim("rescuer", T0 + LEASE * 2, LEASE, 10)  # the stalled one's lease ran out

    def decided() -> Pending:
        note = notification_row(intent, status="decided", category="transactional", tier="standard")
        return Pending(notification=note, deliveries=[], job_specs=[], idempotency=None)

    assert await store.record(decided(), "stalled", T0 + LEASE * 2) is None  # it lost the intent
    assert await store.record(decided(), "rescuer", T0 + LEASE * 2) == []
    [row] = await select(database, NOTIFICATIONS)
    assert (row.status, row.decide_owner, row.decide_until) == ("decided", None, None)
    assert await store.claim("anyone", T0 + LEASE * 9, LEASE, 10) == []  # decided intents are not claimed


async def test_released_claims_are_free_at_once(database: Database) -> None:
    ids = await undecided(database, 3)
    store = UndecidedStore(database)
    await store.claim("first", T0, LEASE, 10)
    await store.release("first", ids[1:])
    assert sorted(r.id for r in await store.claim("second", T0, LEASE, 10)) == sorted(ids[1:])
