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


async def test_a_capped_digest_folds_into_the_next_one(quick_services: Services, tmp_path: Path) -> None:
    """R7: the fourth marketing email of the day is capped; next week's digest carries it."""
    await store_user(
        quick_services,
        {**ADA, "preferences": [{"event": "marketing.*", "channel": "push", "enabled": False}]},
    )
    day = dt.datetime.now(dt.UTC) - dt.timedelta(hours=26)
    outbox = tmp_path / "outbox"

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
