"""Failover, breakers, shared 429 backoff and the ambiguous timeout for push and SMS, through
the real SDK-backed adapters.

Push is the real `FcmAdapter` (firebase-admin, its OAuth token flow included) against local
servers speaking FCM HTTP v1 (`tests/providers/wire_fcm.py`); SMS is the real
`TwilioAdapter` (the twilio SDK over aiohttp) against local servers speaking Twilio's
Messages API (`wire_twilio.py`). Each channel has a second provider of the same kind (a
second Firebase project, a second Twilio account), as a deployment would chain them, so
each scenario is the one `test_provider_failures.py` runs for email: the same table, both
channels. Breakers and pauses live in the run's real Redis.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.policy.compiled import CompiledPolicy
from gateway.providers.base import Adapter, AdapterDeps
from gateway.providers.console import ConsoleAdapter
from gateway.providers.fcm_push import FcmAdapter
from gateway.providers.guard import ProviderGuard
from gateway.providers.registry import ProviderRegistry
from gateway.providers.spec import ProviderSpec
from gateway.providers.twilio_sms import TwilioAdapter
from gateway.redis_server import RedisServer
from gateway.services import Services
from tests.delivery.conftest import quick_bundle, services_for
from tests.delivery.test_pipeline import _settled, _status
from tests.harness import ADA, admin_key, client, eventually, running_worker, store_user
from tests.providers import wire_fcm, wire_twilio
from tests.stub_http import Reply, Request, StubServer, stub_server

TIMEOUT = 0.5  # seconds each adapter waits; a late answer comes after twice this
PAUSE = 40  # seconds a 429 asks for
BACKUPS = """  fcm_backup:
    channel: push
    adapter: fcm
    cost: 0
    credentials: {service_account: FIREBASE_BACKUP_SERVICE_ACCOUNT_JSON}

  twilio_backup:
    channel: sms
    adapter: twilio
    cost: 0.0079
    credentials: {account_sid: TWILIO_BACKUP_ACCOUNT_SID, auth_token: TWILIO_BACKUP_AUTH_TOKEN}
    settings: {from: "+15005550006"}

routes:
"""


def _with_backups(text: str) -> str:
    for old, new in (
        ("routes:\n", BACKUPS),
        ("  sms: [twilio]\n", "  sms: [twilio, twilio_backup]\n"),
        ("  push: [fcm, apns]\n", "  push: [fcm, fcm_backup]\n"),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="session")
def backup_policy(tmp_path_factory: pytest.TempPathFactory) -> CompiledPolicy:
    """The quick bundle with a second FCM project and a second Twilio account in the chains."""
    return quick_bundle(tmp_path_factory.mktemp("backup-bundle"), providers=_with_backups)


@pytest.fixture
async def services(
    sqlite_url: str, redis_server: RedisServer, tmp_path: Path, backup_policy: CompiledPolicy
) -> AsyncIterator[Services]:
    """On SQLite only: what is under test is the providers' side; the email scenarios of
    test_provider_failures.py run the same pipeline on both stores."""
    async with services_for(sqlite_url, redis_server, tmp_path, backup_policy) as opened:
        yield opened


Answer = Callable[[Request], Reply]


@dataclasses.dataclass(frozen=True)
class Kind:
    """One channel's provider kind: how to build it, what its wire says in each scenario."""

    channel: str
    user: dict[str, Any]
    intent: Callable[[int], dict[str, Any]]
    build: Callable[[str, str, dict[str, Any]], tuple[Adapter, ProviderSpec]]  # name, url, entry
    answers: dict[str, Answer]  # delivered, configuration, health, rate_limited

    def script(self, scenario: str) -> Answer:
        answer = self.answers[scenario]
        return lambda r: wire_fcm.token_reply(r) if r.path == wire_fcm.TOKEN_PATH else answer(r)


def _fcm(name: str, url: str, entry: dict[str, Any]) -> tuple[Adapter, ProviderSpec]:
    spec = wire_fcm.spec(url, TIMEOUT, name=name, **entry)
    return FcmAdapter.from_spec(spec, AdapterDeps()), spec


def _twilio(name: str, url: str, entry: dict[str, Any]) -> tuple[Adapter, ProviderSpec]:
    spec = wire_twilio.spec(url, TIMEOUT, name=name, **entry)
    return TwilioAdapter.from_spec(spec, AdapterDeps()), spec


def _late(answer: Answer) -> Answer:
    return lambda r: dataclasses.replace(answer(r), delay=2 * TIMEOUT)


PUSH_ANSWERS: dict[str, Answer] = {
    "delivered": wire_fcm.delivered,
    # The APNs key uploaded to this Firebase project was revoked: our configuration.
    "configuration": lambda r: wire_fcm.google_error(
        401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service", "THIRD_PARTY_AUTH_ERROR"
    ),
    "health": lambda r: wire_fcm.google_error(
        503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"
    ),
    "rate_limited": lambda r: wire_fcm.google_error(
        429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED", **{"retry-after": str(PAUSE)}
    ),
}
PUSH_ANSWERS["late"] = _late(PUSH_ANSWERS["delivered"])
SMS_ANSWERS: dict[str, Answer] = {
    "delivered": lambda r: Reply(201, wire_twilio.message_resource(r)),
    "configuration": lambda r: wire_twilio.error(401, 20003, "Authenticate"),
    "health": lambda r: wire_twilio.error(503, 20503, "Service Unavailable"),
    "rate_limited": lambda r: wire_twilio.error(
        429, 20429, "Too Many Requests", headers={"Retry-After": str(PAUSE)}
    ),
}
SMS_ANSWERS["late"] = _late(SMS_ANSWERS["delivered"])

ANDROID = {"platform": "android", "token": wire_fcm.VALID_TOKEN}


KINDS = {
    "push": Kind(
        "push",
        {**ADA, "contacts": {"email": "ada@example.com", "devices": [ANDROID]}},
        lambda n: {
            "event": "order.shipped",
            "user_id": "u_ada",
            "data": {"order_id": f"A-{n}", "carrier": "UPS"},
        },
        _fcm,
        PUSH_ANSWERS,
    ),
    "sms": Kind(
        "sms",
        {**ADA, "contacts": {"email": "ada@example.com", "phone": "+33612345678"}},
        lambda n: {
            "event": "security.otp",
            "user_id": "u_ada",
            "priority": "urgent",
            "data": {"code": f"{n:06}", "minutes": 10},
        },
        _twilio,
        SMS_ANSWERS,
    ),
}
NAMES = {"push": ("fcm", "fcm_backup"), "sms": ("twilio", "twilio_backup")}


@dataclasses.dataclass
class Pair:
    """A channel's first provider and its backup, each a real adapter on its own wire server."""

    kind: Kind
    first: StubServer
    backup: StubServer
    registry: ProviderRegistry

    @staticmethod
    def sends(stub: StubServer) -> list[Request]:
        return [r for r in stub.requests if r.path != wire_fcm.TOKEN_PATH]


@asynccontextmanager
async def chain(kind: Kind, outbox: Path, first: str, min_calls: int = 20) -> AsyncIterator[Pair]:
    """`first` scripts the first provider's answers; the backup delivers. Email and in-app go
    to the outbox."""
    breaker = {"failure_rate": 0.5, "min_calls": min_calls, "window": "60s", "open_for": "60s"}
    async with stub_server(kind.script(first)) as one, stub_server(kind.script("delivered")) as two:
        names = {
            "sendgrid": "email",
            "smtp": "email",
            "inbox": "in_app",
            "webhook": "webhook",
            "apns": "push",
        }
        names |= {"fcm": "push", "twilio": "sms"}
        adapters: dict[str, Adapter] = {n: ConsoleAdapter(n, c, outbox) for n, c in names.items()}
        specs: dict[str, ProviderSpec] = {}
        for name, stub in zip(NAMES[kind.channel], (one, two), strict=True):
            adapters[name], specs[name] = kind.build(name, stub.url, {"circuit_breaker": breaker})
        registry = ProviderRegistry(adapters, "test", specs)
        try:
            yield Pair(kind, one, two, registry)
        finally:
            await registry.close()


async def deliver(services: Services, pair: Pair, count: int, settled: str = "delivered") -> list[Any]:
    """Accept `count` intents one after the other; each one's delivery on the channel, settled."""
    await store_user(services, pair.kind.user)
    token = await admin_key(services)
    seen = []
    async with running_worker(services, registry=pair.registry), client(services, token) as http:
        for n in range(count):
            response = await http.post("/v1/intents", json=pair.kind.intent(n))
            assert response.status_code == 202, response.text
            notification_id: str = response.json()["notification_id"]
            channel = pair.kind.channel
            await eventually(functools.partial(_settled, services, notification_id, channel, settled))
            seen.append((await _status(services, notification_id))[channel])
    return seen


def tries(delivery: Any) -> list[tuple[str | None, str]]:
    return [(a.provider, a.outcome) for a in delivery.attempts]


async def breaker(services: Services, pair: Pair, name: str) -> str:
    return str((await ProviderGuard(services.redis, services.keys, pair.registry.specs).state(name)).state)


@pytest.mark.parametrize("channel", ["push", "sms"])
async def test_a_configuration_failure_fails_over_and_opens_the_breaker_at_once(
    services: Services, tmp_path: Path, channel: str
) -> None:
    """FCM's THIRD_PARTY_AUTH_ERROR, Twilio's 20003: the backup carries the message, and one
    refusal opens the breaker though min_calls is 20, so the next one never calls it."""
    first, backup = NAMES[channel]
    async with chain(KINDS[channel], tmp_path / "outbox", "configuration") as pair:
        one, two = await deliver(services, pair, 2)
        state = await breaker(services, pair, first)
    assert tries(one) == [(first, "retryable"), (backup, "delivered")]
    assert tries(two) == [(first, "skipped"), (backup, "delivered")]
    assert (one.provider, two.provider) == (backup, backup)
    assert (len(pair.sends(pair.first)), len(pair.sends(pair.backup))) == (1, 2)
    assert state == "open"


@pytest.mark.parametrize("channel", ["push", "sms"])
async def test_health_failures_fail_over_and_open_the_breaker_past_min_calls(
    services: Services, tmp_path: Path, channel: str
) -> None:
    """503s: each fails over to the backup; after two failed calls (min_calls 2) every worker
    skips the first provider."""
    first, backup = NAMES[channel]
    async with chain(KINDS[channel], tmp_path / "outbox", "health", min_calls=2) as pair:
        seen = await deliver(services, pair, 3)
        state = await breaker(services, pair, first)
    assert [tries(d) for d in seen] == [
        [(first, "retryable"), (backup, "delivered")],
        [(first, "retryable"), (backup, "delivered")],
        [(first, "skipped"), (backup, "delivered")],
    ]
    assert "circuit_open" in (seen[2].attempts[0].error or "")
    assert len(pair.sends(pair.first)) == 2 and state == "open"


@pytest.mark.parametrize("channel", ["push", "sms"])
async def test_a_429_pauses_the_provider_for_every_later_delivery(
    services: Services, tmp_path: Path, channel: str
) -> None:
    """Retry-After: 40 pauses the provider in Redis: the next deliveries go straight to the
    backup instead of each earning another 429; a 429 does not open the breaker."""
    first, backup = NAMES[channel]
    async with chain(KINDS[channel], tmp_path / "outbox", "rate_limited") as pair:
        seen = await deliver(services, pair, 3)
        state = await breaker(services, pair, first)
    assert tries(seen[0]) == [(first, "retryable"), (backup, "delivered")]
    assert tries(seen[1]) == tries(seen[2]) == [(first, "skipped"), (backup, "delivered")]
    assert (seen[1].attempts[0].error or "").startswith("paused: free again in 3")
    assert len(pair.sends(pair.first)) == 1 and state == "closed"


@pytest.mark.parametrize("channel", ["push", "sms"])
async def test_a_late_success_is_recorded_unknown_and_not_sent_by_the_backup(
    services: Services, tmp_path: Path, channel: str
) -> None:
    """The provider answers after the adapter's timeout: it may have the message, so the
    backup is not called (that would deliver twice) and the delivery ends `unknown`."""
    first, _ = NAMES[channel]
    async with chain(KINDS[channel], tmp_path / "outbox", "late") as pair:
        (delivery,) = await deliver(services, pair, 1, settled="unknown")
    assert tries(delivery) == [(first, "unknown")]
    assert (delivery.status, delivery.reason, delivery.provider) == ("unknown", "outcome_unknown", first)
    assert len(pair.sends(pair.first)) == 1 and pair.sends(pair.backup) == []
