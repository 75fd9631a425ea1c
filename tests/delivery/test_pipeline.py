"""How workers handle provider failures: failover, retries, dead letters, fallback, expiry.

Providers here are real webhook adapters (httpx) posting to local HTTP servers that answer
as scripted; the rest of providers.yaml writes to a local outbox.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa

from gateway.providers.base import AdapterDeps
from gateway.providers.fcm_push import FcmAdapter
from gateway.providers.registry import ProviderRegistry
from gateway.services import Services
from gateway.store.tables import DeliveryRow, DeviceRow
from tests.delivery.conftest import registry
from tests.harness import (
    ADA,
    admin_key,
    client,
    delivery_statuses,
    eventually,
    running_worker,
    store_user,
)
from tests.providers import wire_fcm
from tests.providers.outbox import sent as written
from tests.stub_http import Reply, Request, stub_server

SHIPPED = {"event": "order.shipped", "user_id": "u_ada", "data": {"order_id": "A-1001", "carrier": "UPS"}}
EMAIL_ONLY = {**ADA, "contacts": {"email": "ada@example.com"}}


async def _accept(services: Services, intent: dict) -> str:  # type: ignore[type-arg]
    token = await admin_key(services)
    async with client(services, token) as http:
        response = await http.post("/v1/intents", json=intent)
    assert response.status_code == 202, response.text
    return str(response.json()["notification_id"])


async def _status(services: Services, notification_id: str) -> dict:  # type: ignore[type-arg]
    status = await services.deliveries.status(notification_id)
    assert status is not None
    return {d.channel: d for d in status.deliveries}


async def _settled(services: Services, notification_id: str, channel: str, *states: str) -> bool:
    return (await delivery_statuses(services, notification_id)).get(channel) in states


async def test_a_retryable_failure_fails_over_to_the_next_provider(
    quick_services: Services, tmp_path: Path
) -> None:
    await store_user(quick_services, EMAIL_ONLY)
    async with stub_server() as sendgrid, stub_server() as smtp:
        sendgrid.reply(Reply(503))
        smtp.reply(Reply(200, headers={"x-request-id": "relay-42"}))
        notification_id = await _accept(quick_services, SHIPPED)
        async with running_worker(
            quick_services, registry=registry(tmp_path / "outbox", sendgrid=sendgrid, smtp=smtp)
        ):
            await eventually(lambda: _settled(quick_services, notification_id, "email", "delivered"))
        email = (await _status(quick_services, notification_id))["email"]
    assert [(a.provider, a.outcome) for a in email.attempts] == [
        ("sendgrid", "retryable"),
        ("smtp", "delivered"),
    ]
    assert (email.provider, email.status) == ("smtp", "delivered")
    sent = smtp.requests[0]
    assert sent.headers["idempotency-key"] == email.delivery_id
    assert sent.json()["to"] == {"kind": "email", "value": "ada@example.com"}
    assert sent.headers["notigate-signature"].startswith("t=")


async def test_retries_follow_the_tier_schedule_then_succeed(
    quick_services: Services, tmp_path: Path
) -> None:
    await store_user(quick_services, EMAIL_ONLY)
    async with stub_server() as sendgrid, stub_server() as smtp:
        sendgrid.reply(Reply(503), Reply(200))
        smtp.reply(Reply(500), Reply(200))
        notification_id = await _accept(quick_services, SHIPPED)
        async with running_worker(
            quick_services, registry=registry(tmp_path / "outbox", sendgrid=sendgrid, smtp=smtp)
        ):
            await eventually(lambda: _settled(quick_services, notification_id, "email", "delivered"))
        email = (await _status(quick_services, notification_id))["email"]
    outcomes = [(a.provider, a.outcome) for a in email.attempts]
    assert outcomes == [("sendgrid", "retryable"), ("smtp", "retryable"), ("sendgrid", "delivered")]
    gap = (email.attempts[2].at - email.attempts[1].at).total_seconds()
    assert (
        0.1 <= gap < 5
    )  # the first retry of the (quick) schedule: 150 ms +- 20 % jitter, then queue latency


async def test_retry_after_from_the_provider_is_honoured(quick_services: Services, tmp_path: Path) -> None:
    await store_user(quick_services, EMAIL_ONLY)
    async with stub_server() as sendgrid, stub_server() as smtp:
        sendgrid.reply(Reply(429, headers={"retry-after": "1"}), Reply(200))
        smtp.reply(Reply(429, headers={"retry-after": "1"}), Reply(200))
        notification_id = await _accept(quick_services, SHIPPED)
        async with running_worker(
            quick_services, registry=registry(tmp_path / "outbox", sendgrid=sendgrid, smtp=smtp)
        ):
            await eventually(lambda: _settled(quick_services, notification_id, "email", "delivered"))
        email = (await _status(quick_services, notification_id))["email"]
    assert (email.attempts[2].at - email.attempts[1].at).total_seconds() >= 1.0


async def test_exhausted_retries_become_a_dead_letter_that_can_be_replayed(
    quick_services: Services, tmp_path: Path
) -> None:
    await store_user(quick_services, EMAIL_ONLY)
    token = await admin_key(quick_services, "ops")
    async with stub_server() as sendgrid, stub_server() as smtp:
        sendgrid.reply(Reply(502))
        smtp.reply(Reply(502))
        notification_id = await _accept(quick_services, SHIPPED)
        adapters = registry(tmp_path / "outbox", sendgrid=sendgrid, smtp=smtp)
        async with running_worker(quick_services, registry=adapters):
            await eventually(lambda: _settled(quick_services, notification_id, "email", "dead"))
            email = (await _status(quick_services, notification_id))["email"]
            assert email.attempts and len(email.attempts) == 6  # 3 attempts x 2 providers
            async with client(quick_services, token) as http:
                page = (await http.get("/v1/dead-letters")).json()
                assert [d["delivery_id"] for d in page["dead_letters"]] == [email.delivery_id]
                letter = page["dead_letters"][0]
                assert letter["attempts"] == 3 and "gave up after 3 attempts" in letter["error"]
                sendgrid.reply(Reply(200))
                replay = await http.post(f"/v1/dead-letters/{letter['dead_letter_id']}/replay")
                assert replay.status_code == 202
                replayed_id = replay.json()["delivery_id"]
                again = await http.post(f"/v1/dead-letters/{letter['dead_letter_id']}/replay")
                assert again.status_code == 200 and again.json()["delivery_id"] == replayed_id
            await eventually(lambda: _delivery_status(quick_services, replayed_id, "delivered"))
            async with client(quick_services, token) as http:
                listing = (await http.get("/v1/dead-letters")).json()
                everything = (await http.get("/v1/dead-letters", params={"include_replayed": "true"})).json()
    assert listing["dead_letters"] == []
    assert everything["dead_letters"][0]["replay_delivery_id"] == replayed_id


async def _delivery_status(services: Services, delivery_id: str, status: str) -> bool:
    table = DeliveryRow.__table__  # type: ignore[attr-defined]
    async with services.database.connect() as connection:
        return await connection.scalar(sa.select(table.c.status).where(table.c.id == delivery_id)) == status


async def test_a_gone_device_is_deactivated_and_the_urgent_chain_moves_on(
    quick_services: Services, tmp_path: Path
) -> None:
    """R13: push fails for good (FCM answers UNREGISTERED), so SMS is tried next."""
    await store_user(
        quick_services,
        {
            **ADA,
            "contacts": {
                "phone": "+33612345678",
                "email": "ada@example.com",
                "devices": [{"platform": "ios", "token": wire_fcm.UNREGISTERED_TOKEN}],
            },
        },
    )
    async with stub_server(wire_fcm.google) as fcm_server:
        base = registry(tmp_path / "outbox")
        fcm = FcmAdapter.from_spec(wire_fcm.spec(fcm_server.url, 2.0), AdapterDeps())
        notification_id = await _accept(quick_services, {**SHIPPED, "priority": "urgent"})
        before = await delivery_statuses(quick_services, notification_id)
        assert (before["push"], before["sms"], before["email"]) == ("pending", "standby", "standby")
        reg = ProviderRegistry({**base.adapters, "fcm": fcm}, base.profile)
        async with running_worker(quick_services, registry=reg):
            await eventually(lambda: _settled(quick_services, notification_id, "sms", "delivered"))
    after = await _status(quick_services, notification_id)
    assert (after["push"].status, after["push"].reason) == ("failed", "unregistered")
    assert after["sms"].status == "delivered"
    assert after["email"].status == "standby"  # the chain stopped where it succeeded
    table = DeviceRow.__table__  # type: ignore[attr-defined]
    async with quick_services.database.connect() as connection:
        device = (await connection.execute(sa.select(table.c.active, table.c.reason))).one()
    assert (device.active, device.reason) == (False, "unregistered")
    user = await quick_services.recipients.get_user("u_ada")
    assert user is not None and [d.active for d in user.contacts.devices] == [False]


async def test_a_delivery_past_its_expiry_is_recorded_expired_not_sent(
    quick_services: Services, tmp_path: Path
) -> None:
    """An OTP the workers reach after its tier's 10-minute expiry is dropped, not sent late."""
    clock = quick_services.clock
    accepted = dt.datetime.now(dt.UTC)
    clock.now = accepted  # type: ignore[attr-defined]
    await store_user(quick_services, {**ADA, "contacts": {"phone": "+33612345678"}})
    notification_id = await _accept(
        quick_services,
        {
            "event": "security.otp",
            "user_id": "u_ada",
            "priority": "urgent",
            "data": {"code": "123456", "minutes": 10},
        },
    )
    clock.now = accepted + dt.timedelta(minutes=11)  # type: ignore[attr-defined]
    async with running_worker(quick_services, registry=registry(tmp_path / "outbox")):
        await eventually(lambda: _settled(quick_services, notification_id, "sms", "expired"))
    sms = (await _status(quick_services, notification_id))["sms"]
    assert [a.outcome for a in sms.attempts] == ["expired"]
    assert [s for s in written(tmp_path / "outbox") if s.channel == "sms"] == []


async def test_a_delivery_left_sending_by_a_dead_worker_is_not_resent_without_idempotency(
    quick_services: Services, tmp_path: Path
) -> None:
    await store_user(quick_services, EMAIL_ONLY)
    async with stub_server() as sendgrid:
        notification_id = await _accept(quick_services, SHIPPED)
        email_id = (await _status(quick_services, notification_id))["email"].delivery_id
        now = dt.datetime.now(dt.UTC)
        claimed = await quick_services.deliveries.claim(
            [email_id], "dead-worker", dt.timedelta(seconds=-1), now
        )
        assert [c.id for c in claimed] == [email_id]  # a worker claimed it, then died (lease already over)
        adapters = registry(tmp_path / "outbox", sendgrid=sendgrid)
        adapters.adapters["sendgrid"].idempotent = False  # this provider, unlike ours, cannot drop a repeat
        async with running_worker(quick_services, registry=adapters):
            await eventually(lambda: _settled(quick_services, notification_id, "email", "unknown"))
    email = (await _status(quick_services, notification_id))["email"]
    assert email.reason == "outcome_unknown"
    assert sendgrid.requests == []  # not sent a second time


async def test_dead_letters_are_admin_only(quick_services: Services) -> None:
    token = await admin_key(quick_services, "producer", admin=False, events=["order.*"])
    async with client(quick_services, token) as http:
        response = await http.get("/v1/dead-letters")
    assert (response.status_code, response.json()["error"]["code"]) == (403, "admin_required")


async def test_a_push_retry_goes_only_to_the_devices_not_reached_yet(
    quick_services: Services, tmp_path: Path
) -> None:
    # One device got the message, FCM was briefly unavailable for the other: the retry sends
    # to that one alone, so nobody's phone shows the message twice.
    flaky = "fL4kyT0k3n:APA91bConformanceBrieflyUnavailableDevice77a1"
    await store_user(
        quick_services,
        {
            **ADA,
            "contacts": {
                "devices": [
                    {"platform": "android", "token": wire_fcm.VALID_TOKEN},
                    {"platform": "android", "token": flaky},
                ]
            },
        },
    )
    calls: list[str] = []

    def google(request: Request) -> Reply:
        if request.path != wire_fcm.SEND_PATH:
            return wire_fcm.google(request)
        token = request.json()["message"]["token"]
        calls.append(token)
        if token == flaky and calls.count(flaky) == 1:
            return wire_fcm.google_error(
                503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"
            )
        return wire_fcm.delivered(request)

    async with stub_server(google) as fcm_server:
        base = registry(tmp_path / "outbox")
        fcm = FcmAdapter.from_spec(wire_fcm.spec(fcm_server.url, 2.0), AdapterDeps())
        notification_id = await _accept(quick_services, {**SHIPPED, "channels": ["push"]})
        reg = ProviderRegistry({**base.adapters, "fcm": fcm}, base.profile)
        async with running_worker(quick_services, registry=reg):
            await eventually(lambda: _settled(quick_services, notification_id, "push", "delivered"))
    push = (await _status(quick_services, notification_id))["push"]
    assert sorted(calls) == sorted([wire_fcm.VALID_TOKEN, flaky, flaky])
    assert [(a.provider, a.outcome) for a in push.attempts] == [
        ("fcm", "delivered"),
        ("fcm", "retryable"),
        ("apns", "skipped"),  # the chain's next provider takes no FCM token
        ("fcm", "delivered"),
    ]  # devices in the order they were registered; the retry only to the second
    assert push.status == "delivered"
