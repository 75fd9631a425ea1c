"""Email through SendGrid's v3 Mail Send API (`POST /v3/mail/send`), with the `sendgrid` SDK.

The SDK's HTTP client (python_http_client, on urllib) is synchronous: each send runs in
a thread. Its request carries `custom_args` with our delivery and notification ids, which
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

import asyncio
import http.client
import json
import logging
import re
import time
import urllib.error
from collections.abc import Mapping
from typing import Any

from python_http_client.exceptions import HTTPError
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
    TIMEOUT,
    UNREACHABLE,
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
from gateway.providers.settings import SendGridSettings
from gateway.providers.spec import ProviderSpec
from gateway.redact import Secret, redact

log = logging.getLogger("gateway.providers.sendgrid")

# The error `field` SendGrid names when the recipient's address is what it refused.
RECIPIENT_FIELD = re.compile(r"^personalizations\.\d+\.to\.\d+\.email$|^personalizations\.\d+\.to$")
# Statuses that say our account or key is wrong, not the message: the next provider may do.
CONFIGURATION_STATUSES = {401: "unauthorized", 403: "forbidden"}


class _OnlyRequestLines(logging.Filter):
    """python_http_client logs every request's body (the recipient) and headers (the API key)
    at DEBUG, and every error body. Keep its method, URL and status lines only."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith(("PAYLOAD", "HEADERS")):
            return False
        method, marker, rest = text.partition(" Response: ")
        if marker:
            record.msg, record.args = f"{method} Response: {rest.partition(' ')[0]}", ()
        return True


_SDK_LOG = logging.getLogger("python_http_client.client")
if not any(isinstance(f, _OnlyRequestLines) for f in _SDK_LOG.filters):
    _SDK_LOG.addFilter(_OnlyRequestLines())


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
        self.client = SendGridAPIClient(api_key=api_key.reveal(), host=base_url.rstrip("/"))

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
        body = self.mail(message, address)
        return await asyncio.to_thread(self._post, body, address)

    def _post(self, body: dict[str, Any], address: Address) -> SendResult:
        try:
            response = self.client.client.mail.send.post(request_body=body, timeout=self.timeout)
        except HTTPError as exc:
            return self._refused(exc.status_code, exc.body, exc.headers, address)
        except TimeoutError:  # reading the answer: the request had gone out
            return Retryable(f"{self.name}: no answer in {self.timeout:g}s", code=TIMEOUT, ambiguous=True)
        except urllib.error.URLError as exc:  # opening the connection: nothing was sent
            if isinstance(exc.reason, TimeoutError):
                return Retryable(f"{self.name}: no answer in {self.timeout:g}s", code=TIMEOUT)
            reason = type(exc.reason).__name__ if isinstance(exc.reason, BaseException) else "URLError"
            return Retryable(f"{self.name}: cannot connect ({reason})", code=UNREACHABLE)
        except http.client.HTTPException as exc:
            return Retryable(
                f"{self.name}: the answer is not HTTP ({type(exc).__name__})", code=MALFORMED, ambiguous=True
            )
        except ConnectionError as exc:  # reset while the answer was awaited
            return Retryable(
                f"{self.name}: the connection broke ({type(exc).__name__})", code=UNREACHABLE, ambiguous=True
            )
        status = response.status_code
        if 200 <= status < 300:
            return Delivered(provider_message_id=response.headers.get("X-Message-Id"))
        return Retryable(f"{self.name}: unexpected HTTP {status}", code=MALFORMED)

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
        return None
