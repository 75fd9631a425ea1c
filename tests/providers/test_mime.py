"""`mime.compose`: the direct form writes what the standard library writes, or steps aside."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from gateway.providers import mime
from gateway.providers.base import Address, Message

SENDER = "Notigate <noreply@notigate.example>"
WHEN = dt.datetime(2026, 12, 6, 1, 2, 3, tzinfo=dt.UTC)
_BOUNDARY = re.compile(rb"={15}\d{19}==(?:\.\d+)?")


def _library(message: Message, address: Address, sender: str, date: dt.datetime, **flat: object) -> bytes:
    return mime.flatten(mime.build(message, address, sender, date=date), **flat)  # type: ignore[arg-type]


def _same(direct: bytes, library: bytes) -> bool:
    """Equal once the random multipart boundary is the same in both."""
    return _BOUNDARY.sub(b"BOUNDARY", direct) == _BOUNDARY.sub(b"BOUNDARY", library)


def _message(fields: dict[str, object], headers: dict[str, str], delivery_id: str = "d_01JTEST") -> Message:
    return Message("email", "order.shipped", "n_1", delivery_id, "u_1", fields=fields, headers=headers)


atext = st.sampled_from("abcxyzABZ0189!#$%&'*+/=?^_`{|}~-")
atoms = st.text(atext, min_size=1, max_size=6)
labels = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,5}[A-Za-z0-9])?", fullmatch=True)
addresses = st.builds(
    lambda local, domain: f"{'.'.join(local)}@{'.'.join(domain)}",
    st.lists(atoms, min_size=1, max_size=3),
    st.lists(labels, min_size=2, max_size=3),
)
# Printable ASCII with runs of spaces, now and then something the direct form leaves alone.
values = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.text(st.sampled_from(" a=?Zé\t"), max_size=12),
    st.builds(lambda n: "x" * n, st.integers(970, 1000)),
)
bodies = st.one_of(
    st.text(st.sampled_from("ab \n\r—é<>&"), max_size=60),
    st.builds(lambda n, tail: "y" * n + tail, st.integers(990, 1000), st.sampled_from(["", "é", "\nz"])),
)
header_names = st.sampled_from(["List-Unsubscribe", "List-Unsubscribe-Post", "X-Campaign", "Reply-To", "x-a"])


@settings(max_examples=400)
@given(
    address=addresses,
    subject=values,
    text=st.one_of(st.none(), bodies),
    html=st.one_of(st.none(), bodies),
    headers=st.dictionaries(header_names, values, max_size=3),
    delivery_id=st.one_of(st.just("d_01JTEST"), st.text(st.sampled_from("ab.-_=?é"), min_size=1, max_size=8)),
    linesep=st.sampled_from(["\n", "\r\n"]),
    eight_bit=st.booleans(),
)
@example(  # a multipart message whose lines are all at the limit
    address="a@b.co",
    subject="x" * 989,
    text="t" * 998,
    html="h" * 998,
    headers={},
    delivery_id="d_1",
    linesep="\r\n",
    eight_bit=True,
)
def test_the_direct_form_writes_what_the_library_writes(
    address: str,
    subject: str,
    text: str | None,
    html: str | None,
    headers: dict[str, str],
    delivery_id: str,
    linesep: str,
    eight_bit: bool,
) -> None:
    message = _message({"subject": subject, "text": text, "html": html}, headers, delivery_id)
    recipient = Address("email", address)
    try:
        library = _library(message, recipient, SENDER, WHEN, linesep=linesep, eight_bit=eight_bit)
    except Exception as exc:  # the library refuses it (a ValueError, or its parser trips): so does compose
        with pytest.raises(type(exc)):
            mime.compose(message, recipient, SENDER, date=WHEN)
        return
    composed = mime.compose(message, recipient, SENDER, date=WHEN)
    flat = composed.flatten(linesep=linesep, eight_bit=eight_bit)
    event("direct" if composed.built is None else "library")
    assert _same(flat, library)


def test_a_common_message_takes_the_direct_form() -> None:
    """The shipped templates' mail (ASCII headers, a UTF-8 body, an unsubscribe link) is
    within the direct form: the fast path is the usual one, not a rarity."""
    message = _message(
        {"subject": "Your order A-1001 has shipped", "text": "Tracking — 1Z999\n", "html": "<p>Hi</p>"},
        {
            "List-Unsubscribe": "<https://notigate.example/u/abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    composed = mime.compose(message, Address("email", "ada@example.com"), SENDER, date=WHEN)
    assert composed.plain is not None and composed.built is None
    raw = composed.flatten()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == "Your order A-1001 has shipped" and parsed["To"] == "ada@example.com"
    plain_part = parsed.get_body(("plain",))
    html_part = parsed.get_body(("html",))
    assert plain_part is not None and html_part is not None
    assert plain_part.get_content() == "Tracking — 1Z999\n" and html_part.get_content() == "<p>Hi</p>\n"
    assert _same(raw, _library(message, Address("email", "ada@example.com"), SENDER, WHEN))


def test_a_seven_bit_session_gets_the_library_encoding_of_an_eight_bit_body() -> None:
    message = _message({"subject": "Hi", "text": "Grüße\n"}, {})
    composed = mime.compose(message, Address("email", "ada@example.com"), SENDER, date=WHEN)
    seven = composed.flatten(linesep="\r\n", eight_bit=False)
    assert composed.built is not None  # built then, for this session only
    assert b"Content-Transfer-Encoding: base64" in seven or b"quoted-printable" in seven
    ada = Address("email", "ada@example.com")
    assert seven == _library(message, ada, SENDER, WHEN, linesep="\r\n", eight_bit=False)


@pytest.mark.parametrize("recipient", ["ada@example..com", "not an address", "a@b@c.co"])
def test_an_address_no_header_can_carry_is_refused_as_build_refuses_it(recipient: str) -> None:
    message = _message({"subject": "Hi", "text": "x"}, {})
    with pytest.raises(mime.InvalidRecipient):
        mime.compose(message, Address("email", recipient), SENDER)


def test_a_line_break_in_a_header_is_refused() -> None:
    message = _message({"subject": "Hi", "text": "x"}, {"X-Campaign": "a\r\nBcc: eve@example.com"})
    with pytest.raises(ValueError, match=r"linefeed|carriage"):
        mime.compose(message, Address("email", "ada@example.com"), SENDER)
