"""Circuit breakers and rate limits around provider calls, as every worker sees them.

Providers are real webhook adapters posting to local HTTP servers; their breaker and rate
limit live in the run's real Redis (the guard), so what one delivery's failures teach the
breaker, the next delivery obeys.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from gateway.providers.registry import ProviderRegistry
from gateway.providers.spec import ProviderSpec
from gateway.services import Services
from tests.delivery.conftest import registry
from tests.delivery.test_pipeline import EMAIL_ONLY, _settled, _status
from tests.harness import admin_key, client, eventually, running_worker, store_user
from tests.stub_http import Reply, stub_server


def guarded(base: ProviderRegistry, **limits: dict[str, Any]) -> ProviderRegistry:
    """`base` with sendgrid's breaker / rate limit set as given (everything else unlimited)."""
    specs = {
        "sendgrid": ProviderSpec.parse(
            "sendgrid", {"channel": "email", "adapter": "webhook", "cost": 0.001, **limits}, {}
        )
    }
    return ProviderRegistry(base.adapters, base.profile, specs)


def shipped(n: int) -> dict[str, Any]:
    return {"event": "order.shipped", "user_id": "u_ada", "data": {"order_id": f"A-{n}", "carrier": "UPS"}}


async def deliver_in_turn(
    services: Services, reg: ProviderRegistry, count: int
) -> list[list[tuple[str, str]]]:
    """Accept and deliver `count` emails one after the other; each one's attempts."""
    seen = []
    token = await admin_key(services)
    async with running_worker(services, registry=reg), client(services, token) as http:
        for n in range(count):
            response = await http.post("/v1/intents", json=shipped(n))
            assert response.status_code == 202, response.text
            notification_id = response.json()["notification_id"]
            await eventually(functools.partial(_settled, services, notification_id, "email", "delivered"))
            email = (await _status(services, notification_id))["email"]
            seen.append([(a.provider, a.outcome) for a in email.attempts])
    return seen


async def test_an_open_breaker_sends_every_worker_straight_to_the_next_provider(
    quick_services: Services, tmp_path: Path
) -> None:
    await store_user(quick_services, EMAIL_ONLY)
    async with stub_server() as sendgrid, stub_server() as smtp:
        sendgrid.reply(Reply(503))
        smtp.reply(Reply(200))
        reg = guarded(
            registry(tmp_path / "outbox", sendgrid=sendgrid, smtp=smtp),
            circuit_breaker={"failure_rate": 0.5, "min_calls": 2, "window": "60s", "open_for": "60s"},
        )
        seen = await deliver_in_turn(quick_services, reg, 4)
        breaker = await guard_state(quick_services, reg)
    failing_over = [("sendgrid", "retryable"), ("smtp", "delivered")]
    skipping = [("sendgrid", "skipped"), ("smtp", "delivered")]
    assert seen == [failing_over, failing_over, skipping, skipping]
    assert len(sendgrid.requests) == 2  # once open, nobody calls it
    assert breaker == "open"


async def test_a_saturated_provider_is_skipped_rather_than_waited_for(
    quick_services: Services, tmp_path: Path
) -> None:
    await store_user(quick_services, EMAIL_ONLY)
    async with stub_server() as sendgrid, stub_server() as smtp:
        reg = guarded(
            registry(tmp_path / "outbox", sendgrid=sendgrid, smtp=smtp),
            rate_limit={"rate": 1, "per": "1h", "burst": 1},
        )
        seen = await deliver_in_turn(quick_services, reg, 2)
    assert seen == [[("sendgrid", "delivered")], [("sendgrid", "skipped"), ("smtp", "delivered")]]
    assert (len(sendgrid.requests), len(smtp.requests)) == (1, 1)


async def guard_state(services: Services, reg: ProviderRegistry) -> str:
    from gateway.providers.guard import ProviderGuard

    state = await ProviderGuard(services.redis, services.keys, reg.specs).state("sendgrid")
    return str(state.state)


async def test_a_provider_only_gets_devices_of_its_platforms(
    quick_services: Services, tmp_path: Path
) -> None:
    """`platforms` in providers.yaml: an Android-only provider is skipped for an iOS device,
    and every device is sent to at once (fan-out)."""
    devices = [
        {"platform": "ios", "token": "ios-token-0001"},
        {"platform": "android", "token": "and-token-0002"},
    ]
    await store_user(quick_services, {**EMAIL_ONLY, "contacts": {"devices": devices}})
    async with stub_server() as fcm:
        base = registry(tmp_path / "outbox", fcm=fcm)
        specs = {
            "fcm": ProviderSpec.parse(
                "fcm", {"channel": "push", "adapter": "webhook", "cost": 0, "platforms": ["android"]}, {}
            )
        }
        token = await admin_key(quick_services)
        async with (
            running_worker(quick_services, registry=ProviderRegistry(base.adapters, base.profile, specs)),
            client(quick_services, token) as http,
        ):
            response = await http.post("/v1/intents", json=shipped(1))
            notification_id = response.json()["notification_id"]
            await eventually(lambda: _settled(quick_services, notification_id, "push", "delivered", "failed"))
        push = (await _status(quick_services, notification_id))["push"]
    # The iPhone: FCM is Android-only here, and the chain's apns is not configured in this registry.
    assert [(a.provider, a.outcome) for a in push.attempts] == [
        ("fcm", "skipped"),
        ("apns", "skipped"),
        ("fcm", "delivered"),
    ]
    assert push.status == "delivered"
    assert [r.json()["to"]["value"] for r in fcm.requests] == ["and-token-0002"]
