"""Intake end to end: POST an intent, and a worker delivers it, once per address."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.errors import Unstorable
from gateway.history import UserHistory
from gateway.model import Intent
from gateway.services import Services
from gateway.store import inbox
from tests.harness import (
    ADA,
    DELIVERIES,
    JOBS,
    NOTIFICATIONS,
    admin_key,
    bulk_fanout,
    client,
    count,
    delivery_statuses,
    eventually,
    running_worker,
    store_user,
)
from tests.providers.outbox import sent

SHIPPED = {"event": "order.shipped", "user_id": "u_ada", "data": {"order_id": "A-1001", "carrier": "UPS"}}


async def test_an_accepted_intent_is_delivered_once_to_each_address(
    services: Services, tmp_path: Path
) -> None:
    await store_user(services)
    token = await admin_key(services)
    async with client(services, token) as http:
        response = await http.post("/v1/intents", json=SHIPPED)
        assert response.status_code == 202
        body = response.json()
        assert body["status"] == "accepted"
        notification_id = body["notification_id"]
        async with running_worker(services):
            await eventually(lambda: _all_final(services, notification_id))
        status = (await http.get(f"/v1/notifications/{notification_id}")).json()
    by_channel = {d["channel"]: d for d in status["deliveries"]}
    assert {c: d["status"] for c, d in by_channel.items()} == {
        "push": "delivered",
        "email": "delivered",
        "in_app": "delivered",
        "sms": "suppressed",
    }
    assert by_channel["sms"]["reason"] == "opted_out"
    assert by_channel["email"]["provider"] == "sendgrid"
    assert [a["outcome"] for a in by_channel["email"]["attempts"]] == ["delivered"]
    assert status["policy_version"] == services.policy.version
    written = sent(tmp_path / "outbox")
    assert len(written) == 3  # two devices, one email
    [item] = await inbox.feed(services.database, "u_ada")  # in-app goes to the user's inbox
    assert item.id == by_channel["in_app"]["delivery_id"] and item.title
    push = [s.record for s in written if s.channel == "push"]
    assert sorted(p["to"]["platform"] for p in push) == ["android", "ios"]
    assert await count(services, JOBS) == 0  # every job finished and left the outbox


async def _all_final(services: Services, notification_id: str) -> bool:
    statuses = await delivery_statuses(services, notification_id)
    return bool(statuses) and all(
        s in ("delivered", "suppressed", "failed", "dead", "expired") for s in statuses.values()
    )


async def test_an_unknown_user_is_accepted_and_only_their_feed_is_written(services: Services) -> None:
    """One behaviour for an id nothing stores, on both paths: the dry run foretells intake."""
    token = await admin_key(services)
    async with client(services, token) as http:
        dry = await http.post("/v1/dry-run", json={"intent": {**SHIPPED, "user_id": "u_stranger"}})
        response = await http.post("/v1/intents", json={**SHIPPED, "user_id": "u_stranger"})
        assert response.status_code == 202
        statuses = await delivery_statuses(services, response.json()["notification_id"])
    assert statuses == {"push": "suppressed", "email": "suppressed", "sms": "suppressed", "in_app": "pending"}
    assert dry.status_code == 200, dry.text
    foretold = dry.json()
    assert {d["channel"]: "pending" for d in foretold["deliveries"]} | {
        s["channel"]: "suppressed" for s in foretold["suppressed"]
    } == statuses


async def test_the_same_idempotency_key_answers_200_with_the_first_id(services: Services) -> None:
    await store_user(services)
    token = await admin_key(services)
    intent = {**SHIPPED, "idempotency_key": "order-shipped-A-1001"}
    async with client(services, token) as http:
        first = await http.post("/v1/intents", json=intent)
        again = await http.post(
            "/v1/intents", json={**intent, "data": {"order_id": "changed", "carrier": "UPS"}}
        )
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["notification_id"] == first.json()["notification_id"]
    assert await count(services, NOTIFICATIONS) == 1


async def test_racing_requests_with_one_key_make_one_notification(services: Services) -> None:
    await store_user(services)
    token = await admin_key(services)
    intent = {**SHIPPED, "idempotency_key": "racing-key"}
    async with client(services, token) as http:
        responses = await asyncio.gather(*(http.post("/v1/intents", json=intent) for _ in range(25)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(202) == 1 and codes.count(200) == 24
    assert len({r.json()["notification_id"] for r in responses}) == 1
    assert await count(services, NOTIFICATIONS) == 1
    assert await count(services, DELIVERIES) == 4


async def test_idempotency_keys_are_scoped_to_the_producer(services: Services) -> None:
    await store_user(services)
    orders = await admin_key(services, "orders")
    billing = await admin_key(services, "billing")
    intent = {**SHIPPED, "idempotency_key": "shared-key"}
    async with client(services, orders) as http:
        first = (await http.post("/v1/intents", json=intent)).json()["notification_id"]
    async with client(services, billing) as http:
        second = await http.post("/v1/intents", json=intent)
    assert second.status_code == 202 and second.json()["notification_id"] != first


async def test_an_expired_key_may_be_used_again(services: Services) -> None:
    await store_user(services)
    token = await admin_key(services)
    intent = {**SHIPPED, "idempotency_key": "daily-report", "data": {"order_id": "A-1", "carrier": "UPS"}}
    clock = services.clock
    clock.now = dt.datetime(2026, 11, 21, 12, tzinfo=dt.UTC)  # type: ignore[attr-defined]
    async with client(services, token) as http:
        first = (await http.post("/v1/intents", json=intent)).json()["notification_id"]
        clock.now += dt.timedelta(hours=25)  # type: ignore[attr-defined]
        second = await http.post(
            "/v1/intents", json={**intent, "data": {"order_id": "A-2", "carrier": "UPS"}}
        )
    assert second.status_code == 202 and second.json()["notification_id"] != first


async def test_concurrent_intents_never_exceed_a_cap(services: Services) -> None:
    """Fifteen intents for one user at once: the 10-per-hour push ceiling holds exactly."""
    await store_user(services)
    token = await admin_key(services)
    async with client(services, token) as http:
        responses = await asyncio.gather(
            *(
                http.post("/v1/intents", json={**SHIPPED, "data": {"order_id": f"A-{i}", "carrier": "UPS"}})
                for i in range(15)
            )
        )
    assert all(r.status_code == 202 for r in responses)
    pushes = []
    for response in responses:
        pushes.append((await delivery_statuses(services, response.json()["notification_id"]))["push"])
    assert pushes.count("pending") == 10
    assert pushes.count("suppressed") == 5


async def test_bulk_intake_gives_one_notification_per_recipient(services: Services, tmp_path: Path) -> None:
    token = await admin_key(services)
    users = [f"u_{i:04d}" for i in range(1200)]
    digest = {"event": "marketing.weekly_digest", "priority": "low", "data": {"week": "W47"}}
    async with client(services, token) as http:
        response = await http.post(
            "/v1/intents/bulk", json={**digest, "user_ids": users, "idempotency_key": "digest-W47"}
        )
        assert response.status_code == 202, response.text
        bulk_id = response.json()["bulk_id"]
        assert await bulk_fanout(services).expand_one()
        progress = (await http.get(f"/v1/intents/bulk/{bulk_id}")).json()
        # The same recipients sent one at a time with the derived keys are replays of those.
        again = await http.post(
            "/v1/intents",
            json={**digest, "user_id": users[7], "idempotency_key": f"digest-W47:{users[7]}"},
        )
    assert (progress["state"], progress["expanded"], progress["refused"]) == ("expanded", 1200, 0)
    async with services.database.connect() as connection:
        stored = dict(
            (r.user_id, r.id)
            for r in await connection.execute(
                sa.select(NOTIFICATIONS.c.user_id, NOTIFICATIONS.c.id).where(
                    NOTIFICATIONS.c.bulk_id == bulk_id
                )
            )
        )
    assert sorted(stored) == users
    assert again.status_code == 200 and again.json()["notification_id"] == stored[users[7]]
    assert await count(services, NOTIFICATIONS) == 1200


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({**SHIPPED, "priority": "asap"}, 422, "invalid_value", "priority"),
        ({"event": "order.shipped"}, 422, "missing_field", "user_id"),
        ({**SHIPPED, "colour": "red"}, 422, "unknown_field", "colour"),
        ({**SHIPPED, "channels": ["fax"]}, 422, "unknown_channel", "intent.channels[0]"),
        ({**SHIPPED, "event": "unknown.thing"}, 422, "no_matching_rule", "intent.event"),
        ({**SHIPPED, "data": {"blob": "x" * 70_000}}, 422, "data_too_large", "data"),
    ],
)
async def test_bad_intents_are_refused_in_the_contract_shape(
    services: Services,
    body: dict[str, Any],
    status: int,
    code: str,
    field: str,
) -> None:
    token = await admin_key(services)
    async with client(services, token) as http:
        response = await http.post("/v1/intents", json=body)
    assert response.status_code == status, response.text
    assert (response.json()["error"]["code"], response.json()["error"]["field"]) == (code, field)
    assert await count(services, NOTIFICATIONS) == 0


async def test_oversized_and_malformed_bodies_store_nothing(services: Services) -> None:
    token = await admin_key(services)
    async with client(services, token) as http:
        big = await http.post(
            "/v1/intents",
            content=b'{"event": "order.shipped", "user_id": "u", "data": {"x": "' + b"a" * 1_100_000 + b'"}}',
            headers={"content-type": "application/json"},
        )
        broken = await http.post(
            "/v1/intents", content=b'{"event": ', headers={"content-type": "application/json"}
        )
    assert (big.status_code, big.json()["error"]["code"]) == (413, "payload_too_large")
    assert (broken.status_code, broken.json()["error"]["code"]) == (400, "malformed_json")
    assert await count(services, NOTIFICATIONS) == 0


async def test_status_of_another_producers_notification_is_not_found(services: Services) -> None:
    await store_user(services)
    orders = await admin_key(services, "orders", admin=False, events=["order.*"])
    other = await admin_key(services, "other", admin=False, events=["order.*"])
    async with client(services, orders) as http:
        notification_id = (await http.post("/v1/intents", json=SHIPPED)).json()["notification_id"]
        assert (await http.get(f"/v1/notifications/{notification_id}")).status_code == 200
    async with client(services, other) as http:
        response = await http.get(f"/v1/notifications/{notification_id}")
    assert response.status_code == 404


async def test_a_scheduled_delivery_is_queued_for_its_time_not_polled(services: Services) -> None:
    await store_user(services)
    token = await admin_key(services)
    later = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=3)
    async with client(services, token) as http:
        response = await http.post("/v1/intents", json={**SHIPPED, "send_at": later.isoformat()})
    statuses = await delivery_statuses(services, response.json()["notification_id"])
    assert statuses["email"] == "scheduled"
    await eventually(lambda: _queued(services, "standard"))
    scores = await services.redis.zrange(services.keys.queue("standard"), 0, -1, withscores=True)
    assert {int(score) for _, score in scores} == {int(later.timestamp() * 1000)}


async def _queued(services: Services, queue: str) -> bool:
    return bool(await services.redis.zcard(services.keys.queue(queue)))


async def test_a_batch_decides_exactly_as_the_same_intents_one_after_another(services: Services) -> None:
    """Concurrent intents for one user share micro-batches; each must still see the deliveries
    reserved for the ones before it, so caps and dedup decide as if they came one by one
    (the engine's own reasons, not the reservation's "concurrent" refusals)."""
    services.clock.now = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)  # type: ignore[attr-defined]
    orders = [f"B-{i}" for i in range(12)] + ["B-0", "B-1", "B-0"]  # 12 distinct, then repeats
    outcomes = {}
    for user_id, together in (("u_together", True), ("u_one_by_one", False)):
        await store_user(services, {**ADA, "user_id": user_id})
        intents = [
            Intent(event="order.shipped", user_id=user_id, data={"order_id": order, "carrier": "UPS"})
            for order in orders
        ]
        batches_before = services.intake.batcher.batches
        if together:
            results = await asyncio.gather(*(services.intake.accept(i, producer="shop") for i in intents))
            assert services.intake.batcher.batches - batches_before < len(intents) / 2  # really batched
        else:
            results = [await services.intake.accept(i, producer="shop") for i in intents]
        # A duplicate names the notification that carried the message first: by its place here.
        place = {r.notification_id: f"#{n}" for n, r in enumerate(results)}
        outcomes[user_id] = [_by_place(await decided(services, r.notification_id), place) for r in results]
    assert outcomes["u_together"] == outcomes["u_one_by_one"]
    assert "(notification #0)" in (
        outcomes["u_together"][12]["push"][2] or ""
    )  # the second B-0 names the first
    pushes = [by_channel["push"] for by_channel in outcomes["u_together"]]
    assert [p[0] for p in pushes].count("pending") == 10  # the 10-per-hour push cap
    assert {p[1] for p in pushes if p[0] == "suppressed"} == {"frequency_capped", "duplicate"}
    assert not any("concurrent" in p[2] for p in pushes if p[2])


def _by_place(
    outcome: dict[str, tuple[str, str | None, str | None]], place: dict[str, str]
) -> dict[str, tuple[str, str | None, str | None]]:
    def named(detail: str | None) -> str | None:
        return detail and re.sub(r"n_[0-9A-Z]+", lambda m: place.get(m.group(0), "elsewhere"), detail)

    return {channel: (status, reason, named(detail)) for channel, (status, reason, detail) in outcome.items()}


async def decided(services: Services, notification_id: str) -> dict[str, tuple[str, str | None, str | None]]:
    async with services.database.connect() as connection:
        rows = await connection.execute(
            sa.select(
                DELIVERIES.c.channel, DELIVERIES.c.status, DELIVERIES.c.reason, DELIVERIES.c.detail
            ).where(DELIVERIES.c.notification_id == notification_id)
        )
        return {r.channel: (r.status, r.reason, r.detail) for r in rows}


async def test_an_intent_whose_data_cannot_render_is_refused_and_nothing_is_stored(
    services: Services,
) -> None:
    """The producer hears at once which template needs what, instead of a failed send later."""
    await store_user(services)
    token = await admin_key(services)
    async with client(services, token) as http:
        response = await http.post("/v1/intents", json={**SHIPPED, "data": {"order_id": "A-1"}})
        bulk = await http.post(
            "/v1/intents/bulk",
            json={"event": "order.shipped", "user_ids": ["u_ada"], "data": {"order_id": "A-1"}},
        )
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("template_error", "intent.data")
    assert "templates/order.shipped/" in error["message"] and "carrier" in error["message"]
    assert bulk.status_code == 422 and bulk.json()["error"]["code"] == "template_error"
    assert await count(services, NOTIFICATIONS) == 0


@pytest.mark.parametrize(
    ("data", "field", "said"),
    [
        ({"order_id": "A-1\r\nBcc: all@example.com"}, "subject", "line break in a mail header"),
        ({"order_id": "A-1\nX"}, "subject", "line break in a mail header"),
        ({"tracking_url": "javascript:alert(document.cookie)"}, "html", "javascript: URL"),
        ({"tracking_url": " JaVa\tScRiPt:alert(1)"}, "action_url", "javascript: URL"),
        ({"tracking_url": "data:text/html,<script>alert(1)</script>"}, "data.url", "data: URL"),
        ({"tracking_url": "vbscript:msgbox(1)"}, "html", "vbscript: URL"),
    ],
)
async def test_data_a_header_or_a_link_cannot_carry_is_refused_naming_the_template_field(
    services: Services, data: dict[str, str], field: str, said: str
) -> None:
    """CR/LF bound for a subject used to be accepted and fail as `unsendable`; a `javascript:`
    URL used to reach `<a href>` and the inbox's `action_url`. Both are a 422 now."""
    await store_user(services)
    token = await admin_key(services)
    base = {"order_id": "A-1001", "carrier": "UPS"}
    async with client(services, token) as http:
        response = await http.post("/v1/intents", json={**SHIPPED, "data": {**base, **data}})
        fine = await http.post(
            "/v1/intents", json={**SHIPPED, "data": {**base, "tracking_url": "https://t.example/1"}}
        )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("template_error", "intent.data")
    assert f": {field}: " in error["message"] and said in error["message"]
    assert "cookie" not in error["message"] and "Bcc" not in error["message"]
    assert fine.status_code == 202, fine.text
    assert await count(services, NOTIFICATIONS) == 1  # only the clean one


async def test_a_cap_refused_at_reservation_still_folds_into_the_digest(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R7 when the decision's snapshot was stale: another process had just used up the cap.

    The snapshot is made stale on purpose (the history read returns nothing), so the decision
    says "send" and the reservation's atomic re-check in Redis refuses it: the refusal must
    fold the message into the digest exactly as the engine's own refusal would.
    """
    await store_user(
        services, {**ADA, "preferences": [{"event": "marketing.*", "channel": "push", "enabled": False}]}
    )
    token = await admin_key(services)

    def digest(week: int) -> dict[str, object]:
        data = {"week": f"W{week}", "articles": [], "unsubscribe_url": "https://example.com/u"}
        return {"event": "marketing.weekly_digest", "user_id": "u_ada", "priority": "low", "data": data}

    async with client(services, token) as http:
        for week in (40, 41, 42):
            assert (await http.post("/v1/intents", json=digest(week))).status_code == 202

        async def stale(user_ids: list[str], now: dt.datetime) -> list[UserHistory]:
            return [UserHistory() for _ in user_ids]

        monkeypatch.setattr(services.history, "recent_many", stale)
        response = await http.post("/v1/intents", json=digest(43))
    assert response.status_code == 202
    status = await services.deliveries.status(response.json()["notification_id"])
    assert status is not None
    [email] = [d for d in status.deliveries if d.channel == "email"]
    assert (email.status, email.reason) == ("suppressed", "frequency_capped")
    assert email.detail is not None and "folded into the next marketing.weekly_digest" in email.detail
    async with services.database.connect() as connection:
        key = await connection.scalar(
            sa.select(DELIVERIES.c.batch_key).where(DELIVERIES.c.id == email.delivery_id)
        )
    assert key == "u_ada:digest:marketing.weekly_digest"


async def test_an_intent_the_store_cannot_hold_fails_alone_and_its_batch_is_stored(
    services: Services,
) -> None:
    """Regression (PostgreSQL): a NUL in one intent's idempotency key failed the whole batch's
    key lookup, so 20 clean intents of another producer got 500. Below the API's edge (which
    refuses NUL with 422), the key's lookup and commit are isolated from the batch's."""
    clean = [
        Intent(
            event="order.shipped",
            user_id=f"u_clean_{i}",
            data={"order_id": f"C-{i}", "carrier": "UPS"},
            idempotency_key=f"c{i}",
        )
        for i in range(20)
    ]
    poisoned = Intent(
        event="order.shipped",
        user_id="u_x",
        data={"order_id": "X-1", "carrier": "UPS"},
        idempotency_key="k\x00",
    )
    results = await asyncio.gather(
        services.intake.accept(poisoned, producer="other"),
        *(services.intake.accept(i, producer="shop") for i in clean),
        return_exceptions=True,
    )
    assert all(not isinstance(r, BaseException) and not r.replay for r in results[1:]), results
    assert await count(services, NOTIFICATIONS, NOTIFICATIONS.c.producer == "shop") == 20
    if services.database.dialect == "postgresql":
        assert isinstance(results[0], Unstorable) and results[0].status == 422
        assert await count(services, NOTIFICATIONS, NOTIFICATIONS.c.producer == "other") == 0
