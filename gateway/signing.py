"""Stateless signed tokens: a payload and its HMAC-SHA256, both base64url, under one secret.

Shared by the inbox tokens (`gateway/api/inbox_tokens.py`) and the unsubscribe links
(`gateway/tracking/unsubscribe.py`). Each use signs under its own *domain* string, so a
signature made for one purpose can never pass as a token of another, even when an operator
gives both the same secret. The server keeps no token state: any process holding the secret
verifies any token.

    <prefix><base64url(payload)>.<base64url(signature)>

Both parts decode strictly: only the URL-safe alphabet, no padding, and no stray bits in
the last character, so each token has exactly one spelling. Python's own decoder drops
characters outside the alphabet and ignores those bits, which let `abc=`, `ab!c` or a last
character changed in its unused bits pass as the same token. Tokens issued before were
always written this way, so they keep working. (itsdangerous would do the same, but in its
own format: every unsubscribe link already sent in an email would stop working.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from gateway.redact import Secret


class BadToken(ValueError):
    """The token is malformed or its signature does not match: it was not issued by us."""


def seal(key: Secret, domain: bytes, prefix: str, payload: bytes) -> str:
    return f"{prefix}{b64(payload)}.{b64(_sign(key, domain, payload))}"


def unseal(key: Secret, domain: bytes, prefix: str, token: str) -> bytes:
    """The payload of a token this key sealed under this domain; BadToken otherwise."""
    body = token[len(prefix) :] if token.startswith(prefix) else None
    encoded_payload, dot, encoded_signature = (body or "").partition(".")
    try:
        payload = unb64(encoded_payload)
        signature = unb64(encoded_signature)
    except (binascii.Error, ValueError):
        payload = signature = b""
    if not dot or not payload or not hmac.compare_digest(signature, _sign(key, domain, payload)):
        raise BadToken("the token is malformed or its signature does not match")
    return payload


def _sign(key: Secret, domain: bytes, payload: bytes) -> bytes:
    return hmac.new(key.reveal().encode(), domain + payload, hashlib.sha256).digest()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def unb64(text: str) -> bytes:
    """The bytes `b64` wrote as `text`; binascii.Error for any other spelling."""
    if not _ALPHABET.fullmatch(text) or len(text) % 4 == 1:
        raise binascii.Error("not unpadded base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64(raw) != text:  # the last character carried bits the bytes do not have
        raise binascii.Error("not the canonical spelling of its bytes")
    return raw
