"""What a channel's transport can carry: SMS segments and push payload sizes.

SMS: a message in the GSM 03.38 alphabet (GSM-7) fits 160 characters in one segment, or 153
per segment once split (the rest of each segment is the concatenation header); characters
of the extension table (`€`, `[`, `{`, ...) take two. Any other character switches the whole
message to UCS-2: 70 UTF-16 code units in one segment, 67 per segment when split, and an
emoji takes two units. A split never cuts an escape pair or a surrogate pair. Carriers bill
per segment, so `notigate check` reports the count for every SMS template.

Push: FCM and APNs both refuse a payload over 4096 bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

# Twilio accepts bodies of up to 1,600 characters and splits them into at most 10 segments
# (https://www.twilio.com/docs/sms/api/message-resource#create-a-message-resource).
MAX_SMS_SEGMENTS = 10
# "The maximum payload for both message types is 4096 bytes" (FCM, Message types) and
# "the maximum payload size is 4 KB (4096 bytes)" (APNs, Sending notification requests).
MAX_PUSH_PAYLOAD = 4096


@dataclass(frozen=True, slots=True)
class SmsLength:
    encoding: Literal["GSM-7", "UCS-2"]
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int

    def describe(self) -> str:
        unit = "septets" if self.encoding == "GSM-7" else "UTF-16 units"
        plural = "s" if self.segments != 1 else ""
        return f"{self.segments} segment{plural} ({self.encoding}, {self.units} {unit})"


def sms_length(text: str) -> SmsLength:
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        sizes = [2 if c in GSM7_EXTENSION else 1 for c in text]
        return SmsLength("GSM-7", sum(sizes), _segments(sizes, single=160, part=153))
    sizes = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return SmsLength("UCS-2", sum(sizes), _segments(sizes, single=70, part=67))


def _segments(sizes: list[int], *, single: int, part: int) -> int:
    """Segments when filled greedily, never splitting one character's units."""
    total = sum(sizes)
    if total <= single:
        return 1
    segments, used = 1, 0
    for size in sizes:
        if used + size > part:
            segments += 1
            used = 0
        used += size
    return segments


# What the FCM adapter adds to every message's data (ids are 28 characters) and, for urgent
# messages, its Android and APNs priority settings: counted so a template that passes the
# check is not refused by the platform.
_ADDED_DATA = {"notigate_delivery_id": "d_" + "0" * 26, "notigate_notification_id": "n_" + "0" * 26}
_ADDED_CONFIG = {"android": {"priority": "high"}, "apns": {"headers": {"apns-priority": "10"}}}


def push_payload_bytes(fields: dict[str, Any]) -> int:
    """The size of the notification, data and platform settings a push provider carries, as JSON."""
    payload = {
        "notification": {k: fields[k] for k in ("title", "body") if fields.get(k)},
        "data": {**(fields.get("data") or {}), **_ADDED_DATA},
        **_ADDED_CONFIG,
    }
    return len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode())
