"""Twilio's message status callbacks: verified with the SDK's `RequestValidator`, then mapped.

Twilio POSTs a form (`MessageSid`, `MessageStatus`, `ErrorCode`, `To`, ...) to the
`StatusCallback` URL the adapter gave with the message, signed in `X-Twilio-Signature`:
HMAC-SHA1 under the account's Auth Token (`TWILIO_AUTH_TOKEN`, the provider's own credential)
over the *full URL Twilio called* plus the sorted form fields. Behind a proxy the URL we see
is not that URL, so it is rebuilt from `NOTIGATE_PUBLIC_URL` and the request's path and query.

Callbacks carry no event id; (message, status, error code) identifies one, so a retried
callback is stored once. Twilio calls again for each status, in any order.

| MessageStatus                    | our type  | effect                                              |
|----------------------------------|-----------|-----------------------------------------------------|
| sent                             | sent      |                                                     |
| delivered                        | delivered |                                                     |
| read (WhatsApp)                  | opened    |                                                     |
| undelivered, failed, canceled    | failed    | by ErrorCode, below                                 |
| queued, accepted, scheduled,     | (ignored) | Twilio's own progress; not stored                   |
| sending                          |           |                                                     |

A failure's `ErrorCode` (Twilio's carrier errors, https://www.twilio.com/docs/api/errors/<code>)
decides what follows:

| ErrorCode                                 | effect                                                       |
|-------------------------------------------|--------------------------------------------------------------|
| 21610 the recipient texted STOP           | phone marked `opted_out` until they text START (`inbound.py`)|
| 30005 unknown destination handset         | phone marked `bounced`: the number does not exist            |
| 30006 landline or unreachable carrier     | phone marked `bounced`: it cannot take SMS                   |
| 30001 queue overflow (carrier congestion) | temporary: the delivery is sent again on its tier's retry    |
| 30003 unreachable handset (off, no signal)| schedule, the phone is kept (`resend`); see docs/tracking.md |
| 30008 unknown carrier error               |                                                              |
| any other (30007 filtered, 30002 ...)     | stored only                                                  |

30003 is usually a phone that is switched off or out of coverage: Twilio's own advice is to
try again, so retiring the number like a hard bounce would silence a working phone for good.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from twilio.request_validator import RequestValidator

from gateway.redact import Secret
from gateway.tracking.events import EventType, ProviderEvent, Suppression

SIGNATURE_HEADER = "X-Twilio-Signature"
PATH = "/v1/webhooks/twilio/status"
PROVIDER = "twilio"

_TYPES: dict[str, EventType] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "opened",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}
# Twilio error codes (https://www.twilio.com/docs/api/errors/<code>) that say the number is
# gone for us, like a hard bounce: later decisions should see `no_address`.
ADDRESS_ERRORS: Mapping[str, Suppression] = {
    "21610": "opted_out",  # the recipient replied STOP: every later message is refused until START
    "30005": "bounced",  # unknown destination handset (the number does not exist)
    "30006": "bounced",  # landline or unreachable carrier
}
# Carrier errors Twilio documents as temporary: the message is sent again, the phone kept.
TEMPORARY_ERRORS = frozenset(
    {
        "30001",  # queue overflow: the carrier's queue was full
        "30003",  # unreachable destination handset: off, out of coverage
        "30008",  # unknown error from the carrier; Twilio advises trying again
    }
)


class SignatureError(Exception):
    """The request is not one Twilio signed with the configured Auth Token."""


class PayloadError(ValueError):
    """A signed form that is not a message status callback."""


def verify(auth_token: Secret, url: str, form: Mapping[str, str], signature: str | None) -> None:
    if not signature:
        raise SignatureError(f"the {SIGNATURE_HEADER} header is required")
    if not RequestValidator(auth_token.reveal()).validate(url, dict(form), signature):
        raise SignatureError(
            "the signature does not match: check TWILIO_AUTH_TOKEN, and that NOTIGATE_PUBLIC_URL "
            "is the base of the URL Twilio calls"
        )


def parse(form: Mapping[str, str], now: dt.datetime) -> ProviderEvent | None:
    """The callback as an event; None for the statuses we do not store."""
    sid = form.get("MessageSid") or form.get("SmsSid")
    status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
    if not sid or not status:
        raise PayloadError("a status callback names MessageSid and MessageStatus")
    kind = _TYPES.get(status)
    if kind is None:
        return None
    code = (form.get("ErrorCode") or "").strip()
    suppress = ADDRESS_ERRORS.get(code) if kind == "failed" else None
    resend = status in ("undelivered", "failed") and code in TEMPORARY_ERRORS
    detail = f"{status} (error {code})" if code else status
    return ProviderEvent(
        provider=PROVIDER,
        dedup_key=f"{PROVIDER}:{sid}:{status}:{code}",
        type=kind,
        occurred_at=now,
        address_kind="phone",
        address=form.get("To"),
        provider_message_id=sid,
        detail=detail,
        suppress=suppress,
        resend=resend,
    )
