"""SMS in both directions through the real Twilio adapter (the `twilio` SDK) and a worker,
against a local server speaking Twilio's Messages API, with callbacks and incoming texts
signed by the SDK's `RequestValidator`: a phone that was off gets the message later, a
recipient who texted STOP is reached again once they text START, and the price Twilio sets
after sending replaces the configured cost."""

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

from gateway.metrics import REGISTRY
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
COST, REPLACED = "notigate_delivery_cost_usd_total", "notigate_delivery_cost_replaced_usd_total"
PHONE = "+33612345678"
SHIPPED = {"event": "order.shipped", "user_id": "u_ada"}


@pytest.fixture
async def twilio() -> AsyncIterator[StubServer]:
    """Twilio's stand-in, for the worker's adapter and the API's price lookups alike."""
    async with stub_server() as server:
        yield server


@pytest.fixture
async def sms_services(
    database_url: str,
    redis_server: RedisServer,
    tmp_path: Path,
    quick_policy: CompiledPolicy,
    twilio: StubServer,
) -> AsyncIterator[Services]:
    settings = make_settings(
        database_url,
        redis_server.url,
        tmp_path,
        public_url=PUBLIC_URL,
        twilio_auth_token=Secret(wire_twilio.AUTH_TOKEN),
        twilio_base_url=twilio.url,
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
    providers.specs["twilio"] = wire_twilio.spec(server.url, 2.0)  # cost 0.0075 a segment
    return providers


@contextlib.asynccontextmanager
async def gateway(
    services: Services, tmp_path: Path, twilio: StubServer, twilio_api: Callable[[Request], Reply]
) -> AsyncIterator[httpx.AsyncClient]:
    """The API, and a worker sending SMS through the real adapter to Twilio's stand-in."""
    twilio.script = twilio_api
    token = await admin_key(services)
    async with (
        client(services, token) as http,
        running_worker(services, registry=with_twilio(tmp_path, twilio)),
    ):
        yield http


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
    sms_services: Services, tmp_path: Path, twilio: StubServer
) -> None:
    def twilio_api(request: Request) -> Reply:
        return Reply(201, wire_twilio.message_resource(request))

    async with gateway(sms_services, tmp_path, twilio, twilio_api) as http:
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
    sms_services: Services, tmp_path: Path, twilio: StubServer
) -> None:
    refused = [True]

    def twilio_api(request: Request) -> Reply:
        if refused.pop() if refused else False:
            return wire_twilio.error(400, 21610, "Attempt to send to unsubscribed recipient")
        return Reply(201, wire_twilio.message_resource(request))

    async with gateway(sms_services, tmp_path, twilio, twilio_api) as http:
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


def _cost(metric: str) -> float:
    return REGISTRY.get_sample_value(metric, {"channel": "sms", "provider": "twilio"}) or 0.0


async def test_the_price_twilio_sets_after_sending_replaces_the_configured_cost_once(
    sms_services: Services, tmp_path: Path, twilio: StubServer
) -> None:
    """Twilio's create answer has `price: null`, and its status callbacks carry no price: on
    `sent`/`delivered` the API reads the Message resource, records the price on the attempt
    (`GET /v1/notifications/{id}` shows it reported) and in the cost metrics, once."""

    def twilio_api(request: Request) -> Reply:
        if request.method == "GET":  # the Message resource, priced once Twilio sent it
            sid = request.path.rsplit("/", 1)[1].removesuffix(".json")
            resource = {**wire_twilio.message_resource(request), "sid": sid, "status": "delivered"}
            return Reply(200, {**resource, "num_segments": "2", "price": "-0.01580", "price_unit": "USD"})
        return Reply(201, {**wire_twilio.message_resource(request), "num_segments": "2"})

    path = "/v1/webhooks/twilio/status"
    async with gateway(sms_services, tmp_path, twilio, twilio_api) as http:
        notification_id = await post_intent(http)
        await eventually(until(sms_services, notification_id, lambda d: d.status == "delivered"))
        sid = (await sms_delivery(sms_services, notification_id)).provider_message_id
        before = {m: _cost(m) for m in (COST, REPLACED)}
        for status in ("sent", "delivered", "delivered"):  # Twilio calls per status, and retries
            callback = {"MessageSid": sid, "MessageStatus": status, "To": PHONE}
            callback["AccountSid"] = wire_twilio.ACCOUNT_SID
            answer = await http.post(path, data=callback, headers=signed(path, callback))
            assert answer.status_code == 200, answer.text
        shown = (await http.get(f"/v1/notifications/{notification_id}")).json()
    (sms,) = [d for d in shown["deliveries"] if d["channel"] == "sms"]
    (attempt,) = sms["attempts"]
    assert (attempt["segments"], attempt["cost"], attempt["cost_source"]) == (2, 0.0158, "reported")
    assert {"channel": "sms", "provider": "twilio", "messages": 1, "segments": 2, "cost": 0.0158} in shown[
        "costs"
    ]
    assert round(_cost(COST) - before[COST], 6) == 0.0158  # the price, added once
    assert round(_cost(REPLACED) - before[REPLACED], 6) == 0.015  # the configured 2 x 0.0075 it replaced
    fetches = [r for r in twilio.requests if r.method == "GET"]
    assert [r.path for r in fetches] == [f"{wire_twilio.MESSAGES_PATH.removesuffix('.json')}/{sid}.json"]
    assert fetches[0].headers["authorization"].startswith("Basic ")  # the account the callback named
