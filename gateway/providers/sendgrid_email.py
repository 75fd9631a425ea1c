"""Email through SendGrid's v3 Mail Send API (`POST /v3/mail/send`), with the `sendgrid` SDK.

The SDK builds the request: the body (its `Mail` helpers, `Mail.get()`) and the headers
(`Authorization: Bearer`, its `User-Agent`). Its own HTTP client (python_http_client, on
urllib) is synchronous and opens a connection per request, so the send goes through the
adapters' asynchronous client instead (`gateway.providers.http`: keep-alive, no thread per
send). The body carries `custom_args` with our delivery and notification ids, which
SendGrid echoes in every event-webhook record, so events map back to the delivery.

SendGrid has no idempotency key for Mail Send: a repeat is a second email, so this
adapter is not `idempotent` and the worker does not resend a delivery whose outcome it
does not know.

Outcomes (SendGrid's documented v3 responses; error bodies are
`{"errors": [{"message", "field", "help"}]}`):

| response                                        | result (failure class)                          |
|-------------------------------------------------|-------------------------------------------------|
| 202 Accepted                                    | delivered (message id: `X-Message-Id`)           |
| 400 Bad Request, an error whose `field` is the  | permanent `invalid_address`, address invalid     |
| recipient (`personalizations.N.to.N.email`)     | (address)                                       |
| 400 Bad Request, any other field                | permanent `bad_request` (message)                |
| 401 Unauthorized (API key missing or wrong)     | retryable `unauthorized` (configuration)         |
| 403 Forbidden (key lacks mail.send, sender not  | retryable `forbidden` (configuration)            |
| a verified identity)                            |                                                 |
| 413 Payload Too Large                           | permanent `payload_too_large` (message)          |
| other 4xx (404, 405, 406, 415, 451...)          | permanent `http_<status>` (message)              |
| 429 Too Many Requests                           | retryable `rate_limited` (health), after         |
|                                                 | `Retry-After` if sent, else until                |
|                                                 | `X-RateLimit-Reset` (epoch s)                    |
| 5xx                                             | retryable `http_<status>` (health)               |
| connection refused, DNS, TLS, connect timeout   | retryable `unreachable`, `timeout` (health)      |
| no answer in time once the request was sent; the| retryable `timeout`, `malformed_response`        |
| connection dropped or not HTTP mid-answer       | (health), *ambiguous*: SendGrid may have it      |
| a 400 whose body is not the errors JSON; any    | retryable `malformed_response` (health)          |
| status outside 2xx-5xx                          |                                                 |

A 202 without `X-Message-Id` is still delivered (the id is for tracking, not for success).
Only a 400 needs its body read; other statuses decide by themselves, so a proxy's HTML
error page on a 502 is just a 502.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    CustomArg,
    From,
    Header,
    HtmlContent,
    Mail,
    PlainTextContent,
    Subject,
    To,
)

from gateway.providers.base import (
    MALFORMED,
    AdapterDeps,
    Address,
    Delivered,
    Limits,
    Message,
    Permanent,
    Retryable,
    SendResult,
    retry_after_seconds,
)
from gateway.providers.http import HttpClient, HttpFailure
from gateway.providers.settings import SendGridSettings
from gateway.providers.spec import ProviderSpec
from gateway.redact import Secret, redact

# The error `field` SendGrid names when the recipient's address is what it refused.
RECIPIENT_FIELD = re.compile(r"^personalizations\.\d+\.to\.\d+\.email$|^personalizations\.\d+\.to$")
# Statuses that say our account or key is wrong, not the message: the next provider may do.
CONFIGURATION_STATUSES = {401: "unauthorized", 403: "forbidden"}


def rate_limit_wait(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds until SendGrid takes requests again: `Retry-After` if sent, else `X-RateLimit-Reset`."""
    if headers is None:
        return None
    wait = retry_after_seconds(headers.get("Retry-After"))
    if wait is not None:
        return wait
    reset = headers.get("X-RateLimit-Reset")
    try:
        at = float(reset) if reset else None
    except ValueError:
        return None
    if at is None:
        return None
    return max(0.0, at - (time.time() if now is None else now))


def _errors(body: bytes | str | None) -> list[dict[str, Any]] | None:
    """The `errors` array of an error body, or None when the body is not SendGrid's JSON."""
    try:
        data = json.loads(body or b"")
    except (ValueError, UnicodeDecodeError):
        return None
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list) or not all(isinstance(e, dict) for e in errors):
        return None
    return errors


class SendGridAdapter:
    idempotent = False
    settings = SendGridSettings
    secrets = SendGridSettings.credentials
    limits = Limits()

    def __init__(
        self, name: str, channel: str, *, api_key: Secret, sender: str, base_url: str, timeout: float
    ) -> None:
        self.name = name
        self.channel = channel
        self.sender = sender
        self.timeout = timeout
        self.url = f"{base_url.rstrip('/')}/v3/mail/send"
        # The SDK's own request headers (auth, its user agent), built once.
        sdk = SendGridAPIClient(api_key=api_key.reveal(), host=base_url.rstrip("/"))
        self.headers = {**sdk.client.request_headers, "Content-Type": "application/json"}
        self.client = HttpClient(timeout=timeout)

    @classmethod
    def from_spec(cls, spec: ProviderSpec, deps: AdapterDeps) -> SendGridAdapter:
        settings = spec.typed(SendGridSettings)
        return cls(
            spec.name,
            spec.channel,
            api_key=spec.credential("api_key"),
            sender=settings.sender,
            base_url=settings.base_url,
            timeout=spec.timeout,
        )

    def mail(self, message: Message, address: Address) -> dict[str, Any]:
        """The v3 Mail Send body, built with the SDK's helpers."""
        fields = message.fields
        text = fields.get("text") or fields.get("body")
        html = fields.get("html")
        mail = Mail(
            from_email=From(self.sender),
            to_emails=To(address.value),
            subject=Subject(str(fields.get("subject") or fields.get("title") or "")),
            plain_text_content=PlainTextContent(str(text)) if text else None,
            html_content=HtmlContent(str(html)) if html else None,
        )
        for key, value in message.headers.items():
            mail.add_header(Header(key, value))
        mail.add_custom_arg(CustomArg("delivery_id", message.delivery_id))
        mail.add_custom_arg(CustomArg("notification_id", message.notification_id))
        body: dict[str, Any] = mail.get()
        return body

    async def send(self, message: Message, address: Address, *, idempotency_key: str) -> SendResult:
        body = msgspec.json.encode(self.mail(message, address))
        try:
            answer = await self.client.post(self.url, body, self.headers)
        except HttpFailure as failure:
            # No idempotency key: a request that went out may have been taken.
            return failure.retryable(self.name, ambiguous=True)
        if 200 <= answer.status < 300:
            return Delivered(provider_message_id=answer.headers.get("X-Message-Id"))
        return self._refused(answer.status, answer.body, answer.headers, address)

    def _refused(
        self, status: int, body: bytes | None, headers: Mapping[str, str] | None, address: Address
    ) -> SendResult:
        if status == 429:
            return Retryable(
                f"{self.name}: rate limited (HTTP 429)", rate_limit_wait(headers), "rate_limited"
            )
        if 500 <= status < 600:
            return Retryable(f"{self.name}: SendGrid failed (HTTP {status})", code=f"http_{status}")
        if status == 400:
            errors = _errors(body)
            if errors is None:
                return Retryable(f"{self.name}: HTTP 400 without SendGrid's errors body", code=MALFORMED)
            said = self._said(errors, address)
            if any(RECIPIENT_FIELD.match(str(e.get("field") or "")) for e in errors):
                return Permanent(
                    "invalid_address", f"{self.name}: the recipient was refused: {said}", address_invalid=True
                )
            return Permanent("bad_request", f"{self.name}: the request was refused: {said}")
        if status in CONFIGURATION_STATUSES:
            return Retryable(
                f"{self.name}: HTTP {status}: {self._said(_errors(body) or [], address)} (check "
                "SENDGRID_API_KEY, its mail.send scope and the sender's verified identity)",
                code=CONFIGURATION_STATUSES[status],
                failure="configuration",
            )
        if status == 413:
            return Permanent("payload_too_large", f"{self.name}: HTTP 413: the message is too large")
        if 400 <= status < 500:
            return Permanent(f"http_{status}", f"{self.name}: refused with HTTP {status}")
        return Retryable(f"{self.name}: unexpected HTTP {status}", code=MALFORMED)

    def _said(self, errors: list[dict[str, Any]], address: Address) -> str:
        """SendGrid's messages, for a person to act on, with the recipient's address masked."""
        said = "; ".join(
            f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
            for e in errors
        )
        return said.replace(address.value, redact(address.kind, address.value))[:500] or "no details"

    async def close(self) -> None:
        await self.client.close()
