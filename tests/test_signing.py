"""Signed tokens (`gateway/signing.py`) have exactly one spelling: padded, re-spelt or
altered base64 is refused for every kind of token, and tokens written before stay valid."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import signing
from gateway.api import inbox_tokens
from gateway.errors import Unauthorized
from gateway.redact import Secret
from gateway.tracking import unsubscribe

KEY = Secret("a-signing-secret-for-tests-0123456789abcdef")
T0 = dt.datetime(2026, 11, 21, 9, 30, tzinfo=dt.UTC)


def standard(text: str) -> str:
    """The same base64 in the standard alphabet (`+/` for `-_`)."""
    return text.replace("-", "+").replace("_", "/")


def respellings(token: str, prefix: str) -> list[str]:
    """Spellings of the same bytes (or of bytes Python's lenient decoder would read back
    unchanged) that a strict decoder refuses."""
    payload, _, signature = token.removeprefix(prefix).partition(".")
    last = signature[-1]
    # Each base64 character carries 6 bits; the last one of a 32-byte signature (43
    # characters) uses only 4 of them, so flipping its lowest bit leaves the bytes unchanged.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sibling = alphabet[alphabet.index(last) ^ 1]
    spellings = [
        f"{prefix}{payload}.{signature}=",
        f"{prefix}{payload}==.{signature}",
        f"{prefix}{payload}.{signature[:-1]}{sibling}",
        # stray characters, four so the padding the old decoder added still fits
        f"{prefix}{payload[:2]}!!!!{payload[2:]}.{signature}",
        f"{prefix}{payload}.{signature[:5]}    {signature[5:]}",
        f"{prefix}{payload}.{signature[:5]}\n\r\n\t{signature[5:]}",
        f"{prefix}{standard(payload)}.{standard(signature)}",
    ]
    return [s for s in spellings if s != token]  # the last one when the token has no - or _


def lenient(text: str) -> bytes:
    """What the decoder used before read: Python's own, padding added."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_python_alone_reads_those_spellings_back_as_the_same_bytes() -> None:
    """The regression's premise: the old decoder took each re-spelling for the token."""
    token = signing.seal(KEY, b"d:", "x_", b"user-1.1700000000")
    payload, _, signature = token.removeprefix("x_").partition(".")
    for forged in respellings(token, "x_"):
        p, _, s = forged.removeprefix("x_").partition(".")
        assert (lenient(p), lenient(s)) == (lenient(payload), lenient(signature)), forged


def test_every_respelling_is_refused() -> None:
    token = signing.seal(KEY, b"d:", "x_", b"user-1.1700000000")
    assert signing.unseal(KEY, b"d:", "x_", token) == b"user-1.1700000000"
    for forged in respellings(token, "x_"):
        with pytest.raises(signing.BadToken):
            signing.unseal(KEY, b"d:", "x_", forged)


def test_inbox_and_unsubscribe_tokens_refuse_respellings() -> None:
    """Console links unseal through the same `signing.unseal`."""
    inbox = inbox_tokens.issue(KEY, "u_1", T0 + dt.timedelta(minutes=5))
    assert inbox_tokens.verify(KEY, inbox, T0) == "u_1"
    for forged in respellings(inbox, inbox_tokens.PREFIX):
        with pytest.raises(Unauthorized) as refused:
            inbox_tokens.verify(KEY, forged, T0)
        assert refused.value.code == "invalid_inbox_token"
    link = unsubscribe.issue(KEY, "u_1", "marketing")
    assert unsubscribe.verify(KEY, link) == ("u_1", "marketing")
    for forged in respellings(link, unsubscribe.PREFIX):
        with pytest.raises(unsubscribe.InvalidUnsubscribeToken):
            unsubscribe.verify(KEY, forged)


def test_a_token_written_by_the_old_encoder_still_verifies() -> None:
    """Tokens already in emails and browsers were written as unpadded base64url."""
    payload = b'["u_1","marketing"]'
    old = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    signature = signing._sign(KEY, b"d:", payload)
    token = f"x_{old}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"
    assert signing.unseal(KEY, b"d:", "x_", token) == payload


@given(st.binary(max_size=64))
def test_decoding_inverts_encoding_and_nothing_else(raw: bytes) -> None:
    text = signing.b64(raw)
    assert signing.unb64(text) == raw
    for other in (text + "=", "=" + text, text + "!", text + "A"):
        if other != text:
            try:
                decoded = signing.unb64(other)
            except ValueError:
                continue
            assert signing.b64(decoded) == other  # a different spelling decodes to different bytes
