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

`compose` is what the adapters call. The standard library's `email` package spends about a
millisecond of CPU on one message, nearly all of it parsing back and refolding the headers
it was just given. Most messages need none of that: every header is printable ASCII that
fits on its line, the recipient a plain `local@domain`, every body line under 998 bytes.
Those are written directly, byte for byte what the standard library writes (its random
multipart boundary aside; `tests/providers/test_mime.py` compares the two over generated
messages), in under 2% of the time. Anything else (an encoded word, a long line, a quoted
address, a 7-bit session for an 8-bit body) goes through `build` as before.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import functools
import re
import secrets
import sys
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.headerregistry import HeaderRegistry
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


def _content(message: Message) -> tuple[str, str, str | None]:
    """Subject, text and html, as both writers read them from the rendered fields."""
    fields = message.fields
    html = fields.get("html")
    subject = str(fields.get("subject") or fields.get("title") or "")
    return subject, str(fields.get("text") or fields.get("body") or ""), str(html) if html else None


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
    subject, text, html = _content(message)
    email = EmailMessage(policy=POLICY)
    email["Subject"] = subject
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
        email.set_content(text)
        if html:
            email.add_alternative(html, subtype="html")
    else:
        email.set_content(html, subtype="html")
    return email


def flatten(
    message: EmailMessage, *, linesep: str = "\n", utf8: bool = False, eight_bit: bool = True
) -> bytes:
    """The message's bytes: lines up to 998 characters, ended by `linesep` (CRLF for SMTP's
    DATA), 8-bit parts re-encoded when the server takes only 7-bit."""
    policy = POLICY.clone(linesep=linesep, utf8=utf8, cte_type="8bit" if eight_bit else "7bit")
    return message.as_bytes(policy=policy)


@dataclass(slots=True)
class Email:
    """One delivery's email, checked once and written out as each session needs it.

    Holds the direct form (`_Plain`) when the message is within it, else the standard
    library's message; a direct form asked for 7-bit with an 8-bit body builds the latter
    then, with the same date.
    """

    message: Message
    address: Address
    sender: str
    date: dt.datetime
    plain: _Plain | None
    built: EmailMessage | None = None

    @property
    def message_id(self) -> str:
        if self.built is not None:
            return str(self.built["Message-ID"])
        return message_id(self.message.delivery_id, self.sender)

    def flatten(self, *, linesep: str = "\n", utf8: bool = False, eight_bit: bool = True) -> bytes:
        if self.plain is not None and (eight_bit or self.plain.seven_bit):
            return self.plain.flatten(linesep.encode())
        if self.built is None:
            self.built = build(self.message, self.address, self.sender, date=self.date)
        return flatten(self.built, linesep=linesep, utf8=utf8, eight_bit=eight_bit)


def compose(message: Message, address: Address, sender: str, *, date: dt.datetime | None = None) -> Email:
    """The email for this delivery, as `build` would make it.

    Raises what `build` raises (InvalidRecipient, ValueError), at once.
    """
    date = date or dt.datetime.now(dt.UTC)
    plain = _plain(message, address, sender, date)
    if plain is not None:
        return Email(message, address, sender, date, plain)
    return Email(message, address, sender, date, None, build(message, address, sender, date=date))


# The direct form's domain. A header value of printable ASCII and spaces, without an encoded
# word's opening, is written as it is given; an address of dot-atoms (RFC 5322 3.2.3) is its
# own addr-spec; a header name the registry gives a parser of its own is left to the library.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
_ADDRESS = re.compile(rf"{_DOT_ATOM.pattern}@{_DOMAIN.pattern}")  # a recipient, or a Message-ID's inside
_PLAIN_VALUE = re.compile(r"[ -~]*")
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_PARSED = frozenset(HeaderRegistry().registry)  # names with a parser of their own (To, Date, ...)
_LINE = 998  # POLICY.max_line_length
_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))  # as email.generator makes its boundaries


@dataclass(frozen=True, slots=True)
class _Part:
    headers: tuple[str, ...]
    body: tuple[bytes, ...]  # its lines
    seven_bit: bool


@dataclass(frozen=True, slots=True)
class _Plain:
    headers: tuple[str, ...]  # the top-level header lines, without their line ends
    parts: tuple[_Part, ...]  # one, or two as multipart/alternative
    seven_bit: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seven_bit", all(p.seven_bit for p in self.parts))

    def flatten(self, nl: bytes) -> bytes:
        texts = [
            nl.join(line.encode() for line in p.headers) + nl + nl + _body(p.body, nl) for p in self.parts
        ]
        if len(texts) == 1:
            return nl.join(line.encode() for line in self.headers) + nl + texts[0]
        boundary = _boundary(texts)
        top = (
            *self.headers,
            "MIME-Version: 1.0",
            f'Content-Type: multipart/alternative; boundary="{boundary}"',
        )
        dash = b"--" + boundary.encode()
        return (
            nl.join(line.encode() for line in top)
            + nl + nl + dash + nl
            + (nl + dash + nl).join(texts)
            + nl + dash + b"--" + nl
        )  # fmt: skip


def _body(lines: tuple[bytes, ...], nl: bytes) -> bytes:
    return nl.join(lines) + nl


def _boundary(texts: list[bytes]) -> str:
    """`===============<19 digits>==`, like the library's, and found in no part."""
    while True:
        boundary = "=" * 15 + f"{secrets.randbelow(sys.maxsize):0{_BOUNDARY_DIGITS}d}" + "=="
        if not any(b"--" + boundary.encode() in text for text in texts):
            return boundary


def _header(name: str, value: str) -> str | None:
    """`Name: value` as the library folds it, when it would write the value as given."""
    if "=?" in value or not _PLAIN_VALUE.fullmatch(value):
        return None
    line = f"{name}: {value}" if value else f"{name}:"
    return line if len(line) <= _LINE else None


def _text_part(text: str, subtype: str, *, first_of_two: bool = False) -> _Part | None:
    try:
        lines = tuple(text.encode().splitlines())
    except UnicodeEncodeError:
        return None
    if any(len(line) > _LINE for line in lines):
        return None
    seven_bit = all(line.isascii() for line in lines)
    headers = [
        f'Content-Type: text/{subtype}; charset="utf-8"',
        f"Content-Transfer-Encoding: {'7bit' if seven_bit else '8bit'}",
    ]
    if not first_of_two:  # the library moves the first part's MIME-Version to the top
        headers.append("MIME-Version: 1.0")
    return _Part(tuple(headers), lines, seven_bit)


@functools.lru_cache(maxsize=64)
def _from_line(sender: str) -> str | None:
    """The `From` line as the library folds it, when that is one plain line."""
    try:
        folded = POLICY.fold("From", POLICY.header_store_parse("From", sender)[1])
    except (IndexError, HeaderParseError, ValueError):
        return None
    line = folded.removesuffix("\n")
    return None if "\n" in line or not line.isascii() else line


def _plain(message: Message, address: Address, sender: str, date: dt.datetime) -> _Plain | None:
    """The message in the direct form, or None when any part of it is outside that form."""
    subject, text, html = _content(message)
    from_line = _from_line(sender)
    recipient = address.value
    mid = message_id(message.delivery_id, sender)
    if from_line is None or not all(_ADDRESS.fullmatch(a) and "=?" not in a for a in (recipient, mid[1:-1])):
        return None
    lines = [
        _header("Subject", subject),
        from_line,
        _header("To", recipient),
        _header("Date", format_datetime(date)),
        _header("Message-ID", mid),
        _header(DELIVERY_HEADER, message.delivery_id),
    ]
    for name, value in message.headers.items():
        if name.lower() in _OWN_HEADERS:
            continue
        if not _HEADER_NAME.fullmatch(name) or name.lower() in _PARSED:
            return None
        lines.append(_header(name, value))
    if text or not html:
        parts = [_text_part(text, "plain", first_of_two=bool(html))]
        if html:
            parts.append(_text_part(html, "html"))
    else:
        parts = [_text_part(html, "html")]
    if None in lines or None in parts:
        return None
    return _Plain(tuple(lines), tuple(parts))  # type: ignore[arg-type]
