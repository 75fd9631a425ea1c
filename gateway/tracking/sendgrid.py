"""SendGrid's Signed Event Webhook: verified with the SDK's own `EventWebhook`, then mapped.

SendGrid POSTs a JSON array of events and signs `timestamp + body` with ECDSA (P-256,
SHA-256); the signature and the timestamp travel in `X-Twilio-Email-Event-Webhook-Signature`
and `X-Twilio-Email-Event-Webhook-Timestamp`, and the verification key is shown under Mail
Settings → Signed Event Webhook (`NOTIGATE_SENDGRID_WEBHOOK_PUBLIC_KEY`). A valid signature
over an old timestamp is refused too (`MAX_AGE`): a captured request replayed later proves
nothing. Each event carries our custom args (`delivery_id`, `notification_id`), which the
adapter (`gateway/providers/sendgrid_email.py`) sends with every message.

| SendGrid event                  | our type       | effect                                      |
|---------------------------------|----------------|---------------------------------------------|
| processed                       | sent           |                                             |
| delivered                       | delivered      |                                             |
| open / click                    | opened/clicked |                                             |
| bounce, `type: bounce` (or none)| bounced        | email marked `bounced` → later `no_address` |
| bounce, `type: blocked`         | soft_bounced   | none: a block is temporary                  |
| dropped                         | failed         | `Bounced Address` marks `bounced`, `Spam    |
|                                 |                | Reporting Address` marks `complained`       |
| spamreport                      | complained     | email marked `complained` → `no_address`    |
| unsubscribe, group_unsubscribe  | unsubscribed   | the category's email turned off             |
| deferred                        | deferred       |                                             |

Other events (`group_resubscribe`, new kinds) are ignored: accepted, not stored. A record
that cannot be read (a `timestamp` out of range, a field of the wrong type) is skipped,
counted and logged masked, and the rest of its batch is stored: answering 4xx would make
SendGrid resend the same batch, the same record in it, forever.
"""

from __future__ import annotations

import binascii
import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

import msgspec
from cryptography.exceptions import UnsupportedAlgorithm
from sendgrid.helpers.eventwebhook import EventWebhook

from gateway.redact import redact
from gateway.tracking.events import EventType, ProviderEvent, Suppression

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_AGE = dt.timedelta(minutes=10)  # SendGrid posts within seconds; retries are signed afresh
PROVIDER = "sendgrid"


class SignatureError(Exception):
    """The request is not one SendGrid signed with the configured key (or it is too old)."""


class PayloadError(ValueError):
    """A signed body that is not SendGrid's array of events."""


class SendGridEvent(msgspec.Struct, frozen=True):
    """One record of the webhook's array; custom args arrive as top-level fields."""

    event: str
    email: str | None = None
    timestamp: int | None = None
    sg_event_id: str | None = None
    sg_message_id: str | None = None
    type: str | None = None  # bounce: `bounce` (hard) or `blocked` (soft)
    reason: str | None = None
    status: str | None = None
    response: str | None = None
    url: str | None = None
    delivery_id: str | None = None  # our custom arg
    notification_id: str | None = None  # our custom arg


_TYPES: dict[str, EventType] = {
    "processed": "sent",
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "dropped": "failed",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
    "deferred": "deferred",
}
# SendGrid drops mail to addresses on its own suppression lists; the reason says which.
_DROPPED: dict[str, Suppression] = {"Bounced Address": "bounced", "Spam Reporting Address": "complained"}


def load_public_key(raw: str) -> Any:
    """The verification key as the SDK loads it; ValueError naming what is wrong."""
    try:
        return EventWebhook().convert_public_key_to_ecdsa(raw.strip())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(
            "not SendGrid's verification key: paste the base64 key shown under Mail Settings → "
            "Signed Event Webhook (without BEGIN/END lines)"
        ) from None


@functools.lru_cache(maxsize=4)
def _verifier(public_key: str) -> EventWebhook:
    """The key is parsed once, not on every webhook (it only changes with the settings)."""
    return EventWebhook(public_key)


def verify(
    public_key: str, body: bytes, signature: str | None, timestamp: str | None, now: dt.datetime
) -> None:
    """Raise SignatureError unless SendGrid signed `timestamp + body` recently."""
    if not signature or not timestamp:
        raise SignatureError(f"the {SIGNATURE_HEADER} and {TIMESTAMP_HEADER} headers are required")
    try:
        signed_at = dt.datetime.fromtimestamp(int(timestamp), dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise SignatureError(f"{TIMESTAMP_HEADER} is not a Unix time") from None
    if abs(now - signed_at) > MAX_AGE:
        raise SignatureError(f"the signature's timestamp is more than {MAX_AGE} away from our clock")
    try:
        payload = body.decode("utf-8")
        valid = _verifier(public_key).verify_signature(payload, signature, timestamp)
    except (UnicodeDecodeError, binascii.Error, ValueError):
        valid = False
    if not valid:
        raise SignatureError("the signature does not match the body and the configured key")


@dataclass(frozen=True, slots=True)
class Parsed:
    events: list[ProviderEvent]
    # One masked line per record that cannot be read (its index, kind and why): skipped,
    # since refusing the batch for it would have SendGrid resend the whole batch forever.
    skipped: list[str]


def parse(body: bytes) -> Parsed:
    """The events of a signed body. The body must be a JSON array (422 otherwise); a record
    in it that is not a readable event (a timestamp out of range, a field of the wrong type)
    is skipped and named in `skipped`, and the rest of the batch is stored."""
    try:
        records = msgspec.json.decode(body, type=list[msgspec.Raw])
    except msgspec.DecodeError as exc:
        raise PayloadError(f"the body is not SendGrid's array of events: {exc}") from None
    events: list[ProviderEvent] = []
    skipped: list[str] = []
    for index, raw in enumerate(records):
        try:
            record = msgspec.json.decode(raw, type=SendGridEvent)
        except msgspec.DecodeError as exc:  # names the field and the type, never the value
            skipped.append(f"record {index}: {exc}")
            continue
        try:
            event = _event(record)
        except UnreadableEvent as exc:
            skipped.append(f"record {index} ({record.event}, {_address(record)}): {exc}")
            continue
        if event is not None:
            events.append(event)
    return Parsed(events, skipped)


class UnreadableEvent(ValueError):
    """A record of the right shape whose values cannot be stored (a time out of range)."""


def _address(record: SendGridEvent) -> str:
    return redact("email", record.email) if record.email else "no address"


def _occurred(record: SendGridEvent) -> dt.datetime:
    if not record.timestamp:
        return dt.datetime.now(dt.UTC)
    try:
        return dt.datetime.fromtimestamp(record.timestamp, dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise UnreadableEvent(f"timestamp {record.timestamp} is not a time we can store") from None


def _event(record: SendGridEvent) -> ProviderEvent | None:
    kind = _TYPES.get(record.event)
    if kind is None:
        return None
    suppress: Suppression | None = None
    if record.event == "bounce":
        if record.type == "blocked":
            kind = "soft_bounced"
        else:
            suppress = "bounced"
    elif record.event == "spamreport":
        suppress = "complained"
    elif record.event == "dropped":
        suppress = _DROPPED.get(record.reason or "")
    occurred = _occurred(record)
    # `sg_message_id` is `<X-Message-Id of the send>.<filter and recipient>`.
    message_id = record.sg_message_id.partition(".")[0] if record.sg_message_id else None
    key = record.sg_event_id or f"{record.sg_message_id}:{record.event}:{record.timestamp}"
    detail = " ".join(
        p for p in (record.type, record.status, record.reason or record.response, record.url) if p
    )
    return ProviderEvent(
        provider=PROVIDER,
        dedup_key=f"{PROVIDER}:{key}"[:200],
        type=kind,
        occurred_at=occurred,
        address_kind="email",
        address=record.email,
        delivery_id=record.delivery_id,
        provider_message_id=message_id,
        detail=detail or None,
        suppress=suppress,
        opt_out=kind == "unsubscribed",
    )
