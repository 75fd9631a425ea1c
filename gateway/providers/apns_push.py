"""Push straight to Apple (APNs), for iOS devices that registered a raw APNs device token.

One `POST /3/device/<token>` per device over HTTP/2 (httpx with `h2`; APNs speaks nothing
else), authenticated by a provider token: an ES256 JWT (`{"alg": "ES256", "kid": <key id>}`,
`{"iss": <team id>, "iat": <now>}`) signed with the .p8 key from the environment. Apple
refuses a token older than an hour and throttles one renewed more often than every 20
minutes, so it is made once and renewed after 50 minutes, or at once when APNs answers
`ExpiredProviderToken` (the send is then tried once more with the new token).

Headers: `apns-topic` (the app's bundle id), `apns-push-type` (`alert` when the message has
a title or body, else `background`), `apns-priority` (10, send now; 5 for background pushes
and `low` priority, as Apple requires for background), `apns-expiration` (the delivery's
expiry as a UNIX time: APNs keeps the push for an offline device until then and no longer;
0 when it has passed: deliver now or never), `apns-collapse-id` (the delivery id: a resend
replaces the notification instead of stacking) and `apns-id` (a UUID derived from the delivery
id, which APNs echoes back as the message id). The payload is `{"aps": {...}}` with the
template's `data` and our `notigate_delivery_id` / `notigate_notification_id` beside it.

APNs has no idempotency key (`apns-id` only names the push), so `idempotent` is False.

Outcomes, by the `reason` of APNs' JSON error body (Apple's "Handling notification responses
from APNs"):

| APNs answer                                            | result                                     |
|--------------------------------------------------------|--------------------------------------------|
| 200                                                    | delivered (message id: `apns-id`)          |
| 400 BadDeviceToken                                     | permanent `bad_device_token`, address inv. |
| 400 DeviceTokenNotForTopic                             | permanent `token_not_for_topic`, addr inv. |
| 410 Unregistered, ExpiredToken                         | permanent `unregistered`, address invalid  |
| 403 ExpiredProviderToken                               | new provider token, sent once more; then   |
|                                                        | retryable `provider_token_expired`         |
| 403 InvalidProviderToken, MissingProviderToken,        | retryable `auth_failed` (configuration:    |
| BadCertificate, BadCertificateEnvironment, Forbidden,  | the key, key id or team id, not the        |
| UnrelatedKeyIdInToken, BadEnvironmentKeyInToken        | address; the breaker opens at once)        |
| 400 BadTopic, MissingTopic, TopicDisallowed            | retryable `bad_topic` (configuration:      |
|                                                        | settings.topic)                            |
| 413 PayloadTooLarge (or over 4 KB before sending)      | permanent `payload_too_large`              |
| 400 PayloadEmpty, BadExpirationDate, BadPriority,      | permanent `bad_request`, naming the reason |
| BadCollapseId, BadMessageId, InvalidPushType,          |                                            |
| DuplicateHeaders, MissingDeviceToken                   |                                            |
| 429 TooManyRequests (this device, too often)           | retryable `rate_limited`, with Retry-After |
| 429 TooManyProviderTokenUpdates                        | retryable `rate_limited`                   |
| 500 InternalServerError, 503 ServiceUnavailable,       | retryable `http_<status>`                  |
| Shutdown; 400 IdleTimeout                              |                                            |
| 404 BadPath, 405 MethodNotAllowed, other 4xx           | permanent `rejected`, naming the reason    |
| timeout / connection refused / not HTTP/2              | retryable `timeout` / `unreachable` /      |
|                                                        | `malformed_response`                       |

BadDeviceToken is also APNs' answer to a development (sandbox) token sent to the production
host: `base_url` must match the app's build (`https://api.sandbox.push.apple.com` for
development builds), or every device would be retired.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.errors import ConfigError
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
from gateway.providers.settings import APNS_API, ApnsSettings
from gateway.providers.spec import ProviderSpec
from gateway.redact import Secret, redact, redact_http_logs

redact_http_logs()  # the device token is in the URL; hpack would log it and the provider token

DEFAULT_BASE_URL = APNS_API
MAX_PAYLOAD = 4096  # bytes of JSON APNs takes for a regular push
TOKEN_LIFETIME = 50 * 60  # seconds: Apple refuses older than 60 min, throttles renewals within 20
_APNS_ID = uuid.UUID("5c1b9e0e-7a8e-4c55-9a0f-2b6f3c1d8e47")  # namespace for apns-id from delivery ids

# APNs reasons that say the token is no good for us: the device is retired.
ADDRESS_REASONS: Mapping[str, str] = {
    "BadDeviceToken": "bad_device_token",
    "DeviceTokenNotForTopic": "token_not_for_topic",
    "Unregistered": "unregistered",
    "ExpiredToken": "unregistered",
}
AUTH_REASONS = frozenset(
    {
        "InvalidProviderToken",
        "MissingProviderToken",
        "BadCertificate",
        "BadCertificateEnvironment",
        "Forbidden",
        "UnrelatedKeyIdInToken",
        "BadEnvironmentKeyInToken",
    }
)
TOPIC_REASONS = frozenset({"BadTopic", "MissingTopic", "TopicDisallowed"})
REQUEST_REASONS = frozenset(
    {
        "PayloadEmpty",
        "BadExpirationDate",
        "BadPriority",
        "BadCollapseId",
        "BadMessageId",
        "InvalidPushType",
        "DuplicateHeaders",
        "MissingDeviceToken",
    }
)
EXPIRED_PROVIDER_TOKEN = "ExpiredProviderToken"  # noqa: S105 - an APNs reason, not a secret


def load_key(pem: Secret, provider: str, variable: str) -> ec.EllipticCurvePrivateKey:
    """The .p8 signing key, checked once at start: a P-256 private key in PEM."""
    try:
        key = serialization.load_pem_private_key(pem.reveal().encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"provider {provider!r}: {variable} is not a PEM private key; give the contents of the "
            "AuthKey_<key id>.p8 file downloaded from Apple (Certificates, Identifiers & Profiles -> Keys)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"provider {provider!r}: {variable} is not an APNs key (an EC P-256 key)")
    return key


class ApnsAdapter:
    idempotent = False
    settings = ApnsSettings
    secrets = ApnsSettings.credentials
    limits = Limits(payload_bytes=MAX_PAYLOAD)
    device_tokens = "apns"  # the pipeline gives this adapter only devices registered with APNs tokens

    def __init__(
        self,
        name: str,
        channel: str,
        *,
        auth_key: ec.EllipticCurvePrivateKey,
        key_id: str,
        team_id: str,
        topic: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.channel = channel
        self.key_id = key_id
        self.team_id = team_id
        self.topic = topic
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self._key = auth_key
        self._token: tuple[str, float] | None = None  # (JWT, issued at)
        # HTTP/2 only: over https by ALPN, over http (a local stand-in) by prior knowledge.
        self.client = httpx.AsyncClient(http1=False, http2=True, timeout=timeout, follow_redirects=False)

    @classmethod
    def from_spec(cls, spec: ProviderSpec, deps: AdapterDeps) -> ApnsAdapter:
        settings = spec.typed(ApnsSettings)
        return cls(
            spec.name,
            spec.channel,
            auth_key=load_key(spec.credential("auth_key"), spec.name, spec.credential_vars["auth_key"]),
            key_id=settings.key_id,
            team_id=settings.team_id,
            topic=settings.topic,
            base_url=settings.base_url,
            timeout=spec.timeout,
        )

    def provider_token(self, *, renew: bool = False) -> str:
        """The JWT APNs authenticates us by, made again after TOKEN_LIFETIME or when asked."""
        now = self.clock()
        if renew or self._token is None or now - self._token[1] >= TOKEN_LIFETIME:
            claims = {"iss": self.team_id, "iat": int(now)}
            self._token = (
                jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.key_id}),
                now,
            )
        return self._token[0]

    async def send(self, message: Message, address: Address, *, idempotency_key: str) -> SendResult:
        if address.kind != "device":
            return Permanent("wrong_address", f"{self.name}: APNs sends to devices, not to a {address.kind}")
        try:
            payload = _payload(message)
        except TypeError as exc:
            return Permanent("invalid_message", f"{self.name}: {exc}")
        if len(payload) > MAX_PAYLOAD:
            return Permanent(
                "payload_too_large",
                f"{self.name}: the payload is {len(payload)} bytes, APNs takes {MAX_PAYLOAD}",
            )
        headers = self._headers(message, idempotency_key)
        url = f"{self.base_url}/3/device/{address.value}"
        for renew in (False, True):
            headers["authorization"] = f"bearer {self.provider_token(renew=renew)}"
            try:
                response = await self.client.post(url, content=payload, headers=headers)
            except httpx.ConnectTimeout:  # the request never left: not ambiguous
                return Retryable(f"{self.name}: cannot connect to APNs in time", code=UNREACHABLE)
            except httpx.TimeoutException:  # APNs may have taken the push (docs/providers.md)
                return Retryable(f"{self.name}: no answer from APNs in time", code=TIMEOUT, ambiguous=True)
            except httpx.RemoteProtocolError:
                return Retryable(
                    f"{self.name}: APNs' answer is not valid HTTP/2", code=MALFORMED, ambiguous=True
                )
            except httpx.TransportError as exc:
                return Retryable(
                    f"{self.name}: cannot connect to APNs ({type(exc).__name__})", code=UNREACHABLE
                )
            if response.status_code != 403 or _reason(response) != EXPIRED_PROVIDER_TOKEN:
                break
        return self._result(response, address)

    def _headers(self, message: Message, idempotency_key: str) -> dict[str, str]:
        alert = bool(message.fields.get("title") or message.fields.get("body"))
        headers = {
            "apns-topic": self.topic,
            "apns-push-type": "alert" if alert else "background",
            "apns-priority": "10" if alert and message.priority != "low" else "5",
            "apns-collapse-id": (message.collapse_key or message.delivery_id)[:64],
            "apns-id": str(uuid.uuid5(_APNS_ID, idempotency_key)),
            "content-type": "application/json",
        }
        lifetime = expiration(message.expires_at, self.clock())
        if lifetime is not None:
            headers["apns-expiration"] = lifetime
        return headers

    def _result(self, response: httpx.Response, address: Address) -> SendResult:
        status = response.status_code
        if status == 200:
            return Delivered(provider_message_id=response.headers.get("apns-id"))
        reason = _reason(response)
        said = f"APNs answered {status} {reason or '(no reason)'}"
        code = ADDRESS_REASONS.get(reason or "")
        if code is not None:
            device = redact("device", address.value)
            return Permanent(code, f"{self.name}: {said} for {device}", address_invalid=True)
        if status == 429:
            return Retryable(
                f"{self.name}: {said}",
                retry_after_seconds(response.headers.get("retry-after")),
                code="rate_limited",
            )
        if reason == EXPIRED_PROVIDER_TOKEN:
            return Retryable(
                f"{self.name}: {said} twice, even with a new token", code="provider_token_expired"
            )
        if status >= 500 or reason == "IdleTimeout":
            return Retryable(f"{self.name}: {said}", code=f"http_{status}")
        if reason in AUTH_REASONS:
            return Retryable(
                f"{self.name}: {said}: check the APNs key, key_id and team_id",
                code="auth_failed",
                failure="configuration",
            )
        if reason in TOPIC_REASONS:
            return Retryable(
                f"{self.name}: {said}: check settings.topic (the app's bundle id)",
                code="bad_topic",
                failure="configuration",
            )
        if status == 413 or reason == "PayloadTooLarge":
            return Permanent("payload_too_large", f"{self.name}: {said}")
        if reason in REQUEST_REASONS:
            return Permanent("bad_request", f"{self.name}: {said}")
        return Permanent("rejected", f"{self.name}: {said}")

    async def close(self) -> None:
        await self.client.aclose()


def _payload(message: Message) -> bytes:
    fields = message.fields
    data = fields.get("data") or {}
    if not isinstance(data, Mapping):
        raise TypeError(f"the push template's data must be a mapping, not {type(data).__name__}")
    title, body = fields.get("title"), fields.get("body")
    aps: dict[str, Any] = (
        {"alert": {k: v for k, v in (("title", title), ("body", body)) if v}}
        if title or body
        else {"content-available": 1}
    )
    document = {
        **{str(k): v for k, v in data.items() if k != "aps"},
        "aps": aps,
        "notigate_delivery_id": message.delivery_id,
        "notigate_notification_id": message.notification_id,
    }
    return json.dumps(document, default=str, separators=(",", ":")).encode()


def _reason(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    reason = body.get("reason") if isinstance(body, dict) else None
    return reason if isinstance(reason, str) else None


def expiration(expires_at: dt.datetime | None, now: float) -> str | None:
    """`apns-expiration`: the expiry as a UNIX time, 0 once past (deliver now or never)."""
    if expires_at is None:
        return None
    at = expires_at.timestamp()
    return str(int(at) if at > now else 0)
