"""Wire shapes of the public contract: what services send and what the gateway knows.

These Structs are the single source of truth for decoding and validating JSON at the
edges (HTTP bodies, policy test fixtures, CLI input). They are frozen so the decision
engine can treat them as values, and they forbid unknown fields so a typo in a producer's
payload is an error rather than a silently ignored option.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta, Struct

Priority = Literal["urgent", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("urgent", "normal", "low")

# Patterns end in `$(?!\n)`: Python's `$` alone also matches before a trailing newline, which
# made `"u_alice\n"` another user; `\Z` would say so too, but JSON Schema's (ECMAScript) regex,
# used by editors on the exported schemas, reads `\Z` as a literal Z. Emails refuse control
# characters (they end up in headers).
EventName = Annotated[
    str,
    Meta(
        pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)*$(?!\n)",
        max_length=128,
        description="Dotted lower-case event name, e.g. `order.shipped`.",
    ),
]
EventPattern = Annotated[
    str,
    Meta(
        pattern=r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$(?!\n)",
        max_length=128,
        description="An exact event name, a `prefix.*` pattern or `*`.",
    ),
]
UserId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:@-]+$(?!\n)", min_length=1, max_length=128)]
ChannelName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]*$(?!\n)", max_length=32)]
ChannelOrAny = Annotated[str, Meta(pattern=r"^(\*|[a-z][a-z0-9_]*)$(?!\n)", max_length=32)]
Locale = Annotated[str, Meta(pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$(?!\n)", max_length=35)]
ClockTime = Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$(?!\n)")]
AwareDatetime = Annotated[dt.datetime, Meta(tz=True)]
_ADDRESS_PART = r"[^@\s\x00-\x1f\x7f]+"
Email = Annotated[
    str, Meta(pattern=rf"^{_ADDRESS_PART}@{_ADDRESS_PART}\.{_ADDRESS_PART}$(?!\n)", max_length=254)
]
Phone = Annotated[str, Meta(pattern=r"^\+[1-9][0-9]{6,14}$(?!\n)", description="E.164")]
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=256)]


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """Return the IANA zone, cached: ZoneInfo construction is the slow part of a lookup."""
    return ZoneInfo(name)


# Instants the gateway computes with (deferrals, windows, expiries add days to them): far
# enough from datetime's limits (years 1 and 9999) that no sum overflows.
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)


def check_moment(value: dt.datetime | None, field: str) -> None:
    """Raise ValueError naming the field when `value` is outside [EARLIEST, LATEST)."""
    if value is not None and not EARLIEST <= value < LATEST:
        raise ValueError(f"`{field}` {value.isoformat()} is out of range: give a time from 1970 to 8999")


def check_zone(name: str) -> None:
    """Raise ValueError naming the zone when it is not a known IANA zone."""
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: "Etc" is a directory
        shown = name if len(name) <= 64 else f"{name[:64]}…"
        raise ValueError(
            f"`timezone` {shown!r} is not an IANA time zone; use a name such as 'Europe/Paris'"
        ) from exc


class Intent(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Something happened that a user may need to hear about."""

    event: EventName
    user_id: UserId
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    priority: Priority = "normal"
    channels: list[ChannelName] | None = None
    idempotency_key: IdempotencyKey | None = None
    send_at: AwareDatetime | None = None
    locale: Locale | None = None

    def __post_init__(self) -> None:
        check_moment(self.send_at, "send_at")
        if self.channels is not None:
            if not self.channels:
                raise ValueError("`channels` must name at least one channel when given")
            if len(set(self.channels)) != len(self.channels):
                raise ValueError("`channels` must not repeat a channel")


# Which provider issued a device's token, so it goes to the one that can use it: an FCM
# registration token (Android, iOS through Firebase, web) or a raw APNs device token (iOS).
TokenProvider = Literal["fcm", "apns"]
# An APNs device token: 32 bytes, as the 64 hex digits apps send it in.
APNS_TOKEN = re.compile(r"[0-9a-fA-F]{64}")
# An FCM registration token (base64url with a `:`, ~160 characters) or Firebase installation
# ID: lenient, since Google documents no exact shape, but never blanks or control characters.
FCM_TOKEN = re.compile(r"[A-Za-z0-9_:.\-]+")


class Device(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    platform: Literal["ios", "android", "web"]
    token: Annotated[str, Meta(min_length=1, max_length=4096)]
    active: bool = True
    provider: TokenProvider = "fcm"


def token_problem(device: Device) -> str | None:
    """Why the device's provider would refuse its token, or None.

    Checked where devices are registered (the API, `notigate users import`), not when the
    struct is built, so devices stored before the check existed still load. A raw APNs token
    sent to FCM comes back as 'invalid registration token', which would retire a working iPhone.
    """
    if device.provider == "apns":
        if device.platform != "ios":
            return "an APNs device token belongs to an `ios` device"
        if not APNS_TOKEN.fullmatch(device.token):
            return "an APNs device token is 64 hexadecimal digits"
        return None
    if APNS_TOKEN.fullmatch(device.token):
        return (
            "this is a raw APNs device token (64 hexadecimal digits), not an FCM registration "
            'token: register it with "provider": "apns"'
        )
    if not FCM_TOKEN.fullmatch(device.token):
        return "an FCM registration token holds only letters, digits and `_:.-` (no spaces or brackets)"
    return None


class Contacts(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    email: Email | None = None
    phone: Phone | None = None
    devices: list[Device] = msgspec.field(default_factory=list)
    webhook: Annotated[str, Meta(pattern=r"^https?://", max_length=2048)] | None = None

    def __post_init__(self) -> None:
        tokens = [d.token for d in self.devices]
        if len(set(tokens)) != len(tokens):
            raise ValueError("`devices` must not list the same token twice")

    def active_devices(self) -> list[Device]:
        return [d for d in self.devices if d.active]


class Preference(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One row of a user's wishes; the most specific matching row wins."""

    event: EventPattern
    channel: ChannelOrAny = "*"
    enabled: bool = True
    frequency_cap: Annotated[int, Meta(ge=0, le=2**31 - 1)] | None = None  # PostgreSQL's integer


class QuietHours(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A daily `[start, end)` window of wall-clock time; wraps midnight when start > end."""

    start: ClockTime
    end: ClockTime


class UserState(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    user_id: UserId
    timezone: str | None = None
    locale: Locale | None = None
    contacts: Contacts = msgspec.field(default_factory=Contacts)
    preferences: list[Preference] = msgspec.field(default_factory=list)
    quiet_hours: QuietHours | None = None

    def __post_init__(self) -> None:
        if self.timezone is not None:
            check_zone(self.timezone)


class HistoryEntry(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Something recently delivered to (or held in an open batch for) the user.

    `category` and `priority` are filled by the gateway's own history store; for entries
    written by hand (dry-run requests, policy tests) the category is derived from the event
    and `data` may stand in for `fingerprint`.
    """

    # Names here are only ever compared with the policy's, never routed or rendered: a wrong
    # one simply matches nothing. Bounding their length instead of pattern-checking them
    # halves the cost of decoding a dry-run body with a long history.
    event: Annotated[str, Meta(min_length=1, max_length=128)]
    channel: Annotated[str, Meta(min_length=1, max_length=32)]
    at: AwareDatetime
    fingerprint: str | None = None
    category: str | None = None
    priority: Priority | None = None
    idempotency_key: IdempotencyKey | None = None
    notification_id: str | None = None
    batched: bool = False
    # When the batch this entry waits in closes; for hand-written entries, `at` + the window.
    batch_closes_at: AwareDatetime | None = None
    data: dict[str, Any] | None = None


class DryRunRequest(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    intent: Intent
    user: UserState | None = None
    at: AwareDatetime | None = None
    history: list[HistoryEntry] | None = None

    def __post_init__(self) -> None:
        check_moment(self.at, "at")


# --- The decision ---------------------------------------------------------------------

DeferralReason = Literal["quiet_hours", "batched", "scheduled", "delivery_window"]
SuppressionReason = Literal[
    "opted_out", "no_address", "frequency_capped", "duplicate", "muted", "policy", "expired"
]


class Batch(Struct, frozen=True, kw_only=True):
    """Where a batched delivery waits: one grouped message goes out per key and window.

    `closes_at` is the window's end even when the batch is full: a full batch goes at
    once, and the items after it start a new batch that still closes with the window.
    """

    key: str
    window_seconds: int
    max_size: int
    size: int
    closes_at: dt.datetime
    full: bool


class Delivery(Struct, frozen=True, kw_only=True):
    channel: str
    send_at: dt.datetime | None
    deferred: DeferralReason | None
    tier: str
    queue: str
    template: str
    providers: list[str]
    recipients: int
    estimated_cost: float
    expires_at: dt.datetime
    rule: str
    fingerprint: str
    batch: Batch | None = None


class Suppression(Struct, frozen=True, kw_only=True):
    channel: str
    reason: SuppressionReason
    detail: str
    rule: str
    digest: str | None = None


# What a trace step evaluated: a closed set (listed in schemas/decision.schema.json and
# docs/policies.md; `user` is the dry run's, for an unknown user).
TraceKind = Literal[
    "user",
    "idempotency",
    "match",
    "condition",
    "tier",
    "bypass",
    "strategy",
    "override",
    "constraint",
    "mute",
    "consent",
    "address",
    "template",
    "cost",
    "dedup",
    "cap",
    "expiry",
    "schedule",
    "batch",
    "delivery_window",
    "quiet_hours",
]


class TraceStep(Struct, frozen=True, kw_only=True):
    """One step of the decision that mattered, with where in the policy it came from."""

    step: TraceKind
    rule: str | None
    file: str | None
    line: int | None
    expr: str | None
    value: Any
    channel: str | None = None
    detail: str | None = None


class Decision(Struct, frozen=True, kw_only=True):
    policy_version: str
    event: str
    user_id: str
    category: str
    tier: str
    rule: str
    priority: Priority
    evaluated_at: dt.datetime
    deliveries: list[Delivery]
    suppressed: list[Suppression]
    fallback: list[str]
    standby: list[Delivery]
    estimated_cost: float
    trace: list[TraceStep]


_json_encoder = msgspec.json.Encoder()


def to_json(value: Any) -> bytes:
    return _json_encoder.encode(value)


# --- Intake, status and dead letters ----------------------------------------------------

DeliveryStatusName = Literal[
    "pending",
    "scheduled",
    "sending",
    "retrying",
    "delivered",
    "failed",
    "expired",
    "dead",
    "unknown",  # a provider may have taken it and did not say: not sent again (docs/providers.md)
    "suppressed",
    "standby",
    "cancelled",
]


class Accepted(Struct, frozen=True, kw_only=True):
    notification_id: str
    status: Literal["accepted"] = "accepted"


# Where an attempt's cost comes from: the provider's own price, or providers.yaml's `cost`.
CostSource = Literal["reported", "configured"]


class AttemptRecord(Struct, frozen=True, kw_only=True):
    at: dt.datetime
    provider: str | None
    outcome: str
    error: str | None
    provider_message_id: str | None = None
    segments: int | None = None  # SMS parts the provider billed
    cost: float | None = None  # USD, for a delivered attempt
    cost_source: CostSource | None = None


class ChannelCost(Struct, frozen=True, kw_only=True):
    """What a notification's sends cost on one channel through one provider."""

    channel: str
    provider: str
    messages: int  # delivered attempts
    segments: int | None  # SMS parts, when the provider said
    cost: float  # USD: reported prices where given, configured unit costs elsewhere


class TrackingEvent(Struct, frozen=True, kw_only=True):
    """What a provider reported about a delivery after taking it (its webhooks)."""

    type: str  # sent, delivered, opened, clicked, bounced, soft_bounced, failed, dropped, complained, ...
    at: dt.datetime  # when the provider says it happened
    provider: str
    detail: str | None = None  # the provider's reason or code, address masked


class DeliveryStatus(Struct, frozen=True, kw_only=True):
    delivery_id: str
    channel: str
    status: DeliveryStatusName
    send_at: dt.datetime | None
    provider: str | None
    attempts: list[AttemptRecord]
    reason: str | None = None
    detail: str | None = None
    tier: str | None = None
    expires_at: dt.datetime | None = None
    # The delivery whose message carried this one: its batch's, or the digest it was folded into.
    grouped_into: str | None = None
    events: list[TrackingEvent] = []  # what the provider reported since, oldest first


class NotificationStatus(Struct, frozen=True, kw_only=True):
    notification_id: str
    event: str
    user_id: str
    created_at: dt.datetime
    policy_version: str | None
    priority: str
    status: Literal["decided", "undecided"]
    category: str | None
    tier: str | None
    rule: str | None
    fallback: list[str]
    deliveries: list[DeliveryStatus]
    costs: list[ChannelCost] = []  # actual cost per channel and provider, from the attempts


class DeadLetter(Struct, frozen=True, kw_only=True):
    dead_letter_id: str
    delivery_id: str
    notification_id: str
    user_id: str
    channel: str
    error: str | None
    attempts: int
    created_at: dt.datetime
    replayed_at: dt.datetime | None
    replay_delivery_id: str | None


class DeadLetterPage(Struct, frozen=True, kw_only=True):
    dead_letters: list[DeadLetter]
    next_cursor: str | None


def recipient_key(key: str, user_id: str) -> str:
    """The idempotency key of one recipient of a bulk request with key `key`.

    Both parts must be recoverable, or two recipients of two requests share a key and the
    second is taken for a replay of the first: user ids may hold `:`, so `<key>:<user_id>`
    alone gave `a:b` + `c` and `a` + `b:c` the same `a:b:c`. A key without `:` keeps that
    form (the first `:` ends it), so keys claimed before stay the same and a chunk expanded
    again after an upgrade is still a replay. A key holding `:` is written
    `<length>:<key>/<user_id>`: the length says where the key ends, and no old-form key can
    look like it, since what follows its first `:` holds a `/`, which a user id never does.
    At most 3 + 1 + 256 + 1 + 128 characters: the column holds 400.
    """
    if ":" not in key:
        return f"{key}:{user_id}"
    return f"{len(key)}:{key}/{user_id}"


class BulkIntent(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One intent for many users: stored whole, then expanded into one notification each."""

    event: EventName
    user_ids: Annotated[list[UserId], Meta(min_length=1, max_length=10_000)]
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    priority: Priority = "normal"
    channels: list[ChannelName] | None = None
    idempotency_key: IdempotencyKey | None = None  # per recipient: `recipient_key(key, user_id)`
    send_at: AwareDatetime | None = None
    locale: Locale | None = None

    def intents(self) -> list[Intent]:
        return [
            Intent(
                event=self.event,
                user_id=user_id,
                data=self.data,
                priority=self.priority,
                channels=self.channels,
                send_at=self.send_at,
                locale=self.locale,
                idempotency_key=recipient_key(key, user_id) if (key := self.idempotency_key) else None,
            )
            for user_id in dict.fromkeys(self.user_ids)
        ]


class BulkAccepted(Struct, frozen=True, kw_only=True):
    """A bulk request stored whole; workers expand it into one notification per recipient."""

    bulk_id: str
    recipients: int  # distinct user ids
    status_url: str


class BulkStatus(Struct, frozen=True, kw_only=True):
    """How far a bulk request has come: recipients expanded into notifications, and what
    became of those notifications' deliveries."""

    bulk_id: str
    event: str
    priority: str
    state: Literal["accepted", "expanding", "expanded"]
    recipients: int
    expanded: int  # recipients stored as notifications (or refused) so far
    refused: int  # recipients whose intent could not be accepted (e.g. their locale's template)
    first_refusal: str | None
    created_at: dt.datetime
    expanded_at: dt.datetime | None
    deliveries: dict[str, int]  # delivery status -> how many, over the notifications it produced
