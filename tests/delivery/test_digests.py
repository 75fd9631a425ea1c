"""Batching and digests through real workers: one grouped message per batch, folded caps.

Intents are accepted with the services' clock set in the past, so that their batch window
has already closed in real time when the worker (which runs on the real clock) starts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from gateway.services import Services
from tests.delivery.conftest import registry
from tests.harness import ADA, DELIVERIES, accept, eventually, like, running_worker, store_user
from tests.providers.outbox import sent


async def rows(services: Services, notification_ids: list[str], channel: str) -> list[Any]:
    async with services.database.connect() as connection:
        return list(
            await connection.execute(
                sa.select(DELIVERIES)
                .where(DELIVERIES.c.notification_id.in_(notification_ids), DELIVERIES.c.channel == channel)
                .order_by(DELIVERIES.c.created_at, DELIVERIES.c.id)
            )
        )


async def all_delivered(services: Services, notification_ids: list[str], *channels: str) -> bool:
    for channel in channels:
        found = await rows(services, notification_ids, channel)
        if not found or any(r.status != "delivered" for r in found):
            return False
    return True


async def test_seven_likes_in_one_window_become_one_message(quick_services: Services, tmp_path: Path) -> None:
    await store_user(quick_services, ADA)
    closed = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=330)  # the window closed 30 s ago
    ids = await accept(quick_services, [like(n) for n in range(7)], closed)
    pending = await rows(quick_services, ids, "push")
    assert {r.status for r in pending} == {"scheduled"}
    assert len({r.send_at for r in pending}) == 1  # one window for all seven
    outbox = tmp_path / "outbox"
    async with running_worker(quick_services, registry=registry(outbox)):
        await eventually(lambda: all_delivered(quick_services, ids, "push", "in_app"))
    push = [s for s in sent(outbox) if s.channel == "push"]
    assert len(push) == 2  # one message, to each of the two devices
    assert {s.record["fields"]["title"] for s in push} == {"7 people liked your post"}
    in_app = [s for s in sent(outbox) if s.channel == "in_app"]
    assert [s.record["fields"]["title"] for s in in_app] == ["7 people liked your post"]
    for channel in ("push", "in_app"):
        group = await rows(quick_services, ids, channel)
        leader = push[0].delivery_id if channel == "push" else None
        leaders = {r.grouped_into for r in group}
        assert len(leaders) == 1  # every item was carried by the same delivery
        assert leader is None or leaders == {leader}
    status = await quick_services.deliveries.status(ids[-1])
    assert status is not None
    carried = {d.channel: d.grouped_into for d in status.deliveries}
    assert carried["push"] in (None, push[0].delivery_id)


async def test_the_fiftieth_like_fills_the_batch_and_goes_at_once(
    quick_services: Services, tmp_path: Path
) -> None:
    await store_user(quick_services, ADA)
    opened = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)  # the window closes in 240 s
    ids = await accept(quick_services, [like(n) for n in range(50)], opened)
    first_49 = await rows(quick_services, ids[:49], "push")
    assert {r.status for r in first_49} == {"scheduled"}
    fiftieth = (await rows(quick_services, ids[49:], "push"))[0]
    assert fiftieth.send_at is None  # full: it goes now
    outbox = tmp_path / "outbox"
    async with running_worker(quick_services, registry=registry(outbox)):
        await eventually(lambda: all_delivered(quick_services, ids, "push"))
    push = [s for s in sent(outbox) if s.channel == "push"]
    assert {s.record["fields"]["title"] for s in push} == {"50 people liked your post"}
    assert {s.delivery_id for s in push} == {fiftieth.id}
    # The 51st starts a new batch that still closes with the window.
    window_closes = first_49[0].send_at
    [later] = await accept(quick_services, [like(51)], opened + dt.timedelta(seconds=1))
    [row] = await rows(quick_services, [later], "push")
    assert (row.status, row.send_at) == ("scheduled", window_closes)


async def test_racing_claims_put_each_item_in_exactly_one_message(quick_services: Services) -> None:
    await store_user(quick_services, ADA)
    closed = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=330)
    ids = await accept(quick_services, [like(n) for n in range(6)], closed)
    push = [r.id for r in await rows(quick_services, ids, "push")]
    now = dt.datetime.now(dt.UTC)
    lease = dt.timedelta(seconds=30)
    claims = await asyncio.gather(
        *(
            quick_services.deliveries.claim([delivery_id], f"w{i}", lease, now)
            for i, delivery_id in enumerate(push)
        )
    )
    groups = [[c.id, *(m.delivery_id for m in c.members)] for found in claims for c in found]
    carried = [d for group in groups for d in group]
    assert sorted(carried) == sorted(push)  # none left out, none in two messages


def digest(week: int) -> dict[str, Any]:
    return {
        "event": "marketing.weekly_digest",
        "user_id": "u_ada",
        "priority": "low",
        "data": {
            "week": f"2026-W{week}",
            "articles": [{"title": f"Week {week} news", "url": f"https://blog.example.com/{week}"}],
            "unsubscribe_url": "https://example.com/u/abc",
        },
    }


async def test_a_capped_digest_folds_into_the_next_one(quick_services: Services, tmp_path: Path) -> None:
    """R7: the fourth marketing email of the day is capped; next week's digest carries it."""
    await store_user(
        quick_services,
        {**ADA, "preferences": [{"event": "marketing.*", "channel": "push", "enabled": False}]},
    )
    day = dt.datetime.now(dt.UTC) - dt.timedelta(hours=26)
    outbox = tmp_path / "outbox"

    first = await accept(quick_services, [digest(40), digest(41), digest(42)], day)
    async with running_worker(quick_services, registry=registry(outbox)):
        await eventually(lambda: all_delivered(quick_services, first, "email"))
    [capped] = await accept(quick_services, [digest(43)], day + dt.timedelta(minutes=5))
    [held] = await rows(quick_services, [capped], "email")
    assert (held.status, held.reason) == ("suppressed", "frequency_capped")
    assert "folded into the next marketing.weekly_digest" in held.detail
    [next_week] = await accept(quick_services, [digest(44)], day + dt.timedelta(hours=25))
    async with running_worker(quick_services, registry=registry(outbox)):
        await eventually(lambda: all_delivered(quick_services, [next_week], "email"))
    [carrier] = await rows(quick_services, [next_week], "email")
    [held] = await rows(quick_services, [capped], "email")
    assert (held.status, held.grouped_into) == ("suppressed", carrier.id)
    [mail] = [s.email for s in sent(outbox) if s.delivery_id == carrier.id]
    assert mail is not None
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Week 44 news" in text
    assert "Also held back for you this week: 1 more messages." in text


# --- a group's life beyond one send: repeats, expiry, dead letters, cancelling ----------


async def _due_batch(services: Services, count: int) -> list[str]:
    """`count` likes whose window closed 30 s ago; their push delivery ids, oldest first."""
    await store_user(services, ADA)
    closed = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=330)
    ids = await accept(services, [like(n) for n in range(count)], closed)
    return [r.id for r in await rows(services, ids, "push")]


async def test_one_delivery_twice_in_a_claim_is_claimed_once_with_its_whole_group(
    quick_services: Services,
) -> None:
    push = await _due_batch(quick_services, 3)
    now = dt.datetime.now(dt.UTC)
    async with quick_services.database.begin() as connection:
        claimed = await quick_services.deliveries.claim_in(
            connection, [push[0], push[0]], "w", now + dt.timedelta(seconds=30), now
        )
    assert claimed[1] is None  # a second send of the same delivery would repeat the message
    assert claimed[0] is not None and [m.delivery_id for m in claimed[0].members] == push[1:]


async def test_an_expired_first_item_takes_nobody_with_it(quick_services: Services) -> None:
    push = await _due_batch(quick_services, 3)
    async with quick_services.database.begin() as connection:
        await connection.execute(
            sa.update(DELIVERIES)
            .where(DELIVERIES.c.id == push[0])
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    [leader] = await quick_services.deliveries.claim(
        [push[0]], "w", dt.timedelta(seconds=30), dt.datetime.now(dt.UTC)
    )
    assert leader.members == ()
    [next_leader] = await quick_services.deliveries.claim(
        [push[1]], "w", dt.timedelta(seconds=30), dt.datetime.now(dt.UTC)
    )
    assert [m.delivery_id for m in next_leader.members] == [push[2]]


async def test_a_dead_lettered_group_is_replayed_whole(quick_services: Services, tmp_path: Path) -> None:
    from gateway.store.outcomes import Outcome, Try

    push = await _due_batch(quick_services, 4)
    now = dt.datetime.now(dt.UTC)
    [leader] = await quick_services.deliveries.claim([push[0]], "w", dt.timedelta(seconds=30), now)
    dead = Outcome(
        leader, "dead", tries=[Try("fcm", "retryable", "503")], reason="retries_exhausted", error="503"
    )
    async with quick_services.database.begin() as connection:
        await quick_services.deliveries.apply(connection, [dead], now)
    assert {r.status for r in await rows_by_id(quick_services, push)} == {"dead"}
    page = await quick_services.deliveries.dead_letters(10, None, include_replayed=False)
    [letter] = [d for d in page.dead_letters if d.delivery_id == push[0]]
    replayed = await quick_services.deliveries.replay(letter.dead_letter_id, now)
    assert replayed is not None
    outbox = tmp_path / "outbox"
    async with running_worker(quick_services, registry=registry(outbox)):
        await eventually(lambda: _all(quick_services, push[1:], "delivered"))
    sent_push = [s for s in sent(outbox) if s.channel == "push"]
    assert {s.record["fields"]["title"] for s in sent_push} == {"4 people liked your post"}
    assert {s.delivery_id for s in sent_push} == {replayed[1].deliveries[0]}


async def test_cancelling_leaves_a_grouped_delivery_to_its_group(
    quick_services: Services,
) -> None:
    from gateway.store.cancel import CancelStore

    push = await _due_batch(quick_services, 3)
    now = dt.datetime.now(dt.UTC)
    await quick_services.deliveries.claim([push[0]], "w", dt.timedelta(seconds=30), now)
    member = (await rows_by_id(quick_services, [push[1]]))[0]
    cancels = CancelStore(quick_services.database)
    cancelled = await cancels.cancel(member.notification_id, "changed my mind", now)
    [still] = await rows_by_id(quick_services, [push[1]])
    assert (still.status, still.grouped_into) == ("sending", push[0])  # it goes with its group
    [in_app] = await rows_by_id(quick_services, cancelled)  # its in-app item was still waiting
    assert (in_app.channel, in_app.status) == ("in_app", "cancelled")


async def rows_by_id(services: Services, delivery_ids: list[str]) -> list[Any]:
    async with services.database.connect() as connection:
        return list(await connection.execute(sa.select(DELIVERIES).where(DELIVERIES.c.id.in_(delivery_ids))))


async def _all(services: Services, delivery_ids: list[str], status: str) -> bool:
    return {r.status for r in await rows_by_id(services, delivery_ids)} == {status}


async def test_a_cancelled_folded_message_is_carried_by_no_digest(quick_services: Services) -> None:
    from gateway.store.cancel import CancelStore

    await store_user(quick_services, ADA)
    day = dt.datetime.now(dt.UTC) - dt.timedelta(hours=26)
    *_, capped = await accept(quick_services, [digest(w) for w in (40, 41, 42, 43)], day)
    [held] = await rows(quick_services, [capped], "email")
    assert (held.status, held.reason) == ("suppressed", "frequency_capped")
    now = dt.datetime.now(dt.UTC)
    assert await CancelStore(quick_services.database).cancel(capped, "withdrawn", now) == [held.id]
    [next_week] = await accept(quick_services, [digest(44)], day + dt.timedelta(hours=25))
    [carrier] = await rows(quick_services, [next_week], "email")
    [leader] = await quick_services.deliveries.claim(
        [carrier.id], "w", dt.timedelta(seconds=30), now, digests=quick_services.policy.digest_events
    )
    assert leader.members == ()
