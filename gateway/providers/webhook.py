"""Signed webhooks over HTTP (`gateway.providers.http`): to a user's own URL, or to a fixed endpoint.

The body is the rendered message as JSON. Each request carries
- `Idempotency-Key: <delivery id>`: a receiver drops repeats (a worker that died after
  sending sends again with the same key), so this adapter is `idempotent`;
- `Notigate-Signature: t=<unix time>,v1=<hex>`: HMAC-SHA256 of `<t>.<body>` with the
  signing secret, so the receiver can check the message is ours and fresh.

Outcomes (HTTP semantics, since webhooks have no provider error codes):

| response                         | result                                             |
|----------------------------------|----------------------------------------------------|
| 2xx                              | delivered (message id: `X-Request-Id` if sent)      |
| 408, 425, 429, 5xx               | retryable, with Retry-After when given             |
| 410 Gone                         | permanent `gone`; the user's URL is marked invalid  |
|                                  | (not when the provider posts to a fixed `url`)      |
| other 4xx                        | permanent `rejected`                               |
| timeout, connection refused      | retryable (`timeout`, `unreachable`)               |
| an answer that is not HTTP       | retryable `malformed_response`                     |
| a user's URL that is not allowed | permanent `unsafe_url`, the URL marked invalid,     |
| (gateway/webhook_urls.py)        | before any connection                              |

A user's URL is checked before each send (scheme, no CR/LF, its host resolving outside
loopback, private and link-local ranges unless `allowed_networks` holds it); a fixed `url`
is the operator's own and is not.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import msgspec

from gateway.errors import ConfigError
from gateway.providers.base import (
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
from gateway.providers.settings import WebhookSettings
from gateway.providers.spec import ProviderSpec
from gateway.redact import Secret
from gateway.webhook_urls import Network, parse_networks, resolved_problem

RETRYABLE_STATUSES = frozenset({408, 425, 429})


def _networks(spec: ProviderSpec, raw: str | None) -> tuple[Network, ...]:
    try:
        return parse_networks(str(raw)) if raw else ()
    except ValueError as exc:
        raise ConfigError(
            f"provider {spec.name!r}: {spec.describe_setting('allowed_networks')}: {exc}"
        ) from None


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


class WebhookAdapter:
    idempotent = True
    settings = WebhookSettings
    secrets = WebhookSettings.credentials
    limits = Limits()

    def __init__(
        self,
        name: str,
        channel: str,
        *,
        signing_secret: Secret,
        url: str | None = None,
        timeout: float = 5.0,
        allowed_networks: tuple[Network, ...] = (),
    ) -> None:
        self.name = name
        self.channel = channel
        self.url = url
        self.signing_secret = signing_secret
        self.allowed_networks = allowed_networks
        self.client = HttpClient(timeout=timeout)

    @classmethod
    def from_spec(cls, spec: ProviderSpec, deps: AdapterDeps) -> WebhookAdapter:
        settings = spec.typed(WebhookSettings)
        return cls(
            spec.name,
            spec.channel,
            signing_secret=spec.credential("signing_secret"),
            url=settings.url,
            timeout=spec.timeout,
            allowed_networks=_networks(spec, settings.allowed_networks),
        )

    async def send(self, message: Message, address: Address, *, idempotency_key: str) -> SendResult:
        target = self.url or address.value
        if not self.url:
            problem = await resolved_problem(target, self.allowed_networks)
            if problem is not None:
                return Permanent("unsafe_url", f"{self.name}: {problem}", address_invalid=True)
        body = msgspec.json.encode(
            {
                "id": message.delivery_id,
                "notification_id": message.notification_id,
                "event": message.event,
                "channel": message.channel,
                "user_id": message.user_id,
                "locale": message.locale,
                "to": {"kind": address.kind, "value": address.value} if self.url else None,
                "message": message.fields,
            }
        )
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "idempotency-key": idempotency_key,
            "notigate-signature": f"t={stamp},v1={sign(self.signing_secret.reveal(), stamp, body)}",
            "user-agent": "notigate-webhook/1",
        }
        try:
            response = await self.client.post(target, body, headers)
        except HttpFailure as failure:
            return failure.retryable(self.name, ambiguous=False)  # receivers drop repeats by key
        status = response.status
        if 200 <= status < 300:
            return Delivered(provider_message_id=response.headers.get("x-request-id"))
        if status in RETRYABLE_STATUSES or status >= 500:
            return Retryable(
                f"{self.name}: HTTP {status}",
                retry_after_seconds(response.headers.get("retry-after")),
                code=f"http_{status}",
            )
        if status == 410:
            # Gone: the user's own URL is retired; a fixed endpoint (settings.url) is ours to fix,
            # not the user's address.
            return Permanent(
                "gone", f"{self.name}: the receiver is gone (HTTP 410)", address_invalid=not self.url
            )
        return Permanent("rejected", f"{self.name}: refused with HTTP {status}")

    async def close(self) -> None:
        await self.client.close()
