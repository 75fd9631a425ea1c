"""Claims: a compare-and-set with a lease gives each delivery to exactly one worker."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from gateway.store.database import Database
from gateway.store.deliveries import DeliveryStore
from tests.store.lifecycle import LEASE, PACIFIC, TOKYO, claim_one, delivery, one, seed
from tests.store.rows import (
    DELIVERIES,
    T0,
    select,
)


async def test_concurrent_claims_give_each_delivery_to_exactly_one_owner(
    database: Database, store: DeliveryStore
) -> None:
    rows = [delivery(f"c{i}") for i in range(30)]
    await seed(database, *rows)
    ids = [row["id"] for row in rows]
    owners = ["w1", "w2", "w3", "w4"]
    claims = await asyncio.gather(*(store.claim(list(ids), owner, LEASE, T0) for owner in owners))
    winners = {c.id: owner for owner, claimed in zip(owners, claims, strict=True) for c in claimed}
    assert sum(len(c) for c in claims) == 30 and set(winners) == set(ids)
    for row in await select(database, DELIVERIES):
        assert (row.status, row.lease_owner, row.attempts) == ("sending", winners[row.id], 1)
        assert row.lease_until == T0 + LEASE


async def test_two_owners_racing_for_one_delivery(database: Database, store: DeliveryStore) -> None:
    row = delivery("email")
    await seed(database, row)
    first, second = await asyncio.gather(
        store.claim([row["id"]], "w1", LEASE, T0), store.claim([row["id"]], "w2", LEASE, T0)
    )
    assert sorted([len(first), len(second)]) == [0, 1]
    (claimed,) = first or second
    assert claimed.id == row["id"] and claimed.attempts == 1 and claimed.reclaimed is False
    assert (await one(database, row["id"])).lease_owner == claimed.owner


@pytest.mark.parametrize("status", ["delivered", "suppressed", "standby", "dead", "failed", "expired"])
async def test_a_settled_or_standby_delivery_is_never_claimed(
    database: Database, store: DeliveryStore, status: str
) -> None:
    row = delivery("email", status=status)
    await seed(database, row)
    assert await store.claim([row["id"]], "w1", LEASE, T0 + dt.timedelta(days=30)) == []
    after = await one(database, row["id"])
    assert (after.status, after.lease_owner, after.attempts) == (status, None, 0)


@pytest.mark.parametrize("status", ["pending", "scheduled", "retrying"])
async def test_an_open_delivery_is_claimed(database: Database, store: DeliveryStore, status: str) -> None:
    row = delivery("email", status=status, attempts=2, send_at=T0)
    await seed(database, row)
    claimed = await claim_one(store, row["id"], "w1")
    assert (claimed.attempts, claimed.reclaimed, claimed.owner, claimed.send_at) == (3, False, "w1", T0)
    assert (await one(database, row["id"])).attempts == 3


async def test_a_sending_delivery_is_reclaimed_only_once_its_lease_expired(
    database: Database, store: DeliveryStore
) -> None:
    expired = delivery(
        "email", status="sending", lease_owner="dead", lease_until=T0 - dt.timedelta(seconds=1)
    )
    valid = delivery("sms", status="sending", lease_owner="alive", lease_until=T0 + dt.timedelta(seconds=1))
    await seed(database, expired, valid, delivery("push", status="sending", lease_owner="x", attempts=1))
    claims = await store.claim([r["id"] for r in (expired, valid)], "w2", LEASE, T0)
    assert [(c.id, c.reclaimed, c.owner) for c in claims] == [(expired["id"], True, "w2")]
    taken = await one(database, expired["id"])
    assert (taken.lease_owner, taken.lease_until, taken.attempts) == ("w2", T0 + LEASE, 1)
    kept = await one(database, valid["id"])
    assert (kept.lease_owner, kept.lease_until) == ("alive", T0 + dt.timedelta(seconds=1))
    # Reclaiming it again while w2 holds it fails; once w2's lease has run out it works.
    assert await store.claim([expired["id"]], "w3", LEASE, T0 + LEASE - dt.timedelta(seconds=1)) == []
    again = await claim_one(store, expired["id"], "w3", T0 + LEASE + dt.timedelta(seconds=1))
    assert (again.reclaimed, again.attempts) == (True, 2)
    # Two owners reclaiming the same dead sender's delivery at once: one gets it.
    late = T0 + 3 * LEASE
    racing = await asyncio.gather(*(store.claim([expired["id"]], f"r{i}", LEASE, late) for i in range(3)))
    assert sorted(len(c) for c in racing) == [0, 0, 1]
    (winner,) = [c for claimed in racing for c in claimed]
    assert winner.reclaimed and (await one(database, expired["id"])).lease_owner == winner.owner


async def test_leases_compare_instants_not_wall_clock_text(database: Database, store: DeliveryStore) -> None:
    """12:00 UTC is 21:00 in Tokyo and 04:00 in the Pacific: the store must order them as instants."""
    until = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
    row = delivery("email", status="sending", lease_owner="w1", lease_until=until)
    await seed(database, row)
    before = (until - dt.timedelta(minutes=1)).astimezone(TOKYO)  # reads later than 12:00
    assert await store.claim([row["id"]], "w2", LEASE, before) == []
    after = (until + dt.timedelta(minutes=1)).astimezone(PACIFIC)  # reads earlier than 12:00
    assert (await claim_one(store, row["id"], "w2", after)).reclaimed is True


async def test_a_job_reads_its_deliveries_with_what_sending_them_reads_of_their_notifications(
    database: Database, store: DeliveryStore
) -> None:
    """One read per job, the same answer on both databases (SQLite's goes to the driver and
    converts times and JSON itself): due, early and settled deliveries told apart, a
    delivery named twice read once, and each notification's data, locale and decision."""
    data = {"order_id": "A-1001", "items": [{"sku": "X1", "qty": 2}], "total": 12.5, "gift": True}
    later = T0 + dt.timedelta(hours=3)
    due, early, done = delivery("email"), delivery("sms", status="scheduled", send_at=later), delivery("push")
    done["status"] = "delivered"
    nid = await seed(
        database, due, early, done, data=data, locale="fr-CA", created_at=T0 - dt.timedelta(seconds=7)
    )
    todo = await store.claimable([due["id"], early["id"], done["id"], due["id"]], T0)
    assert todo.now == [(due["id"], nid, due["user_id"])]
    assert todo.early == [(early["id"], early["queue"], later)]
    note = todo.notifications[nid]
    assert (note.id, note.event, note.data, note.locale) == (nid, "order.shipped", data, "fr-CA")
    assert (note.priority, note.category, note.rule) == ("normal", "transactional", "order_updates")
    assert note.created_at == T0 - dt.timedelta(seconds=7)
    assert note.created_at is not None and note.created_at.tzinfo is not None


def test_the_sqlite_claim_takes_the_statuses_every_claim_takes() -> None:
    """SQLite's fixed claim text spells out `grouping.OPEN`; it must not drift from it."""
    from gateway.store.claims import _SQLITE_CLAIM_OPEN
    from gateway.store.grouping import OPEN

    assert f"IN ({', '.join(repr(status) for status in OPEN)})" in _SQLITE_CLAIM_OPEN
