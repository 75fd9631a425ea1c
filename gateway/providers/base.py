"""What every provider adapter is: a `send()` that returns a normalized result.

Workers never handle a provider's own errors: each adapter maps them, from a table next to
the provider's documented codes, to one of three results:
- `Delivered(provider_message_id)`;
- `Retryable(error, retry_after)`: try again later, or try the next provider now;
- `Permanent(code, error, address_invalid)`: do not retry; when the address itself is bad
  (invalid number, hard bounce, unregistered token) the worker marks it so later decisions
  see `no_address`.

Each failure also names whose fault it is (`FailureClass`), and that, not the code, drives
the provider chain (docs/providers.md has the table):
- `address`: the recipient's (invalid, unsubscribed): no other provider would do better;
- `message`: the content's (too long, rejected content): same;
- `health`: the provider's (5xx, unreachable, rate limited): the next provider is tried
  and the failure counts toward the breaker;
- `configuration`: ours with this provider (credentials, permissions, sender not
  verified): the next provider is tried, the breaker opens at once, and an alert-worthy
  metric counts it. It is `Retryable`: once the operator fixes it, retries go through.

A `Retryable` failure is `ambiguous` when the provider may have accepted the message (a
timeout after the request was sent, a connection dropped mid-answer, a success we cannot
read): a provider that cannot drop a repeat is then not called again, nor another one, and
the delivery is recorded `unknown` (see `gateway.delivery.pipeline`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal, Protocol

from gateway.providers.settings import ProviderSettings
from gateway.providers.spec import ProviderSpec

AddressKind = Literal["email", "phone", "device", "webhook", "user"]


@dataclass(frozen=True, slots=True)
class Address:
    """One recipient of a delivery: an email address, a phone number, a device token..."""

    kind: AddressKind
    value: str
    platform: str | None = None  # for devices: ios, android, web
    token_provider: str | None = None  # for devices: who issued the token, fcm or apns

    @property
    def tag(self) -> str:
        """A short hash naming this address in files and attempt rows without showing it."""
        return hashlib.sha256(f"{self.kind}:{self.value}".encode()).hexdigest()[:10]


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered message: the fields its channel uses (see templates), plus where it is from."""

    channel: str
    event: str
    notification_id: str
    delivery_id: str
    user_id: str
    fields: dict[str, Any] = field(default_factory=dict)  # subject, text, html, title, body, data, ...
    locale: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # e.g. List-Unsubscribe for email
    priority: str = "normal"  # the intent's: urgent push asks the platform for immediate delivery
    category: str | None = None  # the policy's category (an inbox filters by it)
    # When the tier stops caring (its expiry): a provider that holds messages for offline
    # devices or busy carriers is told to drop it then, rather than deliver a stale OTP.
    expires_at: dt.datetime | None = None
    # The same for every send of this delivery: a resend replaces what the device shows.
    collapse_key: str | None = None

    def lifetime(self, now: float | None = None) -> float | None:
        """Seconds left until `expires_at` (never negative); None when the tier sets none."""
        if self.expires_at is None:
            return None
        return max(0.0, self.expires_at.timestamp() - (time.time() if now is None else now))


# Whose fault a failure is: `Permanent` ones are the address's or the message's, `Retryable`
# ones the provider's health or our configuration of it.
PermanentClass = Literal["address", "message"]
RetryableClass = Literal["health", "configuration"]
FailureClass = Literal[PermanentClass, RetryableClass]
# The classes after which the next provider of the chain is tried.
FAIL_OVER: frozenset[FailureClass] = frozenset({"health", "configuration"})


@dataclass(frozen=True, slots=True)
class Delivered:
    provider_message_id: str | None = None
    segments: int | None = None  # the parts an SMS was split into, when the provider says
    price: float | None = None  # USD the provider says it charged (Twilio), when it says
    outcome: ClassVar[str] = "delivered"


@dataclass(frozen=True, slots=True)
class Retryable:
    error: str
    retry_after: float | None = None  # seconds, when the provider said (429 Retry-After)
    code: str = "retryable"
    failure: RetryableClass = "health"
    # The provider may have taken the message (see the module docstring); with its reference
    # when it gave one.
    ambiguous: bool = False
    provider_message_id: str | None = None
    outcome: ClassVar[str] = "retryable"


@dataclass(frozen=True, slots=True)
class Permanent:
    code: str
    error: str
    address_invalid: bool = False
    failure: PermanentClass = "message"
    outcome: ClassVar[str] = "permanent"

    def __post_init__(self) -> None:
        # An address marked invalid is the address's failure, whatever the caller said.
        if self.address_invalid and self.failure != "address":
            object.__setattr__(self, "failure", "address")


SendResult = Delivered | Retryable | Permanent

# Every adapter maps these transport failures the same way, so the harness can hold them to it.
TIMEOUT = "timeout"  # the provider did not answer within the adapter's timeout
UNREACHABLE = "unreachable"  # connection refused, DNS, TLS: the request never arrived
MALFORMED = "malformed_response"  # an answer we cannot read: retried, since we cannot tell


@dataclass(frozen=True, slots=True)
class AdapterDeps:
    """What an adapter may need besides its spec: our own store, for in-app messages, and
    Redis with its key names, to tell the inbox's live streams an item arrived."""

    database: Any = None
    redis: Any = None  # redis.asyncio.Redis
    keys: Any = None  # gateway.redis_keys.Keys


class Adapter(Protocol):
    """A built adapter: what the pipeline calls. Its class is an `AdapterClass`."""

    name: str
    channel: str
    # True when sending twice with the same idempotency key delivers once (so a worker that
    # died mid-send may safely send again).
    idempotent: bool

    async def send(self, message: Message, address: Address, *, idempotency_key: str) -> SendResult: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """What a provider takes at most, declared beside its adapter (as Apprise's adapters do)."""

    body_chars: int | None = None  # characters of text (Twilio's `Body`)
    payload_bytes: int | None = None  # bytes of the serialized payload (FCM, APNs)


class AdapterClass(Protocol):
    """Everything the registry needs of an adapter's class, so mypy checks every entry of
    `gateway.providers.registry.LIVE_ADAPTERS`:
    - `settings`: its typed settings (`gateway.providers.settings`, a module that imports no
      SDK), which `notigate check` validates providers.yaml against;
    - `secrets`: its credentials, none of which any log line may show (the conformance
      harness checks it);
    - `limits`: what the provider takes at most;
    - `from_spec(spec, deps)`: the adapter, built from its entry of providers.yaml.
    """

    @property
    def settings(self) -> type[ProviderSettings]: ...

    @property
    def secrets(self) -> tuple[str, ...]: ...

    @property
    def limits(self) -> Limits: ...

    def from_spec(self, spec: ProviderSpec, deps: AdapterDeps) -> Adapter: ...


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
