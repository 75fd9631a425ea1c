"""Dead letters: paged newest first, replayed once as a new delivery."""

from __future__ import annotations

import datetime as dt

from gateway.store.database import Database
from gateway.store.deliveries import DeliveryStore
from gateway.store.outcomes import Outcome
from tests.store.lifecycle import apply, claim_one, delivery, one, seed
from tests.store.rows import (
    DEAD_LETTERS,
    DELIVERIES,
    JOBS,
    T0,
    count,
    select,
)


async def dead_lettered(database: Database, store: DeliveryStore, how_many: int) -> list[str]:
    """Dead-letter `how_many` deliveries one by one; their dead letter ids, oldest first."""
    rows = [delivery(f"c{i}") for i in range(how_many)]
    await seed(database, *rows)
    for i, row in enumerate(rows):
        claimed = await claim_one(store, row["id"], "w1")
        await apply(
            database, store, [Outcome(claimed, "dead", error=f"error {i}")], T0 + dt.timedelta(seconds=i)
        )
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
