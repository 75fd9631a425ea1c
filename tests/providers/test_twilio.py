"""Twilio's documented error codes beyond the shared table, against the same stub."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace

import pytest

from gateway.providers.base import MALFORMED, AdapterDeps, Delivered, Permanent, Retryable, SendResult
from gateway.providers.spec import ProviderSpec
from gateway.providers.twilio_sms import TwilioAdapter
from tests.providers.conformance import message
from tests.providers.wire_twilio import ACCOUNT_SID, AUTH_TOKEN, WIRE, error, form, message_resource
from tests.stub_http import Reply, stub_server


async def send_once(reply: Reply) -> SendResult:
    """One SMS through the real adapter to a Twilio stand-in that answers `reply`."""
    async with stub_server(lambda r: reply) as server:
        adapter = WIRE.build(server.url, 2.0)
        try:
            return await adapter.send(message("sms"), WIRE.address(), idempotency_key="k")
        finally:
            await adapter.close()


@pytest.mark.parametrize(
    ("reply", "code", "address_invalid"),
    [
        (error(400, 21614, "'To' number +14155550123 is not a valid mobile number"), "not_mobile", True),
        (error(400, 21635, "'To' number cannot be a landline"), "not_mobile", True),
        (error(400, 21610, "Attempt to send to unsubscribed recipient"), "unsubscribed", True),
        (error(400, 21612, "The 'To' phone number is not currently reachable via SMS"), "unroutable", False),
        (error(404, 20404, "The requested resource was not found"), "rejected", False),
        (Reply(400, "<html>bad</html>"), "rejected", False),
    ],
)
async def test_permanent_codes(
    reply: Reply, code: str, address_invalid: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = await send_once(reply)
    assert isinstance(result, Permanent), result
    assert result.code == code and result.address_invalid is address_invalid
    assert "+1415" not in result.error
    assert (
        ACCOUNT_SID not in caplog.text and AUTH_TOKEN not in caplog.text and "+14155550123" not in caplog.text
    )


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (error(401, 20003, "Authenticate"), "auth_failed"),
        (Reply(401, "Unauthorized"), "auth_failed"),
        (
            error(400, 21408, "Permission to send an SMS has not been enabled for the region"),
            "region_disabled",
        ),
        (
            error(400, 21606, "The From phone number is not a valid, SMS-capable inbound phone number"),
            "invalid_sender",
        ),
        (
            error(400, 21608, "The number is unverified. Trial accounts cannot send messages"),
            "unverified_recipient",
        ),
    ],
)
async def test_configuration_errors_move_to_the_next_provider(reply: Reply, code: str) -> None:
    """Our account's fault, not the address's: retryable, so the chain moves on (issue 13)."""
    result = await send_once(reply)
    assert isinstance(result, Retryable), result
    assert (result.code, result.failure, result.ambiguous) == (code, "configuration", False)
    assert AUTH_TOKEN not in result.error and "+1415" not in result.error


@pytest.mark.parametrize(
    ("reply", "code", "retry_after"),
    [
        (error(429, 20429, "Too Many Requests"), "rate_limited", None),
        (error(429, 20429, "Too Many Requests", {"Retry-After": "3"}), "rate_limited", 3.0),
        (error(500, 20500, "Internal Server Error"), "http_500", None),
        (Reply(502, "bad gateway"), "http_502", None),
        (Reply(201, {"status": "queued"}), MALFORMED, None),
        (Reply(201, [1, 2]), MALFORMED, None),
        (Reply(raw=b"HTTP/1.1 OK-ish\r\n\r\nnot http"), MALFORMED, None),
        (Reply(hang_up=True), MALFORMED, None),
    ],
)
async def test_retryable(reply: Reply, code: str, retry_after: float | None) -> None:
    result = await send_once(reply)
    assert isinstance(result, Retryable), result
    assert result.code == code
    assert result.retry_after == retry_after


async def test_status_callback_and_text_fallback_and_reuse() -> None:
    async with stub_server(lambda r: Reply(201, message_resource(r))) as server:
        spec = ProviderSpec.parse(
            "twilio",
            {
                "channel": "sms",
                "adapter": "twilio",
                "cost": 0,
                "timeout": "2s",
                "credentials": {"account_sid": "S", "auth_token": "T"},
                "settings": {
                    "from": "+15005550006",
                    "base_url": server.url + "/",
                    "status_callback": "https://gw.example.com/twilio/status",
                },
            },
            {"S": ACCOUNT_SID, "T": AUTH_TOKEN},
        )
        adapter = TwilioAdapter.from_spec(spec, AdapterDeps())
        msg = message("sms")
        text_only = replace(msg, fields={k: v for k, v in msg.fields.items() if k != "body"})
        try:
            first = await adapter.send(text_only, WIRE.address(), idempotency_key="k")
            second = await adapter.send(msg, WIRE.address(), idempotency_key="k")  # same session, reused
        finally:
            await adapter.close()
    assert isinstance(first, Delivered) and isinstance(second, Delivered)
    assert first.provider_message_id and first.provider_message_id.startswith("SM")
    assert len(first.provider_message_id) == 34
    sent = [form(r) for r in server.requests]
    assert sent[0]["Body"] == msg.fields["text"]
    assert sent[0]["StatusCallback"] == "https://gw.example.com/twilio/status"
    assert sent[1]["Body"] == msg.fields["body"]


async def test_the_status_callback_defaults_to_our_tracking_route_under_the_public_url() -> None:
    async with stub_server(lambda r: Reply(201, message_resource(r))) as server:
        raw = {
            "channel": "sms",
            "adapter": "twilio",
            "cost": 0,
            "credentials": {"account_sid": "S", "auth_token": "T"},
            "settings": {"from": "+15005550006", "base_url": server.url},
        }
        environ = {"S": ACCOUNT_SID, "T": AUTH_TOKEN}
        public = TwilioAdapter.from_spec(
            ProviderSpec.parse("twilio", raw, {**environ, "NOTIGATE_PUBLIC_URL": "https://gw.example.com/"}),
            AdapterDeps(),
        )
        private = TwilioAdapter.from_spec(ProviderSpec.parse("twilio", raw, environ), AdapterDeps())
        try:
            for adapter in (public, private):
                assert isinstance(
                    await adapter.send(message("sms"), WIRE.address(), idempotency_key="k"), Delivered
                )
        finally:
            await public.close()
            await private.close()
    sent = [form(r) for r in server.requests]
    assert sent[0]["StatusCallback"] == "https://gw.example.com/v1/webhooks/twilio/status"
    assert "StatusCallback" not in sent[1]  # no public URL: Twilio could not reach a local one


@pytest.mark.parametrize(("left", "validity"), [(600, {"599", "600"}), (86_400, {"36000"}), (None, {None})])
async def test_the_tier_expiry_becomes_the_validity_period(
    left: int | None, validity: set[str | None]
) -> None:
    """Twilio drops a message still queued after ValidityPeriod (1..36000 s): an OTP whose
    10 minutes ran out in a carrier queue is not sent late."""
    expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=left) if left is not None else None
    async with stub_server(lambda r: Reply(201, message_resource(r))) as server:
        adapter = WIRE.build(server.url, 2.0)
        try:
            msg = replace(message("sms"), expires_at=expires_at)
            result = await adapter.send(msg, WIRE.address(), idempotency_key="k")
        finally:
            await adapter.close()
    assert isinstance(result, Delivered)
    assert form(server.requests[0]).get("ValidityPeriod") in validity
