"""Outcomes: stored only under the claim's lease, with their retry, dead letter or fallback."""

from __future__ import annotations

import asyncio
import datetime as dt

import sqlalchemy as sa

from gateway.store.database import Database
from gateway.store.deliveries import DeliveryStore
from gateway.store.outcomes import Applied, Outcome, Try
from tests.store.lifecycle import LEASE, apply, claim_one, delivery, one, seed
from tests.store.rows import (
    DEAD_LETTERS,
    DELIVERIES,
    JOBS,
    T0,
    count,
    select,
)


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


# --- a batch: one UPDATE for every outcome ---------------------------------------------------


async def test_a_batch_of_mixed_outcomes_is_stored_as_one_by_one_would(
    database: Database, store: DeliveryStore
) -> None:
    """One transaction (as the worker's group commit makes) with every kind of outcome, a
    lost lease and the same delivery twice: each row ends as if its outcome were alone."""
    rows = {
        name: delivery(name, status="retrying" if name == "waits" else "pending")
        for name in ("sent", "waits", "later", "gone", "dead", "lost")
    }
    await seed(database, *rows.values())
    claims = {name: await claim_one(store, row["id"], "w1", T0) for name, row in rows.items()}
    retake = T0 + LEASE + dt.timedelta(seconds=1)
    await claim_one(store, rows["lost"]["id"], "w2", retake)  # w1's lease on `lost` ran out
    retry_at = T0 + dt.timedelta(minutes=2)
    outcomes = [
        Outcome(
            claims["sent"],
            "delivered",
            tries=[Try("p", "delivered", provider_message_id="m1")],
            provider="p",
            provider_message_id="m1",
        ),
        Outcome(
            claims["waits"],
            "retrying",
            tries=[Try("p", "skipped")],
            reason="providers_unavailable",
            error="every provider is unavailable",
            retry_at=retry_at,
            waited=True,
        ),
        Outcome(
            claims["later"],
            "retrying",
            tries=[Try("p", "retryable", "HTTP 503")],
            reason="http_503",
            error="HTTP 503",
            retry_at=retry_at,
        ),
        Outcome(claims["gone"], "failed", tries=[Try("p", "permanent", "gone")], reason="gone", error="gone"),
        Outcome(
            claims["dead"],
            "dead",
            tries=[Try("p", "retryable", "x")],
            reason="retries_exhausted",
            error="gave up",
        ),
        Outcome(claims["lost"], "delivered", tries=[Try("p", "delivered")], provider="p"),
        # A second outcome for a delivery already settled in this batch changes nothing.
        Outcome(claims["sent"], "failed", tries=[Try("p", "permanent", "late")], reason="x", error="late"),
    ]
    applied = await apply(database, store, outcomes, retake)

    state = {name: await one(database, row["id"]) for name, row in rows.items()}
    assert (state["sent"].status, state["sent"].provider, state["sent"].provider_message_id) == (
        "delivered",
        "p",
        "m1",
    )
    assert state["sent"].reason is None and state["sent"].lease_owner is None
    # A wait gives its attempt back; a real retry keeps it.
    assert (state["waits"].status, state["waits"].attempts, state["waits"].next_attempt_at) == (
        "retrying",
        0,
        retry_at,
    )
    assert (state["later"].status, state["later"].attempts, state["later"].reason) == (
        "retrying",
        1,
        "http_503",
    )
    assert state["later"].provider is None and state["later"].next_attempt_at == retry_at
    assert (state["gone"].status, state["gone"].reason, state["gone"].detail) == ("failed", "gone", "gone")
    assert (state["dead"].status, state["dead"].detail) == ("dead", "gave up")
    assert (state["lost"].status, state["lost"].lease_owner) == ("sending", "w2")
    assert all(s.updated_at == retake for name, s in state.items() if name != "lost")

    assert [len(a.jobs) for a in applied] == [0, 1, 1, 0, 0, 0, 0]
    (letter,) = await select(database, DEAD_LETTERS)
    assert (letter.delivery_id, letter.error, letter.attempts) == (rows["dead"]["id"], "gave up", 1)
    async with database.connect() as connection:
        tried = {
            (r.delivery_id, r.outcome)
            for r in await connection.execute(sa.text("SELECT delivery_id, outcome FROM attempts"))
        }
    assert (rows["lost"]["id"], "superseded") in tried and (rows["lost"]["id"], "delivered") not in tried
    assert (rows["sent"]["id"], "superseded") in tried  # the second outcome of `sent`
    assert len(tried) == 7
