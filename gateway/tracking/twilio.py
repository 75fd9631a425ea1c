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
| undelivered, failed, canceled    | failed    | with ErrorCode 21610 (the recipient texted STOP):   |
|                                  |           | phone marked `invalid`; 30003 (unreachable handset),|
|                                  |           | 30005 (unknown handset), 30006 (landline or         |
|                                  |           | unreachable carrier): phone marked `bounced`        |
| queued, accepted, scheduled,     | (ignored) | Twilio's own progress; not stored                   |
| sending                          |           |                                                     |
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
    "21610": "invalid",  # the recipient replied STOP: every later message is refused
    "30003": "bounced",  # unreachable destination handset
    "30005": "bounced",  # unknown destination handset (the number does not exist)
    "30006": "bounced",  # landline or unreachable carrier
}


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
    )
