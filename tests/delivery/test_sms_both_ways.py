"""SMS in both directions through the real Twilio adapter (the `twilio` SDK) and a worker,
against a local server speaking Twilio's Messages API, with callbacks and incoming texts
signed by the SDK's `RequestValidator`: a phone that was off gets the message later, and a
recipient who texted STOP is reached again once they text START."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from gateway.policy.compiled import CompiledPolicy
from gateway.providers.registry import ProviderRegistry
from gateway.redact import Secret
from gateway.redis_server import RedisServer
from gateway.services import Services
from gateway.store import migrate
from tests.conftest import Clock, make_settings
from tests.delivery.conftest import registry
from tests.harness import ADA, DELIVERIES, admin_key, client, eventually, running_worker, store_user
from tests.providers import wire_twilio
from tests.stub_http import Reply, Request, StubServer, stub_server

PUBLIC_URL = "https://notify.example.com"
PHONE = "+33612345678"
SHIPPED = {"event": "order.shipped", "user_id": "u_ada"}


@pytest.fixture
async def sms_services(
    database_url: str, redis_server: RedisServer, tmp_path: Path, quick_policy: CompiledPolicy
) -> AsyncIterator[Services]:
    settings = make_settings(
        database_url,
        redis_server.url,
        tmp_path,
        public_url=PUBLIC_URL,
        twilio_auth_token=Secret(wire_twilio.AUTH_TOKEN),
    )
    opened = Services(settings, policy=quick_policy, clock=Clock())
    await migrate.upgrade(opened.database)
    await opened.start()
    await store_user(opened, {**ADA, "preferences": [{"event": "*", "channel": "sms", "enabled": True}]})
    yield opened
    await opened.close()


def with_twilio(tmp_path: Path, server: StubServer) -> ProviderRegistry:
    """The outbox for every channel but SMS, which goes through the real Twilio adapter."""
    providers = registry(tmp_path / "outbox")
    providers.adapters["twilio"] = wire_twilio.WIRE.build(server.url, 2.0)
    return providers


@contextlib.asynccontextmanager
async def gateway(
    services: Services, tmp_path: Path, twilio_api: Callable[[Request], Reply]
) -> AsyncIterator[tuple[httpx.AsyncClient, StubServer]]:
    """The API, a worker sending SMS through the real adapter, and Twilio's stand-in."""
    async with stub_server(twilio_api) as twilio:
        token = await admin_key(services)
        async with (
            client(services, token) as http,
            running_worker(services, registry=with_twilio(tmp_path, twilio)),
        ):
            yield http, twilio


def signed(path: str, form: dict[str, str]) -> dict[str, str]:
    signature = RequestValidator(wire_twilio.AUTH_TOKEN).compute_signature(PUBLIC_URL + path, form)
    return {"X-Twilio-Signature": signature}


async def sms_delivery(services: Services, notification_id: str) -> Any:
    async with services.database.connect() as connection:
        return (
            await connection.execute(
                sa.select(DELIVERIES).where(
                    DELIVERIES.c.notification_id == notification_id, DELIVERIES.c.channel == "sms"
                )
            )
        ).one()


async def post_intent(http: httpx.AsyncClient, order: str = "A-1") -> str:
    intent = {**SHIPPED, "data": {"order_id": order, "carrier": "UPS"}}
    response = await http.post("/v1/intents", json=intent)
    assert response.status_code == 202, response.text
    return str(response.json()["notification_id"])


def until(services: Services, notification_id: str, ok: Callable[[Any], bool]) -> Callable[[], Any]:
    async def check() -> bool:
        return ok(await sms_delivery(services, notification_id))

    return check


async def test_a_phone_that_was_off_gets_the_sms_when_twilio_reports_30003(
    sms_services: Services, tmp_path: Path
) -> None:
    def twilio_api(request: Request) -> Reply:
        return Reply(201, wire_twilio.message_resource(request))

    async with gateway(sms_services, tmp_path, twilio_api) as (http, twilio):
        notification_id = await post_intent(http)
        await eventually(until(sms_services, notification_id, lambda d: d.status == "delivered"))
        first = (await sms_delivery(sms_services, notification_id)).provider_message_id
        callback = {
            "MessageSid": first,
            "MessageStatus": "undelivered",
            "ErrorCode": "30003",
            "To": PHONE,
            "AccountSid": wire_twilio.ACCOUNT_SID,
        }
        path = "/v1/webhooks/twilio/status"
        answer = await http.post(path, data=callback, headers=signed(path, callback))
        assert answer.status_code == 200 and answer.json()["resent"] == 1, answer.text
        await eventually(
            until(
                sms_services,
                notification_id,
                lambda d: d.status == "delivered" and d.provider_message_id != first,
            )
        )
    sends = [wire_twilio.form(r) for r in twilio.requests if wire_twilio.WIRE.is_send(r)]
    assert [s["To"] for s in sends] == [PHONE, PHONE]
    stored = await sms_services.recipients.get_user("u_ada")
    assert stored is not None and stored.contacts.phone == PHONE  # kept, not retired as a bounce


async def test_a_recipient_who_texted_stop_is_reached_again_after_start(
    sms_services: Services, tmp_path: Path
) -> None:
    refused = [True]

    def twilio_api(request: Request) -> Reply:
        if refused.pop() if refused else False:
            return wire_twilio.error(400, 21610, "Attempt to send to unsubscribed recipient")
        return Reply(201, wire_twilio.message_resource(request))

    async with gateway(sms_services, tmp_path, twilio_api) as (http, twilio):
        first = await post_intent(http)
        await eventually(until(sms_services, first, lambda d: d.status == "failed"))
        assert (await sms_delivery(sms_services, first)).reason == "unsubscribed"
        stored = await sms_services.recipients.get_user("u_ada")
        assert stored is not None and stored.contacts.phone is None  # SMS is off for that phone

        path = "/v1/webhooks/twilio/inbound"
        start = {
            "MessageSid": f"SM{time.monotonic_ns()}",
            "From": PHONE,
            "To": "+15005550006",
            "Body": "START",
        }
        answer = await http.post(path, data=start, headers=signed(path, start))
        assert answer.status_code == 200, answer.text

        second = await post_intent(http, "A-2")
        await eventually(until(sms_services, second, lambda d: d.status == "delivered"))
    assert len([r for r in twilio.requests if wire_twilio.WIRE.is_send(r)]) == 2
