"""SendGrid's rows of the error table that the shared harness does not reach."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from gateway.providers.base import MALFORMED, Delivered, Message, Permanent, Retryable, SendResult
from gateway.providers.sendgrid_email import rate_limit_wait
from tests.providers.conformance import message
from tests.providers.wire_sendgrid import API_KEY, WIRE, errors
from tests.stub_http import Reply, Request, stub_server


async def _send(reply: Reply, msg: Message | None = None) -> tuple[SendResult, list[Request]]:
    msg = msg or message("email")
    async with stub_server(lambda request: reply) as server:
        adapter = WIRE.build(server.url, 2.0)
        try:
            result = await adapter.send(msg, WIRE.address(), idempotency_key="dlv_1")
        finally:
            await adapter.close()
    return result, server.requests


@pytest.mark.parametrize(("status", "code"), [(413, "payload_too_large"), (404, "http_404")])
async def test_refusals_of_the_message(status: int, code: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    result, _ = await _send(Reply(status, errors((None, "The request is not acceptable"))))
    assert isinstance(result, Permanent)
    assert (result.code, result.address_invalid, result.failure) == (code, False, "message")
    assert API_KEY not in result.error and API_KEY not in caplog.text


@pytest.mark.parametrize(("status", "code"), [(401, "unauthorized"), (403, "forbidden")])
async def test_a_refused_key_is_a_configuration_failure(
    status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A rotated key is ours to fix, and SMTP may still work: retryable, class configuration."""
    caplog.set_level(logging.DEBUG)
    result, _ = await _send(Reply(status, errors((None, "The provided authorization grant is invalid"))))
    assert isinstance(result, Retryable)
    assert (result.code, result.failure, result.ambiguous) == (code, "configuration", False)
    assert "SENDGRID_API_KEY" in result.error
    assert API_KEY not in result.error and API_KEY not in caplog.text


async def test_a_400_about_another_field_is_a_bad_request_quoting_sendgrid() -> None:
    said = "The from address does not match a verified Sender Identity."
    result, _ = await _send(Reply(400, errors(("from", said))))
    assert isinstance(result, Permanent) and (result.code, result.address_invalid) == ("bad_request", False)
    assert said in result.error


async def test_a_recipient_quoted_in_an_error_is_masked() -> None:
    result, _ = await _send(
        Reply(400, errors(("personalizations.0.to.0.email", f"{WIRE.address().value} is not valid")))
    )
    assert isinstance(result, Permanent) and result.address_invalid
    assert WIRE.address().value not in result.error and "a***@example.com" in result.error


async def test_retry_after_wins_over_the_rate_limit_reset() -> None:
    result, _ = await _send(Reply(429, errors((None, "too many requests")), headers={"retry-after": "3"}))
    assert isinstance(result, Retryable) and result.code == "rate_limited" and result.retry_after == 3.0


def test_rate_limit_reset_is_a_unix_time() -> None:
    assert rate_limit_wait({"X-RateLimit-Reset": "1000"}, now=990.5) == 9.5
    assert rate_limit_wait({"X-RateLimit-Reset": "900"}, now=990.5) == 0.0
    assert rate_limit_wait({"X-RateLimit-Reset": "soon"}, now=0) is None
    assert rate_limit_wait({}, now=0) is None


async def test_a_5xx_page_from_a_proxy_is_just_a_5xx() -> None:
    result, _ = await _send(Reply(502, "<html>Bad Gateway</html>", headers={"content-type": "text/html"}))
    assert isinstance(result, Retryable) and result.code == "http_502"


async def test_an_answer_that_is_not_http_is_malformed() -> None:
    result, _ = await _send(Reply(raw=b"SMTP? 220 hello\r\n\r\n"))
    assert isinstance(result, Retryable) and result.code == MALFORMED


async def test_accepted_without_a_message_id_is_still_delivered() -> None:
    result, _ = await _send(Reply(202))
    assert result == Delivered(provider_message_id=None)


async def test_template_headers_go_in_the_body() -> None:
    msg = dataclasses.replace(
        message("email"), headers={"List-Unsubscribe": "<https://notigate.example/u/1>"}
    )
    result, requests = await _send(Reply(202, headers={"x-message-id": "m1"}), msg)
    assert isinstance(result, Delivered)
    (request,) = requests
    assert request.json()["headers"] == {"List-Unsubscribe": "<https://notigate.example/u/1>"}


async def test_each_send_carries_our_ids_and_the_one_click_headers() -> None:
    """SendGrid echoes `custom_args` in every event webhook record: how events find the delivery."""
    headers = {
        "List-Unsubscribe": "<https://notify.example.com/v1/unsubscribe/us_abc.def>, <mailto:u@n.example>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    msg = dataclasses.replace(message("email"), headers=headers)
    result, requests = await _send(Reply(202, headers={"x-message-id": "m1"}), msg)
    assert result == Delivered(provider_message_id="m1")
    (request,) = requests
    body = request.json()
    assert body["custom_args"] == {"delivery_id": msg.delivery_id, "notification_id": msg.notification_id}
    assert body["headers"] == headers
