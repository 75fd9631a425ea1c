"""APNs beyond the shared table, against the HTTP/2 stand-in: provider-token renewal, Apple's
documented reasons, and the `apns-*` headers a message turns into."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import jwt
import pytest

from gateway.errors import ConfigError
from gateway.providers.apns_push import ApnsAdapter
from gateway.providers.base import AdapterDeps, Delivered, Permanent, Retryable, SendResult
from gateway.providers.spec import ProviderSpec
from tests.providers.conformance import message
from tests.providers.wire_apns import ENVIRON, WIRE, accepted, raw_spec, refused
from tests.stub_h2 import H2StubServer, h2_stub_server
from tests.stub_http import Reply, Request, Script


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def adapter_for(server: H2StubServer, clock: Clock | None = None) -> ApnsAdapter:
    adapter = ApnsAdapter.from_spec(
        ProviderSpec.parse("apns", raw_spec(server.url, 2.0), ENVIRON), AdapterDeps()
    )
    if clock is not None:
        adapter.clock = clock
    return adapter


async def send_through(
    script: Script, msg_fields: dict[str, object] | None = None
) -> tuple[SendResult, list[Request]]:
    msg = message("push")
    if msg_fields is not None:
        msg = replace(msg, fields=msg_fields)
    async with h2_stub_server(script) as server:
        adapter = adapter_for(server)
        try:
            result = await adapter.send(msg, WIRE.address(), idempotency_key=msg.delivery_id)
        finally:
            await adapter.close()
    return result, server.requests


def bearer(request: Request) -> str:
    return request.headers["authorization"].removeprefix("bearer ")


async def test_an_expired_provider_token_is_renewed_and_the_push_sent_once_more() -> None:
    seen: list[str] = []

    def apns(request: Request) -> Reply:
        seen.append(bearer(request))
        return refused(403, "ExpiredProviderToken") if len(seen) == 1 else accepted(request)

    result, requests = await send_through(apns)
    assert isinstance(result, Delivered), result
    assert len(requests) == 2 and seen[0] != seen[1]


async def test_a_token_apns_keeps_refusing_as_expired_is_retryable_after_one_renewal() -> None:
    result, requests = await send_through(lambda r: refused(403, "ExpiredProviderToken"))
    assert isinstance(result, Retryable) and result.code == "provider_token_expired"
    assert len(requests) == 2  # one renewal, not a loop


async def test_the_provider_token_is_reused_for_50_minutes_then_renewed() -> None:
    clock = Clock(1_800_000_000.0)
    msg = message("push")
    async with h2_stub_server(accepted) as server:
        adapter = adapter_for(server, clock)
        try:
            for advance in (0, 49 * 60, 2 * 60):
                clock.now += advance
                sent = await adapter.send(msg, WIRE.address(), idempotency_key=msg.delivery_id)
                assert isinstance(sent, Retryable | Delivered)
        finally:
            await adapter.close()
    tokens = [bearer(r) for r in server.requests]
    assert tokens[0] == tokens[1] != tokens[2]
    claims = [jwt.decode(t, options={"verify_signature": False}) for t in tokens]
    assert [c["iat"] for c in claims] == [1_800_000_000, 1_800_000_000, 1_800_000_000 + 51 * 60]
    assert {jwt.get_unverified_header(t)["kid"] for t in tokens} == {"ABC123DEFG"}


@pytest.mark.parametrize(
    ("status", "reason", "kind", "code", "address_invalid"),
    [
        (410, "Unregistered", Permanent, "unregistered", True),
        (410, "ExpiredToken", Permanent, "unregistered", True),
        (400, "DeviceTokenNotForTopic", Permanent, "token_not_for_topic", True),
        (403, "InvalidProviderToken", Retryable, "auth_failed", None),
        (403, "BadEnvironmentKeyInToken", Retryable, "auth_failed", None),
        (400, "TopicDisallowed", Retryable, "bad_topic", None),
        (413, "PayloadTooLarge", Permanent, "payload_too_large", False),
        (400, "BadExpirationDate", Permanent, "bad_request", False),
        (404, "BadPath", Permanent, "rejected", False),
        (429, "TooManyRequests", Retryable, "rate_limited", None),
        (429, "TooManyProviderTokenUpdates", Retryable, "rate_limited", None),
        (500, "InternalServerError", Retryable, "http_500", None),
        (503, "Shutdown", Retryable, "http_503", None),
        (400, "IdleTimeout", Retryable, "http_400", None),
    ],
)
async def test_apples_documented_reasons(
    status: int, reason: str, kind: type, code: str, address_invalid: bool | None
) -> None:
    result, _ = await send_through(lambda r: refused(status, reason))
    assert isinstance(result, kind) and isinstance(result, Permanent | Retryable), result
    assert result.code == code, result
    if address_invalid is not None:
        assert isinstance(result, Permanent) and result.address_invalid is address_invalid
    if code in ("auth_failed", "bad_topic"):  # ours to fix: the next provider, the breaker open
        assert isinstance(result, Retryable) and result.failure == "configuration"
    assert WIRE.address().value not in (result.error if not isinstance(result, Delivered) else "")


async def test_the_delivery_s_expiry_and_kind_become_apns_headers() -> None:
    msg = message("push")
    soon = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    background = {"data": {"sync": "inbox"}}
    async with h2_stub_server(accepted) as server:
        adapter = adapter_for(server)
        try:
            for variant in (
                replace(msg, expires_at=soon),
                replace(msg, expires_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC), priority="low"),
                replace(msg, fields=background),
            ):
                sent = await adapter.send(variant, WIRE.address(), idempotency_key=variant.delivery_id)
                assert isinstance(sent, Delivered), sent
        finally:
            await adapter.close()
    alert, late, silent = server.requests
    assert alert.headers["apns-expiration"] == str(int(soon.timestamp()))
    assert (alert.headers["apns-push-type"], alert.headers["apns-priority"]) == ("alert", "10")
    assert late.headers["apns-expiration"] == "0"  # past its expiry: now or never
    assert late.headers["apns-priority"] == "5"  # low priority: at a power-friendly time
    assert (silent.headers["apns-push-type"], silent.headers["apns-priority"]) == ("background", "5")
    assert "apns-expiration" not in silent.headers
    assert json.loads(silent.body)["aps"] == {"content-available": 1}
    assert json.loads(silent.body)["sync"] == "inbox"
    assert alert.headers["apns-id"] == late.headers["apns-id"]  # derived from the delivery id
    assert isinstance(sent, Delivered) and sent.provider_message_id == silent.headers["apns-id"]


async def test_a_payload_over_4_kb_is_refused_before_sending() -> None:
    result, requests = await send_through(accepted, {"title": "t", "body": "x" * 5000})
    assert isinstance(result, Permanent) and result.code == "payload_too_large"
    assert requests == []


def test_the_key_and_settings_are_checked_when_the_adapter_is_built() -> None:
    with pytest.raises(ConfigError, match="APNS_AUTH_KEY is not a PEM private key") as bad_key:
        ApnsAdapter.from_spec(
            ProviderSpec.parse("apns", raw_spec("http://x"), {"APNS_AUTH_KEY": "not a key"}), AdapterDeps()
        )
    assert "not a key" not in str(bad_key.value)
    raw = raw_spec("http://x")
    raw["settings"] = {**raw["settings"], "topic": {"env": "APNS_TOPIC"}}
    with pytest.raises(ConfigError, match=r"settings\.topic \(APNS_TOPIC\)"):
        ApnsAdapter.from_spec(ProviderSpec.parse("apns", raw, ENVIRON), AdapterDeps())
