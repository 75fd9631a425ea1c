"""FCM beyond the shared table: its error codes, message shape, credentials and SDK behaviour.

The same wire as the conformance harness (tests/providers/wire_fcm.py): firebase-admin
against the local stub, answering like Google.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.providers.base import (
    MALFORMED,
    TIMEOUT,
    UNREACHABLE,
    AdapterDeps,
    Address,
    Delivered,
    Permanent,
    Retryable,
    SendResult,
)
from gateway.providers.fcm_push import FcmAdapter
from tests.providers.conformance import message
from tests.providers.wire_fcm import (
    ACCESS_TOKEN,
    BAD_REQUEST_TYPE,
    KEY_LINE,
    PRIVATE_KEY,
    SEND_PATH,
    TOKEN_PATH,
    VALID_TOKEN,
    delivered,
    google_error,
    service_account,
    spec,
    token_reply,
)
from tests.stub_http import Reply, Request, StubServer, stub_server

DEVICE = Address("device", VALID_TOKEN, "android")
FID = "dGhpcy1pcy1hLWZpZC0x_Q"  # 22 characters of base64url, first one in c-f


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answering(send: Callable[[Request], Reply]) -> Callable[[Request], Reply]:
    """The stub's script: Google's token endpoint, and `send` for messages:send."""

    def script(request: Request) -> Reply:
        return token_reply(request) if request.path == TOKEN_PATH else send(request)

    return script


def sends(server: StubServer) -> list[Request]:
    return [r for r in server.requests if r.path == SEND_PATH]


async def send_once(
    send: Callable[[Request], Reply],
    address: Address = DEVICE,
    priority: str = "normal",
    *,
    expires_at: dt.datetime | None = None,
    collapse_key: str | None = None,
    **fields: object,
) -> tuple[SendResult, StubServer]:
    async with stub_server(answering(send)) as server:
        adapter = FcmAdapter.from_spec(spec(server.url, 2.0), AdapterDeps())
        msg = message("push")
        msg = dataclasses.replace(
            msg,
            fields={**msg.fields, **fields},
            priority=priority,
            expires_at=expires_at,
            collapse_key=collapse_key,
        )
        try:
            result = await adapter.send(msg, address, idempotency_key=msg.delivery_id)
        finally:
            await adapter.close()
    return result, server


# --- FCM's error codes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "code", "address_invalid"),
    [
        pytest.param(
            google_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
            ),
            "invalid_token",
            True,
            id="invalid-token-by-message",
        ),
        pytest.param(
            google_error(
                400,
                "INVALID_ARGUMENT",
                "Request contains an invalid argument.",
                "INVALID_ARGUMENT",
                details=[
                    {
                        "@type": BAD_REQUEST_TYPE,
                        "fieldViolations": [
                            {"field": "message.token", "description": "Invalid registration"}
                        ],
                    }
                ],
            ),
            "invalid_token",
            True,
            id="invalid-token-by-field",
        ),
        pytest.param(
            google_error(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'message.data[0].key' (TYPE_STRING), \"google.key\"",
                "INVALID_ARGUMENT",
                details=[
                    {
                        "@type": BAD_REQUEST_TYPE,
                        "fieldViolations": [
                            {"field": "message.data[0].key", "description": "Invalid value (TYPE_STRING)"}
                        ],
                    }
                ],
            ),
            "invalid_argument",
            False,
            id="invalid-payload",
        ),
        pytest.param(
            google_error(
                400, "INVALID_ARGUMENT", "Request contains an invalid argument.", "INVALID_ARGUMENT"
            ),
            "invalid_argument",
            False,
            id="invalid-unspecified",
        ),
        pytest.param(
            google_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"),
            "sender_id_mismatch",
            True,
            id="sender-id-mismatch",
        ),
    ],
)
async def test_permanent_answers(reply: Reply, code: str, address_invalid: bool) -> None:
    result, server = await send_once(lambda r: reply)
    assert isinstance(result, Permanent), result
    assert (result.code, result.address_invalid) == (code, address_invalid), result
    assert VALID_TOKEN not in result.error
    assert len(sends(server)) == 1


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        pytest.param(
            google_error(
                401,
                "UNAUTHENTICATED",
                "Auth error from APNS or Web Push Service",
                "THIRD_PARTY_AUTH_ERROR",
            ),
            "third_party_auth",
            id="third-party-auth",
        ),
        pytest.param(
            google_error(403, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied"),
            "permission_denied",
            id="permission-denied",
        ),
        pytest.param(
            google_error(404, "NOT_FOUND", "Requested entity was not found."),
            "not_found",
            id="project-not-found",
        ),
    ],
)
async def test_configuration_answers_move_to_the_next_provider(reply: Reply, code: str) -> None:
    result, server = await send_once(lambda r: reply)
    assert isinstance(result, Retryable), result
    assert (result.code, result.failure, result.ambiguous) == (code, "configuration", False), result
    assert VALID_TOKEN not in result.error
    # One send each: the SDK's refresh-and-resend on 401 is not in our client.
    assert len(sends(server)) == 1


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (
            google_error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"),
            "unavailable",
        ),
        (google_error(500, "INTERNAL", "Internal error encountered.", "INTERNAL"), "internal"),
        (Reply(502, "<html>Bad Gateway</html>", headers={"content-type": "text/html"}), "http_502"),
    ],
    ids=["unavailable", "internal", "bad-gateway"],
)
async def test_server_errors_are_retryable_and_sent_once(reply: Reply, code: str) -> None:
    """The SDK alone would send 5 times over 7 s: the pipeline retries and fails over itself."""
    started = time.monotonic()
    result, server = await send_once(lambda r: reply)
    assert isinstance(result, Retryable) and result.code == code, result
    assert len(sends(server)) == 1
    assert time.monotonic() - started < 2


async def test_quota_exceeded_carries_retry_after() -> None:
    reply = google_error(
        429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED", **{"retry-after": "30"}
    )
    result, _ = await send_once(lambda r: reply)
    assert isinstance(result, Retryable) and result.code == "quota_exceeded" and result.retry_after == 30


async def test_a_200_without_name_is_malformed() -> None:
    result, _ = await send_once(lambda r: Reply(200, {"id": "0:123"}))
    assert isinstance(result, Retryable) and result.code == MALFORMED, result


async def test_a_200_that_is_not_an_object_is_malformed() -> None:
    result, _ = await send_once(lambda r: Reply(200, ["projects/p/messages/1"]))
    assert isinstance(result, Retryable) and result.code == MALFORMED, result


async def test_a_refused_access_token_is_fetched_again() -> None:
    """401 UNAUTHENTICATED (no FcmError): our token was revoked early; the next send refreshes."""
    async with stub_server() as server:
        replies = iter(
            [google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")]
        )
        server.script = answering(lambda r: next(replies, None) or delivered(r))
        adapter = FcmAdapter.from_spec(spec(server.url, 2.0), AdapterDeps())
        try:
            first = await adapter.send(message("push"), DEVICE, idempotency_key="d1")
            second = await adapter.send(message("push"), DEVICE, idempotency_key="d2")
        finally:
            await adapter.close()
    assert isinstance(first, Retryable) and first.code == "auth_rejected", first
    assert isinstance(second, Delivered), second
    assert [r.path for r in server.requests] == [TOKEN_PATH, SEND_PATH, TOKEN_PATH, SEND_PATH]


# --- the token endpoint -----------------------------------------------------------------------


async def test_a_refused_service_account_is_permanent_and_names_the_variable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    def script(request: Request) -> Reply:
        if request.path == TOKEN_PATH:
            return Reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        return delivered(request)

    async with stub_server(script) as server:
        adapter = FcmAdapter.from_spec(spec(server.url, 2.0), AdapterDeps())
        try:
            result = await adapter.send(message("push"), DEVICE, idempotency_key="d1")
        finally:
            await adapter.close()
    assert isinstance(result, Retryable) and (result.code, result.failure) == ("auth", "configuration"), (
        result
    )
    assert "FCM_SERVICE_ACCOUNT" in result.error
    assert not sends(server)
    for secret in (PRIVATE_KEY, KEY_LINE, VALID_TOKEN):
        assert secret not in result.error and secret not in caplog.text


async def test_token_endpoint_unavailable_is_retryable() -> None:
    def script(request: Request) -> Reply:
        if request.path == TOKEN_PATH:
            return Reply(503, {"error": "temporarily_unavailable"})
        return delivered(request)

    async with stub_server(script) as server:
        adapter = FcmAdapter.from_spec(spec(server.url, 0.5), AdapterDeps())
        try:
            result = await adapter.send(message("push"), DEVICE, idempotency_key="d1")
        finally:
            await adapter.close()
    assert isinstance(result, Retryable) and result.code == "auth_unavailable", result


async def test_fcm_refused_while_the_token_endpoint_answers() -> None:
    async with stub_server(answering(delivered)) as server:
        dead = f"http://127.0.0.1:{_free_port()}"
        adapter = FcmAdapter.from_spec(spec(dead, 0.5, token_uri=server.url + TOKEN_PATH), AdapterDeps())
        try:
            result = await adapter.send(message("push"), DEVICE, idempotency_key="d1")
        finally:
            await adapter.close()
    assert isinstance(result, Retryable) and result.code == UNREACHABLE, result


async def test_token_endpoint_too_slow_is_a_timeout() -> None:
    def script(request: Request) -> Reply:
        reply = token_reply(request) if request.path == TOKEN_PATH else delivered(request)
        if request.path == TOKEN_PATH:
            reply.delay = 1.0
        return reply

    async with stub_server(script) as server:
        adapter = FcmAdapter.from_spec(spec(server.url, 0.3), AdapterDeps())
        try:
            result = await adapter.send(message("push"), DEVICE, idempotency_key="d1")
        finally:
            await adapter.close()
    assert isinstance(result, Retryable) and result.code == TIMEOUT, result


async def test_one_token_serves_many_sends_and_adapters_coexist() -> None:
    async with stub_server(answering(delivered)) as server:
        first = FcmAdapter.from_spec(spec(server.url, 2.0), AdapterDeps())
        second = FcmAdapter.from_spec(spec(server.url, 2.0), AdapterDeps())
        try:
            for adapter in (first, second, first, second):
                result = await adapter.send(message("push"), DEVICE, idempotency_key="d1")
                assert isinstance(result, Delivered), result
        finally:
            await first.close()
            await second.close()
            await first.close()  # closing twice is harmless
    assert [r.path for r in server.requests].count(TOKEN_PATH) == 2  # one per adapter


# --- credentials ------------------------------------------------------------------------------


async def test_service_account_from_a_file(tmp_path: Path) -> None:
    async with stub_server(answering(delivered)) as server:
        key_file = tmp_path / "firebase-sa.json"
        key_file.write_text(json.dumps(service_account(server.url + TOKEN_PATH)))
        adapter = FcmAdapter.from_spec(spec(server.url, 2.0, account=str(key_file)), AdapterDeps())
        try:
            result = await adapter.send(message("push"), DEVICE, idempotency_key="d1")
        finally:
            await adapter.close()
    assert isinstance(result, Delivered), result


@pytest.mark.parametrize(
    ("account", "says"),
    [
        ("/nonexistent/firebase-sa.json", "neither service-account JSON"),
        ('{"type": "service_account", "private_key": ', "not valid JSON"),
        (
            json.dumps(service_account("http://x/token", private_key="-----BEGIN PRIVATE KEY-----\nnope")),
            "usable",
        ),
    ],
    ids=["missing-file", "broken-json", "bad-key"],
)
def test_bad_service_accounts_name_the_variable_not_the_value(account: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        FcmAdapter.from_spec(spec("http://127.0.0.1:9", 1.0, account=account), AdapterDeps())
    text = str(caught.value)
    assert "FCM_SERVICE_ACCOUNT" in text and says in text
    assert "PRIVATE KEY" not in text and "nonexistent" not in text


# --- the message ------------------------------------------------------------------------------


async def test_an_installation_id_is_sent_as_fid() -> None:
    result, server = await send_once(delivered, Address("device", FID, "ios"))
    assert isinstance(result, Delivered), result
    sent = sends(server)[0].json()["message"]
    assert sent["fid"] == FID and "token" not in sent


async def test_message_shape_urgent_and_data_as_strings() -> None:
    result, server = await send_once(
        delivered, priority="urgent", data={"order_id": "A-1001", "items": 3, "gift": True, "meta": {"a": 1}}
    )
    assert isinstance(result, Delivered)
    assert result.provider_message_id and result.provider_message_id.startswith("projects/")
    sent = sends(server)[0]
    body = sent.json()["message"]
    assert body["data"] == {
        "order_id": "A-1001",
        "items": "3",
        "gift": "true",
        "meta": '{"a": 1}',
        "notigate_delivery_id": "dlv_conformance_1",
        "notigate_notification_id": "ntf_conformance",
    }
    assert body["android"] == {"priority": "high"}
    assert body["apns"] == {"headers": {"apns-priority": "10"}}
    assert sent.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"


async def test_the_tier_expiry_and_collapse_key_reach_every_platform() -> None:
    """An OTP's 10 minutes reach the device's platform: FCM would otherwise keep it 4 weeks."""
    expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    _, server = await send_once(delivered, expires_at=expires_at, collapse_key="d_01OTP")
    body = sends(server)[0].json()["message"]
    android, apns, webpush = body["android"], body["apns"]["headers"], body["webpush"]["headers"]
    assert android["collapse_key"] == "d_01OTP" and "priority" not in android
    assert android["ttl"] in ("599s", "600s")  # FCM's Duration: whole seconds left, rounded up
    assert apns == {"apns-expiration": str(int(expires_at.timestamp()) + 1), "apns-collapse-id": "d_01OTP"}
    assert webpush["TTL"] == android["ttl"].removesuffix("s") and webpush["Topic"] == "d_01OTP"


async def test_a_normal_message_keeps_fcm_defaults() -> None:
    _, server = await send_once(delivered)
    body = sends(server)[0].json()["message"]
    assert "android" not in body and "apns" not in body


async def test_a_stale_token_is_used_when_its_refresh_fails() -> None:
    """Minutes before expiry the token still works: a token endpoint outage must not stop sends."""
    token_answers = iter([token_reply])

    def script(request: Request) -> Reply:
        if request.path == TOKEN_PATH:
            return next(token_answers, lambda r: Reply(200, {}, delay=1.0))(request)  # then too slow
        return delivered(request)

    async with stub_server(script) as server:
        adapter = FcmAdapter.from_spec(spec(server.url, 0.5), AdapterDeps())
        try:
            first = await adapter.send(message("push"), DEVICE, idempotency_key="d1")
            soon = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=1)
            adapter.credential.expiry = soon  # stale: inside google-auth's refresh threshold
            second = await adapter.send(message("push"), DEVICE, idempotency_key="d2")
            adapter.credential.expiry = soon - dt.timedelta(minutes=2)  # expired: cannot be used
            third = await adapter.send(message("push"), DEVICE, idempotency_key="d3")
        finally:
            await adapter.close()
    assert isinstance(first, Delivered) and isinstance(second, Delivered), (first, second)
    assert isinstance(third, Retryable) and third.code == TIMEOUT, third
    assert len(sends(server)) == 2
