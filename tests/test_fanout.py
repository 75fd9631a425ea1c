"""Bulk requests: stored whole and answered at once, expanded by workers at the pace deliveries
allow, readable while they go; low and bulk intake shed while deliveries are behind."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.admission import Limits
from gateway.fanout import BulkFanout
from gateway.model import recipient_key
from gateway.services import Services
from gateway.store.bulk_requests import NewBulk
from gateway.store.tables import BulkRequestRow
from tests.harness import ADA, NOTIFICATIONS, admin_key, bulk_fanout, client, count, store_user

BULK = BulkRequestRow.__table__  # type: ignore[attr-defined]
USER_IDS = st.from_regex(r"[A-Za-z0-9_.:@-]{1,128}", fullmatch=True)
DIGEST = {"event": "marketing.weekly_digest", "priority": "low", "data": {"week": "W47"}}


def fanout(
    services: Services, owner: str = "w1", *, expand_backlog: int = 2_000, chunk: int = 100
) -> BulkFanout:
    return bulk_fanout(services, owner, expand_backlog=expand_backlog, chunk=chunk)


async def post_bulk(services: Services, token: str, users: list[str], **extra: Any) -> Any:
    async with client(services, token) as http:
        return await http.post("/v1/intents/bulk", json={**DIGEST, "user_ids": users, **extra})


async def status(services: Services, token: str, bulk_id: str) -> dict[str, Any]:
    async with client(services, token) as http:
        response = await http.get(f"/v1/intents/bulk/{bulk_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def bulk_notifications(services: Services, bulk_id: str) -> list[tuple[str, str]]:
    async with services.database.connect() as connection:
        rows = await connection.execute(
            sa.select(NOTIFICATIONS.c.user_id, NOTIFICATIONS.c.idempotency_key).where(
                NOTIFICATIONS.c.bulk_id == bulk_id
            )
        )
        return sorted((r.user_id, r.idempotency_key) for r in rows)


async def test_a_bulk_request_is_stored_at_once_and_expanded_by_a_worker(services: Services) -> None:
    token = await admin_key(services)
    users = [f"u_{i:04d}" for i in range(250)]
    response = await post_bulk(services, token, [*users, users[0]], idempotency_key="digest-W47")
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["recipients"] == 250  # distinct user ids
    assert accepted["status_url"] == f"/v1/intents/bulk/{accepted['bulk_id']}"
    assert await count(services, NOTIFICATIONS) == 0  # nothing decided before the answer

    before = await status(services, token, accepted["bulk_id"])
    assert (before["state"], before["expanded"], before["recipients"]) == ("accepted", 0, 250)

    assert await fanout(services).expand_one()
    after = await status(services, token, accepted["bulk_id"])
    assert (after["state"], after["expanded"], after["refused"]) == ("expanded", 250, 0)
    assert after["deliveries"]  # every notification's deliveries, counted by status
    stored = await bulk_notifications(services, accepted["bulk_id"])
    assert [user for user, _ in stored] == users
    assert all(key == f"digest-W47:{user}" for user, key in stored)
    assert not await fanout(services).expand_one()  # nothing left to claim


async def test_posting_the_same_bulk_key_again_replays_the_first_request(services: Services) -> None:
    token = await admin_key(services)
    first = await post_bulk(services, token, ["u_1", "u_2"], idempotency_key="promo-1")
    again = await post_bulk(services, token, ["u_1", "u_2"], idempotency_key="promo-1")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["bulk_id"] == first.json()["bulk_id"]
    assert await count(services, BULK) == 1


async def test_a_chunk_expanded_twice_stores_each_recipient_once(services: Services) -> None:
    """A worker that died after storing a chunk, before moving the cursor: the next claimant
    stores that chunk again, and every recipient of it is a replay (no key: the bulk id's)."""
    token = await admin_key(services)
    bulk_id = (await post_bulk(services, token, [f"u_{i}" for i in range(30)])).json()["bulk_id"]
    assert await fanout(services, "w1", chunk=10).expand_one()
    async with services.database.begin() as connection:  # the cursor as a crash would leave it
        await connection.execute(
            sa.update(BULK).where(BULK.c.id == bulk_id).values(expanded=10, state="expanding")
        )
    assert await fanout(services, "w2", chunk=10).expand_one()
    stored = await bulk_notifications(services, bulk_id)
    assert len(stored) == 30 and len(set(stored)) == 30
    assert all(key == f"{bulk_id}:{user}" for user, key in stored)
    assert (await status(services, token, bulk_id))["expanded"] == 30


async def test_keys_and_user_ids_holding_colons_never_share_a_recipient_key(services: Services) -> None:
    """`promo` for `spring:u_1` and `promo:spring` for `u_1` were both `promo:spring:u_1`, so
    the second request's recipient was answered as a replay of the first's and got nothing."""
    token = await admin_key(services)
    users = {"promo": "spring:u_1", "promo:spring": "u_1"}
    assert recipient_key("promo", "spring:u_1") != recipient_key("promo:spring", "u_1")
    bulk_ids = {}
    for key, user in users.items():
        response = await post_bulk(services, token, [user], idempotency_key=key)
        assert response.status_code == 202, response.text
        bulk_ids[key] = response.json()["bulk_id"]
    while await fanout(services).expand_one():
        pass
    assert await bulk_notifications(services, bulk_ids["promo"]) == [("spring:u_1", "promo:spring:u_1")]
    assert await bulk_notifications(services, bulk_ids["promo:spring"]) == [("u_1", "12:promo:spring/u_1")]
    async with services.database.begin() as connection:  # expand the second again, as after a crash
        await connection.execute(
            sa.update(BULK).where(BULK.c.id == bulk_ids["promo:spring"]).values(expanded=0, state="expanding")
        )
    assert await fanout(services, "w2").expand_one()
    assert await count(services, NOTIFICATIONS) == 2  # the replay stored nothing new


@settings(max_examples=200)
@example(("promo", "spring:u_1"), ("promo:spring", "u_1"))  # one `promo:spring:u_1` before
@example(("12", "promo:spring"), ("promo:spring", "u_1"))  # the new form's length prefix
@given(
    st.tuples(st.text(min_size=1, max_size=256), USER_IDS),
    st.tuples(st.text(min_size=1, max_size=256), USER_IDS),
)
def test_recipient_keys_are_distinct_for_distinct_pairs_and_fit_their_column(
    one: tuple[str, str], other: tuple[str, str]
) -> None:
    assert (recipient_key(*one) == recipient_key(*other)) == (one == other)
    assert len(recipient_key(*one)) <= 400


async def test_a_claimed_request_is_not_expanded_by_a_second_worker_until_its_lease_ends(
    services: Services,
) -> None:
    token = await admin_key(services)
    await post_bulk(services, token, ["u_1"])
    now = services.clock()
    first = await services.bulk.claim("w1", now, dt.timedelta(seconds=30))
    assert first is not None
    assert await services.bulk.claim("w2", now, dt.timedelta(seconds=30)) is None
    taken_over = await services.bulk.claim("w2", now + dt.timedelta(seconds=31), dt.timedelta(seconds=30))
    assert taken_over is not None and taken_over.id == first.id
    # The first worker's cursor write now changes nothing: its claim is gone.
    assert not await services.bulk.advance(
        first, "w1", expanded=1, refusals=[], now=now, lease=dt.timedelta(seconds=30)
    )


async def test_expansion_waits_while_a_queue_is_behind(services: Services) -> None:
    token = await admin_key(services)
    bulk_id = (await post_bulk(services, token, [f"u_{i}" for i in range(20)])).json()["bulk_id"]
    queue = services.keys.queue("standard")
    due = services.clock().timestamp() * 1000 - 1000
    await services.redis.zadd(queue, {f"j_backlog_{n}": due for n in range(5)})  # jobs nobody runs
    stop = asyncio.Event()
    running = asyncio.create_task(fanout(services, expand_backlog=3).run(stop))
    await asyncio.sleep(0.5)
    paused = await status(services, token, bulk_id)
    await services.redis.delete(queue)  # the workers caught up
    for _ in range(100):
        if (await status(services, token, bulk_id))["state"] == "expanded":
            break
        await asyncio.sleep(0.05)
    stop.set()
    await running
    assert (paused["state"], paused["expanded"]) == ("expanding", 0)
    assert (await status(services, token, bulk_id))["expanded"] == 20


async def test_recipients_whose_message_cannot_render_are_counted_as_refused(services: Services) -> None:
    """Accepted long before expansion: a template changed meanwhile to need a variable the
    request lacks. Its recipients are refused and counted, the request still ends expanded."""
    token = await admin_key(services)
    await store_user(services, ADA)
    await store_user(services, {**ADA, "user_id": "u_bob"})
    shipped = {"event": "order.shipped", "priority": "normal", "data": {"order_id": "A-1", "carrier": "UPS"}}
    async with client(services, token) as http:
        response = await http.post("/v1/intents/bulk", json={**shipped, "user_ids": ["u_ada", "u_bob"]})
    assert response.status_code == 202, response.text
    bulk_id = response.json()["bulk_id"]
    async with services.database.begin() as connection:
        await connection.execute(
            sa.update(BULK)
            .where(BULK.c.id == bulk_id)
            .values(intent={**shipped, "data": {"order_id": "A-1"}, "channels": None})
        )
    assert await fanout(services).expand_one()
    done = await status(services, token, bulk_id)
    assert (done["state"], done["expanded"], done["refused"]) == ("expanded", 2, 2)
    assert done["first_refusal"].startswith("u_ada: ") and "carrier" in done["first_refusal"]
    assert await bulk_notifications(services, bulk_id) == []


async def test_another_producers_bulk_request_is_invisible(services: Services) -> None:
    mine = await admin_key(services, "mine", admin=False)
    theirs = await admin_key(services, "theirs", admin=False)
    bulk_id = (await post_bulk(services, mine, ["u_1"])).json()["bulk_id"]
    async with client(services, theirs) as http:
        hidden = await http.get(f"/v1/intents/bulk/{bulk_id}")
    assert hidden.status_code == 404 and hidden.json()["error"]["field"] == "bulk_id"
    assert (await status(services, mine, bulk_id))["recipients"] == 1


async def test_low_and_bulk_intake_is_shed_while_a_queue_is_behind_and_urgent_is_not(
    services: Services, tmp_path: Path
) -> None:
    services.admission.limits = Limits(backlog=3, wait=3600, unexpanded=1_000_000)
    await store_user(services, ADA)
    token = await admin_key(services)
    due = services.clock().timestamp() * 1000 - 1000
    await services.redis.zadd(services.keys.queue("bulk"), {f"j_backlog_{n}": due for n in range(5)})
    base = {"user_id": "u_ada", "data": {"order_id": "A-1", "carrier": "UPS"}}
    async with client(services, token) as http:
        low = await http.post("/v1/intents", json={**base, "event": "order.shipped", "priority": "low"})
        bulk = await http.post("/v1/intents/bulk", json={**DIGEST, "user_ids": ["u_ada"]})
        normal = await http.post("/v1/intents", json={**base, "event": "order.shipped"})
        code = {
            "event": "security.otp",
            "user_id": "u_ada",
            "priority": "urgent",
            "data": {"code": "123456", "minutes": 10},
        }
        urgent = await http.post("/v1/intents", json=code)
    for shed in (low, bulk):
        assert shed.status_code == 429, shed.text
        assert shed.json()["error"]["code"] == "overloaded"
        assert int(shed.headers["retry-after"]) >= 1
        assert "queue 'bulk' holds 5 due jobs" in shed.json()["error"]["message"]
    assert (normal.status_code, urgent.status_code) == (202, 202), (normal.text, urgent.text)
    assert await count(services, BULK) == 0


async def test_deferred_jobs_are_not_a_backlog(services: Services) -> None:
    """Jobs waiting for quiet hours or send_at are not late: they never shed intake."""
    services.admission.limits = Limits(backlog=3, wait=60, unexpanded=1_000_000)
    later = services.clock().timestamp() * 1000 + 3_600_000
    await services.redis.zadd(services.keys.queue("bulk"), {f"j_later_{n}": later for n in range(50)})
    backlog = await services.admission.backlog()
    assert {q.queue: (q.due, q.oldest_wait) for q in backlog.queues}["bulk"] == (0, 0.0)
    token = await admin_key(services)
    assert (await post_bulk(services, token, ["u_1"])).status_code == 202


async def test_the_same_bulk_key_posted_concurrently_is_stored_once(services: Services) -> None:
    def bulk(n: int) -> NewBulk:
        return NewBulk(
            id=f"b_race{n}",
            producer="p",
            idempotency_key="same",
            event="marketing.weekly_digest",
            priority="low",
            intent=DIGEST,
            user_ids=["u_1"],
        )

    answers = await asyncio.gather(*(services.bulk.create(bulk(n), services.clock()) for n in range(4)))
    assert len({bulk_id for bulk_id, _ in answers}) == 1
    assert sorted(replay for _, replay in answers) == [False, True, True, True]
    assert await count(services, BULK) == 1
