"""The provider chain as production failures drive it, through the real SDK-backed adapters.

SendGrid is the real `SendGridAdapter` (the `sendgrid` SDK) against a local server speaking
SendGrid's v3 wire format; SMTP is the real `SmtpAdapter` (aiosmtplib) against a local
aiosmtpd relay. Breakers and pauses live in the run's real Redis. Each test is one scenario
of issue 13's "Where it stands".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.metrics import REGISTRY
from gateway.policy.compiled import CompiledPolicy
from gateway.providers.base import Adapter
from gateway.providers.console import ConsoleAdapter
from gateway.providers.guard import ProviderGuard
from gateway.providers.registry import ProviderRegistry
from gateway.providers.smtp_email import SmtpAdapter
from gateway.providers.spec import ProviderSpec
from gateway.redis_server import RedisServer
from gateway.services import Services
from gateway.store import migrate
from gateway.store.tables import DeliveryRow
from gateway.tracking.events import EventRecorder, ProviderEvent
from tests.conftest import Clock, make_settings
from tests.delivery.test_guarded import guard_state, shipped
from tests.delivery.test_pipeline import EMAIL_ONLY, _settled, _status
from tests.harness import admin_key, client, eventually, running_worker, store_user
from tests.providers.test_smtp import Scripted, listening, smtp_server
from tests.providers.wire_sendgrid import WIRE as SENDGRID
from tests.providers.wire_sendgrid import errors
from tests.providers.wire_twilio import WIRE as TWILIO
from tests.providers.wire_twilio import form, message_resource
from tests.stub_http import Reply, Request, StubServer, stub_server

SENDGRID_TIMEOUT = 0.5  # seconds; "late" answers come after twice this
OPENS_LATE = {"failure_rate": 0.5, "min_calls": 20, "window": "60s", "open_for": "60s"}


@dataclasses.dataclass
class Chain:
    """SendGrid then SMTP, the shipped email chain, with both ends observable."""

    sendgrid: StubServer
    relay: Scripted
    registry: ProviderRegistry


def _registry(outbox: Path, sendgrid: StubServer, smtp_port: int, **sendgrid_spec: Any) -> ProviderRegistry:
    adapters: dict[str, Adapter] = {
        name: ConsoleAdapter(name, channel, outbox)
        for name, channel in {"twilio": "sms", "fcm": "push", "inbox": "in_app", "webhook": "webhook"}.items()
    }
    adapters["sendgrid"] = SENDGRID.build(sendgrid.url, SENDGRID_TIMEOUT)
    adapters["smtp"] = SmtpAdapter(
        "smtp",
        "email",
        host="127.0.0.1",
        port=smtp_port,
        tls="none",
        sender="n@notigate.example",
        timeout=2,
    )
    raw = {"channel": "email", "adapter": "sendgrid", "cost": 0.001, "timeout": "500ms", **sendgrid_spec}
    specs = {
        "sendgrid": ProviderSpec.parse("sendgrid", raw, {}),
        "smtp": ProviderSpec.parse("smtp", {"channel": "email", "adapter": "smtp", "cost": 0.0005}, {}),
    }
    return ProviderRegistry(adapters, "test", specs)


@asynccontextmanager
async def email_chain(outbox: Path, **sendgrid_spec: Any) -> AsyncIterator[Chain]:
    relay = Scripted()
    async with stub_server() as sendgrid, listening(smtp_server(relay)) as port:
        reg = _registry(outbox, sendgrid, port, **sendgrid_spec)
        try:
            yield Chain(sendgrid, relay, reg)
        finally:
            await reg.close()


async def send_emails(services: Services, chain: Chain, count: int, settled: str = "delivered") -> list[Any]:
    """Accept `count` emails one after the other and wait for each to settle; their statuses."""
    seen = []
    token = await admin_key(services)
    async with running_worker(services, registry=chain.registry), client(services, token) as http:
        for n in range(count):
            response = await http.post("/v1/intents", json=shipped(n))
            assert response.status_code == 202, response.text
            notification_id: str = response.json()["notification_id"]
            await eventually(functools.partial(_settled, services, notification_id, "email", settled))
            seen.append((await _status(services, notification_id))["email"])
    return seen


def tries(email: Any) -> list[tuple[str | None, str]]:
    return [(a.provider, a.outcome) for a in email.attempts]


@contextmanager
def counted(metric: str, **labels: str) -> Iterator[list[float]]:
    """How much a counter of the gateway's registry grew inside the block."""
    before = REGISTRY.get_sample_value(metric, labels) or 0.0
    grew: list[float] = []
    yield grew
    grew.append((REGISTRY.get_sample_value(metric, labels) or 0.0) - before)


async def test_a_rotated_sendgrid_key_fails_over_to_smtp_and_opens_the_breaker_at_once(
    quick_services: Services, tmp_path: Path
) -> None:
    await store_user(quick_services, EMAIL_ONLY)
    async with email_chain(tmp_path / "outbox", circuit_breaker=OPENS_LATE) as chain:
        chain.sendgrid.reply(Reply(401, errors((None, "The provided authorization grant is invalid"))))
        labels = {"provider": "sendgrid", "code": "unauthorized"}
        with counted("notigate_provider_configuration_failures_total", **labels) as alerts:
            first, second = await send_emails(quick_services, chain, 2)
        breaker = await guard_state(quick_services, chain.registry)
    assert tries(first) == [("sendgrid", "retryable"), ("smtp", "delivered")]
    # One refusal opened it, though min_calls is 20: a bad key fails every call alike.
    assert tries(second) == [("sendgrid", "skipped"), ("smtp", "delivered")]
    assert (first.provider, second.provider) == ("smtp", "smtp")
    assert len(chain.sendgrid.requests) == 1 and len(chain.relay.received) == 2
    assert breaker == "open" and alerts == [1.0]


async def test_an_invalid_address_at_sendgrid_is_not_tried_at_smtp(
    quick_services: Services, tmp_path: Path
) -> None:
    await store_user(quick_services, EMAIL_ONLY)
    async with email_chain(tmp_path / "outbox") as chain:
        chain.sendgrid.reply(
            Reply(400, errors(("personalizations.0.to.0.email", "Does not contain a valid address.")))
        )
        (email,) = await send_emails(quick_services, chain, 1, settled="failed")
    assert tries(email) == [("sendgrid", "permanent")]
    assert email.reason == "invalid_address" and chain.relay.received == []


async def test_a_late_202_from_sendgrid_is_recorded_unknown_and_not_sent_by_smtp(
    quick_services: Services, tmp_path: Path
) -> None:
    """SendGrid accepts the email after our timeout: sending it through SMTP as well would
    deliver it twice (observed before issue 13)."""
    await store_user(quick_services, EMAIL_ONLY)
    async with email_chain(tmp_path / "outbox") as chain:
        chain.sendgrid.reply(Reply(202, headers={"x-message-id": "late-1"}, delay=2 * SENDGRID_TIMEOUT))
        (email,) = await send_emails(quick_services, chain, 1, settled="unknown")
    assert tries(email) == [("sendgrid", "unknown")]
    assert (email.status, email.reason, email.provider) == ("unknown", "outcome_unknown", "sendgrid")
    assert "not sent again" in (email.detail or "")
    assert len(chain.sendgrid.requests) == 1 and chain.relay.received == []
    # SendGrid's event webhook later says what became of it: that settles it.
    services = quick_services
    recorder = EventRecorder(services.database, services.recipients, services.current_policy, services.clock)
    at = dt.datetime.now(dt.UTC)
    event = ProviderEvent("sendgrid", "sendgrid:ev1", "delivered", at, "email", delivery_id=email.delivery_id)
    await recorder.record([event])
    table = DeliveryRow.__table__  # type: ignore[attr-defined]
    async with services.database.connect() as connection:
        query = sa.select(table.c.status, table.c.detail).where(table.c.id == email.delivery_id)
        row = (await connection.execute(query)).one()
    assert (row.status, row.detail) == ("delivered", "settled by sendgrid's delivered event")


@pytest.fixture
async def at_least_once_services(
    database_url: str, redis_server: RedisServer, tmp_path: Path, quick_policy: CompiledPolicy
) -> AsyncIterator[Services]:
    """The quick policy with every tier opting into at-least-once (`ambiguous: at_least_once`)."""
    tiers = {name: dataclasses.replace(t, at_least_once=True) for name, t in quick_policy.tiers.items()}
    policy = dataclasses.replace(quick_policy, tiers=tiers)
    opened = Services(make_settings(database_url, redis_server.url, tmp_path), policy=policy, clock=Clock())
    await migrate.upgrade(opened.database)
    await opened.start()
    yield opened
    await opened.close()


async def test_a_tier_that_opts_into_at_least_once_fails_over_after_a_late_answer(
    at_least_once_services: Services, tmp_path: Path
) -> None:
    services = at_least_once_services
    await store_user(services, EMAIL_ONLY)
    async with email_chain(tmp_path / "outbox") as chain:
        chain.sendgrid.reply(Reply(202, delay=2 * SENDGRID_TIMEOUT))
        (email,) = await send_emails(services, chain, 1)
    assert tries(email) == [("sendgrid", "retryable"), ("smtp", "delivered")]
    assert len(chain.relay.received) == 1


async def test_a_429_with_a_reset_ahead_pauses_sendgrid_for_every_later_delivery(
    quick_services: Services, tmp_path: Path
) -> None:
    """SendGrid's 429 says when it takes mail again (X-RateLimit-Reset, 40 s ahead): the next
    deliveries go straight to SMTP instead of each calling SendGrid again."""
    await store_user(quick_services, EMAIL_ONLY)
    async with email_chain(tmp_path / "outbox") as chain:
        reset = int(time.time()) + 40
        chain.sendgrid.reply(
            Reply(429, errors((None, "too many requests")), headers={"x-ratelimit-reset": str(reset)}),
            Reply(202, headers={"x-message-id": "should-not-be-called"}),
        )
        first, second, third = await send_emails(quick_services, chain, 3)
    assert tries(first) == [("sendgrid", "retryable"), ("smtp", "delivered")]
    assert tries(second) == tries(third) == [("sendgrid", "skipped"), ("smtp", "delivered")]
    assert (second.attempts[0].error or "").startswith("paused: free again in 3")
    assert len(chain.sendgrid.requests) == 1


async def test_waiting_on_paused_providers_does_not_use_up_attempts(
    quick_services: Services, tmp_path: Path
) -> None:
    """Both providers paused: nothing is sent, the delivery waits for the first to free up,
    and the wait gives its attempt back (the tier's max_attempts counts real tries only).

    About 4 s: it waits out a real pause, which must outlast the 1 s a send may wait for a
    provider by itself, with room for a loaded machine between the pause and the claim."""
    services = quick_services
    await store_user(services, EMAIL_ONLY)
    token = await admin_key(services)
    async with email_chain(tmp_path / "outbox") as chain:
        chain.sendgrid.reply(Reply(202, headers={"x-message-id": "after-the-pause"}))
        guard = ProviderGuard(services.redis, services.keys, chain.registry.specs)
        async with running_worker(services, registry=chain.registry), client(services, token) as http:
            await guard.pause("sendgrid", 4)
            await guard.pause("smtp", 60)
            response = await http.post("/v1/intents", json=shipped(1))
            notification_id = response.json()["notification_id"]
            await eventually(lambda: _settled(services, notification_id, "email", "delivered"))
        email = (await _status(services, notification_id))["email"]
        table = DeliveryRow.__table__  # type: ignore[attr-defined]
        async with services.database.connect() as connection:
            query = sa.select(table.c.attempts).where(table.c.id == email.delivery_id)
            attempts = (await connection.execute(query)).scalar_one()
    assert tries(email) == [("sendgrid", "skipped"), ("smtp", "skipped"), ("sendgrid", "delivered")]
    assert attempts == 1  # two claims, one real try
    assert chain.relay.received == []


async def test_an_otp_sms_records_twilios_price_and_segments_and_carries_its_lifetime(
    quick_services: Services, tmp_path: Path
) -> None:
    """Cost is what was really charged, and the critical tier's 10 minutes reach Twilio."""
    services = quick_services
    await store_user(services, {**EMAIL_ONLY, "contacts": {"phone": "+33612345678"}})
    token = await admin_key(services)

    def twilio_answer(request: Request) -> Reply:
        return Reply(201, {**message_resource(request), "num_segments": "2", "price": "-0.01580"})

    async with email_chain(tmp_path / "outbox") as chain, stub_server(twilio_answer) as twilio:
        reg = chain.registry
        reg.adapters["twilio"] = TWILIO.build(twilio.url, 2.0)
        reg.specs["twilio"] = ProviderSpec.parse(
            "twilio", {"channel": "sms", "adapter": "twilio", "cost": 0.0079}, {}
        )
        otp = {
            "event": "security.otp",
            "user_id": "u_ada",
            "priority": "urgent",
            "data": {"code": "123456", "minutes": 10},
        }
        async with running_worker(services, registry=reg), client(services, token) as http:
            notification_id = (await http.post("/v1/intents", json=otp)).json()["notification_id"]
            await eventually(lambda: _settled(services, notification_id, "sms", "delivered"))
            shown = (await http.get(f"/v1/notifications/{notification_id}")).json()
            scraped = await http.get("/metrics")
    (sms,) = [d for d in shown["deliveries"] if d["channel"] == "sms"]
    (attempt,) = sms["attempts"]
    assert (attempt["segments"], attempt["cost"], attempt["cost_source"]) == (2, 0.0158, "reported")
    assert {"channel": "sms", "provider": "twilio", "messages": 1, "segments": 2, "cost": 0.0158} in shown[
        "costs"
    ]
    assert 'notigate_delivery_cost_usd_total{channel="sms",provider="twilio"}' in scraped.text
    validity = int(form(twilio.requests[0])["ValidityPeriod"])
    assert 500 < validity <= 600  # what is left of the critical tier's 10-minute expiry


async def test_cost_follows_the_provider_that_carried_the_message(
    quick_services: Services, tmp_path: Path
) -> None:
    """SendGrid failed, SMTP sent: the cost is SMTP's configured one, not the chain's first."""
    services = quick_services
    await store_user(services, EMAIL_ONLY)
    async with email_chain(tmp_path / "outbox") as chain:
        chain.sendgrid.reply(Reply(503))
        (email,) = await send_emails(services, chain, 1)
    costs = [(a.provider, a.cost, a.cost_source) for a in email.attempts]
    assert costs == [("sendgrid", None, None), ("smtp", 0.0005, "configured")]
