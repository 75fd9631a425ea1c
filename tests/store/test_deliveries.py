"""DeliveryStore: claims by compare-and-set, outcomes under a lease, fallback, dead letters."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.ids import new_id
from gateway.store.database import Database
from gateway.store.deliveries import Applied, Claimed, DeliveryStore, Outcome, Try
from tests.store.rows import (
    ATTEMPTS,
    DEAD_LETTERS,
    DELIVERIES,
    JOBS,
    NOTIFICATIONS,
    T0,
    count,
    delivery_row,
    insert,
    notification_row,
    select,
)

LEASE = dt.timedelta(seconds=30)


@pytest.fixture
def store(database: Database) -> DeliveryStore:
    return DeliveryStore(database)


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


# --- claim ---------------------------------------------------------------------------------


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


# --- apply ---------------------------------------------------------------------------------


async def test_only_the_lease_owner_records_an_outcome(database: Database, store: DeliveryStore) -> None:
    row = delivery("email", chain_position=0)
    standby = delivery("sms", status="standby", chain_position=1)
    await seed(database, row, standby)
    stale = await claim_one(store, row["id"], "w1", T0)
    later = T0 + LEASE + dt.timedelta(seconds=5)
    current = await claim_one(store, row["id"], "w2", later)
    assert current.reclaimed

    # w1 comes back after its lease expired: nothing it says changes the delivery.
    (ignored,) = await apply(
        database,
        store,
        [Outcome(stale, "dead", tries=[Try("p1", "permanent", error="boom")], error="boom", fall_back=True)],
        later,
    )
    assert (ignored.jobs, ignored.activated) == ([], [])
    after = await one(database, row["id"])
    assert (after.status, after.lease_owner, after.detail) == ("sending", "w2", None)
    assert await count(database, DEAD_LETTERS) == 0
    assert (await one(database, standby["id"])).status == "standby"
    assert await count(database, JOBS) == 0
    async with database.connect() as connection:
        kept = (await connection.execute(sa.text("SELECT outcome, error FROM attempts"))).one()
    # Its provider call is kept for the audit, never as an outcome of its own.
    assert tuple(kept) == ("superseded", "permanent after this worker's lease ran out: boom")

    (applied,) = await apply(
        database,
        store,
        [
            Outcome(
                current,
                "delivered",
                tries=[Try("p1", "delivered", provider_message_id="m-1")],
                provider="p1",
                provider_message_id="m-1",
            )
        ],
        later + dt.timedelta(seconds=1),
    )
    assert (applied.jobs, applied.activated) == ([], [])
    done = await one(database, row["id"])
    assert (done.status, done.provider, done.provider_message_id, done.lease_owner, done.lease_until) == (
        "delivered",
        "p1",
        "m-1",
        None,
        None,
    )
    # And once settled, a late outcome from the same owner does not reopen it.
    await apply(database, store, [Outcome(current, "retrying", retry_at=later)], later)
    assert (await one(database, row["id"])).status == "delivered"


async def test_retrying_records_the_time_and_writes_a_job_at_it(
    database: Database, store: DeliveryStore
) -> None:
    row = delivery("email", queue="standard")
    notification_id = await seed(database, row)
    claimed = await claim_one(store, row["id"], "w1")
    retry_at = T0 + dt.timedelta(minutes=5)
    (applied,) = await apply(
        database,
        store,
        [
            Outcome(
                claimed,
                "retrying",
                tries=[Try("p1", "retryable", error="503")],
                reason="provider_error",
                error="503",
                retry_at=retry_at,
            )
        ],
        T0 + dt.timedelta(seconds=2),
    )
    after = await one(database, row["id"])
    assert (after.status, after.next_attempt_at, after.reason, after.detail) == (
        "retrying",
        retry_at,
        "provider_error",
        "503",
    )
    assert (after.lease_owner, after.lease_until) == (None, None)
    (job,) = await select(database, JOBS)
    assert (job.queue, job.deliveries, job.run_at, job.enqueued_at) == (
        "standard",
        [row["id"]],
        retry_at,
        None,
    )
    assert [j.id for j in applied.jobs] == [job.id]
    # A job that comes before the backoff is over (a duplicate, a re-push) finds it early ...
    before = retry_at - dt.timedelta(seconds=1)
    todo = await store.claimable([row["id"]], before)
    assert (todo.now, todo.early) == ([], [(row["id"], "standard", retry_at)])
    assert await store.claim([row["id"]], "w2", LEASE, before) == []
    # ... and, rather than drop it, gives it a job at its time.
    (again,) = await store.requeue(todo.early, before)
    assert (again.queue, again.deliveries, again.run_at) == ("standard", [row["id"]], retry_at)
    # At its time, the retry is claimable again.
    assert (await store.claimable([row["id"]], retry_at)).now == [
        (row["id"], notification_id, row["user_id"])
    ]
    assert (await claim_one(store, row["id"], "w2", retry_at)).attempts == 2


async def test_dead_writes_a_dead_letter(database: Database, store: DeliveryStore) -> None:
    row = delivery("email")
    notification_id = await seed(database, row)
    claimed = await claim_one(store, row["id"], "w1")
    await apply(
        database,
        store,
        [
            Outcome(
                claimed,
                "dead",
                tries=[Try("p1", "retryable", error="timeout")],
                reason="retries_exhausted",
                error="timeout",
            )
        ],
        T0 + dt.timedelta(seconds=3),
    )
    assert (await one(database, row["id"])).status == "dead"
    (letter,) = await select(database, DEAD_LETTERS)
    assert (letter.delivery_id, letter.notification_id, letter.user_id, letter.channel) == (
        row["id"],
        notification_id,
        "u_ada",
        "email",
    )
    assert (letter.error, letter.attempts, letter.created_at, letter.replayed_at) == (
        "timeout",
        1,
        T0 + dt.timedelta(seconds=3),
        None,
    )
    assert await count(database, JOBS) == 0


async def test_falling_back_wakes_the_lowest_standby_of_the_chain(
    database: Database, store: DeliveryStore
) -> None:
    failing = delivery("push", chain_position=0)
    # Made first so its id sorts first: the chain position, not the id, decides.
    third = delivery("email", status="standby", chain_position=2, queue="standard")
    second = delivery("sms", status="standby", chain_position=1, queue="critical", send_at=T0)
    other = await seed(database, delivery("sms", status="standby", chain_position=1))
    await seed(database, failing, third, second)
    claimed = await claim_one(store, failing["id"], "w1")
    now = T0 + dt.timedelta(seconds=4)
    (applied,) = await apply(
        database,
        store,
        [
            Outcome(
                claimed,
                "failed",
                tries=[Try("apns", "permanent", error="bad token")],
                reason="invalid",
                error="bad token",
                fall_back=True,
            )
        ],
        now,
    )
    assert applied.activated == [second["id"]]
    woken = await one(database, second["id"])
    assert (woken.status, woken.send_at, woken.detail) == ("pending", None, "fallback after push")
    assert (await one(database, third["id"])).status == "standby"
    assert {r.status for r in await select(database, DELIVERIES, DELIVERIES.c.notification_id == other)} == {
        "standby"
    }
    (job,) = await select(database, JOBS)
    assert (job.queue, job.deliveries, job.run_at, job.priority) == ("critical", [second["id"]], now, 0)
    assert [j.id for j in applied.jobs] == [job.id]
    assert (await one(database, failing["id"])).status == "failed"


async def test_two_concurrent_fallbacks_wake_the_standby_only_once(
    database: Database, store: DeliveryStore
) -> None:
    push, email = delivery("push", chain_position=0), delivery("email")
    standby = delivery("sms", status="standby", chain_position=1)
    await seed(database, push, email, standby)
    claims = {c.channel: c for c in await store.claim([push["id"], email["id"]], "w1", LEASE, T0)}
    now = T0 + dt.timedelta(seconds=1)
    first_applied, release = asyncio.Event(), asyncio.Event()

    async def first() -> list[Applied]:
        async with database.begin() as connection:
            applied = await store.apply(connection, [Outcome(claims["push"], "failed", fall_back=True)], now)
            first_applied.set()
            await release.wait()  # hold the transaction open while the second one runs into it
        return applied

    async def second() -> list[Applied]:
        await first_applied.wait()
        async with database.begin() as connection:
            return await store.apply(connection, [Outcome(claims["email"], "failed", fall_back=True)], now)

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await first_applied.wait()
    await asyncio.sleep(0.3)
    release.set()
    (one_, two_) = [applied for (applied,) in await asyncio.gather(*tasks)]
    assert one_.activated + two_.activated == [standby["id"]]
    (job,) = await select(database, JOBS)
    assert job.deliveries == [standby["id"]]
    assert (await one(database, standby["id"])).status == "pending"
    assert {r.status for r in await select(database, DELIVERIES, DELIVERIES.c.id != standby["id"])} == {
        "failed"
    }


# --- reading: status, dead letters, replay ---------------------------------------------------


async def test_status_lists_deliveries_with_their_attempts_in_order(
    database: Database, store: DeliveryStore
) -> None:
    suppressed = delivery("sms", status="suppressed", reason="opted_out", detail="user opted out")
    push = delivery("push", chain_position=0)
    email = delivery("email", status="standby", chain_position=1, tier="standard")
    in_app = delivery("in_app")
    notification_id = await seed(database, suppressed, push, email, in_app, fallback=["push", "email"])

    claimed = await claim_one(store, push["id"], "w1", T0)
    first_try = T0 + dt.timedelta(seconds=1)
    await apply(
        database,
        store,
        [
            Outcome(
                claimed,
                "retrying",
                tries=[Try("apns", "retryable", error="503")],
                retry_at=first_try,
                error="503",
            )
        ],
        first_try,
    )
    claimed = await claim_one(store, push["id"], "w2", first_try)
    second_try = T0 + dt.timedelta(seconds=2)
    await apply(
        database,
        store,
        [
            Outcome(
                claimed,
                "delivered",
                tries=[
                    Try("apns", "retryable", error="timeout"),
                    Try("fcm", "delivered", provider_message_id="m-9"),
                ],
                provider="fcm",
                provider_message_id="m-9",
            )
        ],
        second_try,
    )

    status = await store.status(notification_id)
    assert status is not None
    assert (status.notification_id, status.event, status.user_id, status.created_at) == (
        notification_id,
        "order.shipped",
        "u_ada",
        T0,
    )
    assert status.fallback == ["push", "email"]
    # The chain first, in chain order; then the rest by id.
    off_chain = sorted([(suppressed["id"], "sms", "suppressed"), (in_app["id"], "in_app", "pending")])
    assert [(d.channel, d.status) for d in status.deliveries] == [
        ("push", "delivered"),
        ("email", "standby"),
        *((c, s) for _, c, s in off_chain),
    ]
    by_channel = {d.channel: d for d in status.deliveries}
    assert [
        (a.at, a.provider, a.outcome, a.error, a.provider_message_id) for a in by_channel["push"].attempts
    ] == [
        (first_try, "apns", "retryable", "503", None),
        (second_try, "apns", "retryable", "timeout", None),
        (second_try, "fcm", "delivered", None, "m-9"),
    ]
    assert by_channel["push"].provider == "fcm"
    assert (by_channel["sms"].reason, by_channel["sms"].detail, by_channel["sms"].attempts) == (
        "opted_out",
        "user opted out",
        [],
    )
    assert await store.status("n_missing") is None


async def dead_lettered(database: Database, store: DeliveryStore, how_many: int) -> list[str]:
    """Dead-letter `how_many` deliveries one by one; their dead letter ids, oldest first."""
    rows = [delivery(f"c{i}") for i in range(how_many)]
    await seed(database, *rows)
    for i, row in enumerate(rows):
        claimed = await claim_one(store, row["id"], "w1")
        await apply(
            database, store, [Outcome(claimed, "dead", error=f"error {i}")], T0 + dt.timedelta(seconds=i)
        )
        await asyncio.sleep(0.002)  # dead letter ids are time-ordered to the millisecond
    by_delivery = {r.delivery_id: r.id for r in await select(database, DEAD_LETTERS)}
    return [by_delivery[row["id"]] for row in rows]


async def test_dead_letters_are_paged_newest_first(database: Database, store: DeliveryStore) -> None:
    letters = await dead_lettered(database, store, 7)
    pages, cursor = [], None
    while True:
        page = await store.dead_letters(3, cursor, include_replayed=False)
        pages.append([d.dead_letter_id for d in page.dead_letters])
        cursor = page.next_cursor
        if cursor is None:
            break
        assert cursor == pages[-1][-1]
    newest_first = letters[::-1]
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]

    # An exact multiple of the page size ends without an empty extra page.
    page = await store.dead_letters(7, None, include_replayed=False)
    assert len(page.dead_letters) == 7 and page.next_cursor is None

    replayed = letters[2]
    assert await store.replay(replayed, T0 + dt.timedelta(hours=1)) is not None
    shown = await store.dead_letters(10, None, include_replayed=False)
    assert [d.dead_letter_id for d in shown.dead_letters] == [i for i in newest_first if i != replayed]
    everything = await store.dead_letters(10, None, include_replayed=True)
    assert [d.dead_letter_id for d in everything.dead_letters] == newest_first
    (marked,) = [d for d in everything.dead_letters if d.dead_letter_id == replayed]
    assert marked.replayed_at == T0 + dt.timedelta(hours=1)
    # Paging skips replayed letters too.
    first = await store.dead_letters(2, None, include_replayed=False)
    rest = await store.dead_letters(10, first.next_cursor, include_replayed=False)
    assert [d.dead_letter_id for d in first.dead_letters + rest.dead_letters] == [
        i for i in newest_first if i != replayed
    ]


async def test_replay_makes_a_new_pending_delivery_and_job_once(
    database: Database, store: DeliveryStore
) -> None:
    (letter_id,) = await dead_lettered(database, store, 1)
    (dead,) = await select(database, DELIVERIES)
    now = T0 + dt.timedelta(hours=2)
    replayed = await store.replay(letter_id, now)
    assert replayed is not None
    letter, job = replayed
    assert (letter.dead_letter_id, letter.delivery_id, letter.replayed_at) == (letter_id, dead.id, now)
    new_id_ = letter.replay_delivery_id
    assert new_id_ is not None and new_id_ != dead.id
    fresh = await one(database, new_id_)
    assert (fresh.notification_id, fresh.channel, fresh.status, fresh.attempts) == (
        dead.notification_id,
        dead.channel,
        "pending",
        0,
    )
    assert (fresh.lease_owner, fresh.reason, fresh.detail, fresh.created_at) == (
        None,
        None,
        f"replay of {dead.id}",
        now,
    )
    assert (fresh.template, fresh.providers, fresh.queue) == (dead.template, dead.providers, dead.queue)
    (stored_job,) = await select(database, JOBS)
    assert (stored_job.id, stored_job.queue, stored_job.deliveries, stored_job.run_at) == (
        job.id,
        dead.queue,
        [new_id_],
        now,
    )
    assert job.deliveries == [new_id_]
    assert (await one(database, dead.id)).status == "dead"  # kept, for the record
    (stored_letter,) = await select(database, DEAD_LETTERS)
    assert (stored_letter.replayed_at, stored_letter.replay_delivery_id) == (now, new_id_)

    assert await store.replay(letter_id, now + dt.timedelta(minutes=1)) is None
    assert await store.replay("dl_missing", now) is None
    assert await count(database, DELIVERIES) == 2
    assert await count(database, JOBS) == 1
    assert (await store.dead_letter(letter_id)).replayed_at == now  # type: ignore[union-attr]
    # The replayed delivery is an ordinary open delivery.
    assert (await claim_one(store, new_id_, "w9", now)).attempts == 1


# --- time -------------------------------------------------------------------------------------

INDIA = dt.timezone(dt.timedelta(hours=5, minutes=30))
PACIFIC = dt.timezone(dt.timedelta(hours=-8))
TOKYO = dt.timezone(dt.timedelta(hours=9))


def aware_utc(value: dt.datetime | None) -> bool:
    return value is not None and value.tzinfo is not None and value.utcoffset() == dt.timedelta(0)


async def test_timestamps_come_back_as_aware_utc_whatever_offset_they_were_stored_with(
    database: Database, store: DeliveryStore
) -> None:
    send_at = dt.datetime(2026, 11, 21, 18, 30, 0, 250_000, tzinfo=INDIA)  # 13:00:00.25 UTC
    expires_at = dt.datetime(2026, 11, 22, 4, 0, tzinfo=PACIFIC)  # 12:00 UTC the next day
    row = delivery("email", send_at=send_at, expires_at=expires_at, created_at=send_at, updated_at=send_at)
    notification_id = await seed(database, row, created_at=expires_at)

    async with database.connect() as connection:
        stored = (
            await connection.execute(
                sa.select(DELIVERIES.c.send_at, DELIVERIES.c.expires_at, DELIVERIES.c.created_at)
            )
        ).one()
    for value in stored:
        assert aware_utc(value), value
    assert tuple(stored) == (send_at, expires_at, send_at)
    assert stored.send_at.hour == 13 and stored.send_at.microsecond == 250_000
    assert stored.expires_at.day == 22 and stored.expires_at.hour == 12

    # 22:00:00 in Tokyo is 250 ms before its send time: too early to claim, due a second later.
    assert await store.claim([row["id"]], "w1", LEASE, dt.datetime(2026, 11, 21, 22, 0, tzinfo=TOKYO)) == []
    claimed = await claim_one(store, row["id"], "w1", dt.datetime(2026, 11, 21, 22, 0, 1, tzinfo=TOKYO))
    assert aware_utc(claimed.send_at) and claimed.send_at == send_at
    assert aware_utc(claimed.expires_at) and claimed.expires_at == expires_at
    lease = await one(database, row["id"])
    assert (
        aware_utc(lease.lease_until)
        and lease.lease_until == dt.datetime(2026, 11, 21, 13, 0, 1, tzinfo=dt.UTC) + LEASE
    )

    await apply(
        database,
        store,
        [Outcome(claimed, "dead", tries=[Try("p", "permanent")], error="x")],
        dt.datetime(2026, 11, 21, 9, 0, tzinfo=PACIFIC),
    )
    status = await store.status(notification_id)
    assert status is not None
    assert aware_utc(status.created_at) and status.created_at == expires_at
    (item,) = status.deliveries
    assert aware_utc(item.send_at) and item.send_at == send_at
    assert aware_utc(item.expires_at) and item.expires_at == expires_at
    (attempt,) = item.attempts
    assert aware_utc(attempt.at) and attempt.at == dt.datetime(2026, 11, 21, 17, tzinfo=dt.UTC)
    (letter,) = (await store.dead_letters(10, None, include_replayed=True)).dead_letters
    assert aware_utc(letter.created_at) and letter.created_at == dt.datetime(2026, 11, 21, 17, tzinfo=dt.UTC)


async def test_leases_compare_instants_not_wall_clock_text(database: Database, store: DeliveryStore) -> None:
    """12:00 UTC is 21:00 in Tokyo and 04:00 in the Pacific: the store must order them as instants."""
    until = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
    row = delivery("email", status="sending", lease_owner="w1", lease_until=until)
    await seed(database, row)
    before = (until - dt.timedelta(minutes=1)).astimezone(TOKYO)  # reads later than 12:00
    assert await store.claim([row["id"]], "w2", LEASE, before) == []
    after = (until + dt.timedelta(minutes=1)).astimezone(PACIFIC)  # reads earlier than 12:00
    assert (await claim_one(store, row["id"], "w2", after)).reclaimed is True


async def test_a_naive_datetime_is_refused(database: Database) -> None:
    row = delivery("email", send_at=dt.datetime(2026, 11, 21, 12, 0))
    notification_id = new_id("n")
    await insert(database, NOTIFICATIONS, notification_row(notification_id))
    with pytest.raises(sa.exc.StatementError, match="aware datetimes only"):
        await insert(database, DELIVERIES, {**row, "notification_id": notification_id})
    assert await count(database, DELIVERIES) == 0
    assert await count(database, ATTEMPTS) == 0


# --- groups: a batch's message failing for good ---------------------------------------------


async def test_a_group_failing_for_good_wakes_every_items_fallback_and_frees_folded_messages(
    database: Database, store: DeliveryStore
) -> None:
    """Each grouped item belongs to its own notification: each one's next channel wakes."""
    batch = {"batch_key": "u_ada:social.like:push", "batch_max": 50, "batch_closes_at": T0}
    pushes, standbys = [], []
    for i in range(3):
        push = delivery("push", **batch, event="social.like", created_at=T0 + dt.timedelta(seconds=i))
        email = delivery("email", status="standby", chain_position=1)
        await seed(database, push, email, event="social.like")
        pushes.append(push["id"])
        standbys.append(email["id"])
    folded = delivery(
        "push",
        status="suppressed",
        reason="frequency_capped",
        batch_key="u_ada:digest:social.like",
        event="social.promo",
        created_at=T0 + dt.timedelta(seconds=9),
    )
    await seed(database, folded, event="social.promo")
    (leader,) = await store.claim([pushes[0]], "w1", LEASE, T0, digests={"social.like"})
    assert [m.delivery_id for m in leader.members] == [*pushes[1:], folded["id"]]
    failed = Outcome(
        leader,
        "failed",
        tries=[Try("fcm", "permanent", "gone")],
        reason="unregistered",
        error="gone",
        fall_back=True,
    )
    (applied,) = await apply(database, store, [failed], T0)
    assert sorted(applied.activated) == sorted(standbys)  # every item's email, not only the leader's
    assert [(await one(database, p)).status for p in pushes] == ["failed"] * 3
    freed = await one(database, folded["id"])
    assert (freed.status, freed.grouped_into) == ("suppressed", None)  # waits for the next digest
