"""Stateless signed tokens: a payload and its HMAC-SHA256, both base64url, under one secret.

Shared by the inbox tokens (`gateway/api/inbox_tokens.py`) and the unsubscribe links
(`gateway/tracking/unsubscribe.py`). Each use signs under its own *domain* string, so a
signature made for one purpose can never pass as a token of another, even when an operator
gives both the same secret. The server keeps no token state: any process holding the secret
verifies any token.

    <prefix><base64url(payload)>.<base64url(signature)>
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

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


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
