"""The email a delivery becomes: one builder, so SMTP sends what the dev outbox shows.

- `Message-ID` comes from the delivery id, not from a random source: a resend of the same
  delivery (a worker that died after sending) carries the same id, so a mail client or a
  relay's logs show it as the same message.
- `X-Notigate-Delivery` names the delivery, so a bounce that quotes our headers can be
  traced back to it.
- The HTML was autoescaped by the template renderer; it goes in as it is (the transfer
  encoding may wrap it, decoding gives it back).
- Header lines may run to RFC 5322's hard limit of 998 characters. With the standard
  library's default of 78, a header with no room to fold (a long `List-Unsubscribe` URL)
  is written as RFC 2047 encoded words, which mail clients do not read as a URL.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import re
from email.errors import HeaderParseError
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from gateway.providers.base import Address, Message

DELIVERY_HEADER = "X-Notigate-Delivery"
POLICY = email.policy.default.clone(max_line_length=998)


class InvalidRecipient(ValueError):
    """The recipient cannot be written in a `To:` header: no server would take it either."""


# Headers the builder owns: a template's `headers` may add to a message, not rewrite it.
_OWN_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        DELIVERY_HEADER.lower(),
    }
)
_NOT_ID_TEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")


def message_id(delivery_id: str, sender: str) -> str:
    """`<delivery id@sender's domain>`: the same for every send of one delivery."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "notigate.invalid"
    left = _NOT_ID_TEXT.sub("-", delivery_id).strip(".") or "delivery"
    return f"<{left}@{domain}>"


def envelope_sender(sender: str) -> str:
    """The bare address of a `Name <address>` sender, for SMTP's MAIL FROM."""
    return parseaddr(sender)[1] or sender


def build(
    message: Message, address: Address, sender: str, *, date: dt.datetime | None = None
) -> EmailMessage:
    """The message as an RFC 5322 email: text/plain, plus text/html as an alternative when
    the template has one.

    Raises InvalidRecipient when the address cannot be a recipient, ValueError when another
    header cannot be written (a line break in a template's header value).
    """
    fields = message.fields
    text = fields.get("text") or fields.get("body") or ""
    html = fields.get("html")
    email = EmailMessage(policy=POLICY)
    email["Subject"] = str(fields.get("subject") or fields.get("title") or "")
    email["From"] = sender
    try:
        email["To"] = address.value
        readable = [a.addr_spec for a in email["To"].addresses] == [address.value]
    except (IndexError, HeaderParseError) as exc:  # the stdlib parser trips on some invalid forms
        raise InvalidRecipient("the recipient is not an address an email header can carry") from exc
    if not readable:  # parsed into something else (`a@b..c` becomes `<>`): never send that
        raise InvalidRecipient("the recipient is not an address an email header can carry")
    email["Date"] = format_datetime(date or dt.datetime.now(dt.UTC))
    email["Message-ID"] = message_id(message.delivery_id, sender)
    email[DELIVERY_HEADER] = message.delivery_id
    for name, value in message.headers.items():
        if name.lower() not in _OWN_HEADERS:
            email[name] = value
    if text or not html:
        email.set_content(str(text))
        if html:
            email.add_alternative(str(html), subtype="html")
    else:
        email.set_content(str(html), subtype="html")
    return email


def flatten(message: EmailMessage, *, utf8: bool = False, eight_bit: bool = True) -> bytes:
    """The message's bytes for SMTP's DATA: CRLF line ends, lines up to 998 characters, 8-bit
    parts re-encoded when the server takes only 7-bit."""
    policy = POLICY.clone(linesep="\r\n", utf8=utf8, cte_type="8bit" if eight_bit else "7bit")
    return message.as_bytes(policy=policy)
