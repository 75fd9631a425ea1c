"""User-scoped inbox tokens: what a browser holds to read one user's inbox, and nothing else.

An API key may send to anyone and must never reach a browser. An inbox token is issued by an
admin key (`POST /v1/users/{user_id}/inbox-token`) and handed to the user's page; it names
one user and an expiry, signed with HMAC-SHA256 under `NOTIGATE_INBOX_SECRET`:

    it_<base64url("user_id.expiry")>.<base64url(signature)>

The server keeps no token state, so any API process verifies any token; the price is that a
token cannot be revoked before it expires, which is why lifetimes are short (24 h at most).
Rotating the secret invalidates every token at once.
"""

from __future__ import annotations

import datetime as dt

from gateway import signing
from gateway.errors import Unauthorized, Unavailable
from gateway.redact import Secret

PREFIX = "it_"
DEFAULT_TTL = dt.timedelta(hours=1)
MAX_TTL = dt.timedelta(hours=24)
# Signed along with the payload, so a signature made for anything else under the same secret
# can never pass as an inbox token.
_DOMAIN = b"notigate.inbox-token.v1:"


def issue(secret: Secret | None, user_id: str, expires_at: dt.datetime) -> str:
    payload = f"{user_id}.{int(expires_at.timestamp())}".encode()
    return signing.seal(_key(secret), _DOMAIN, PREFIX, payload)


def verify(secret: Secret | None, token: str, now: dt.datetime) -> str:
    """The user the token was issued for; Unauthorized when it is malformed, forged or expired."""
    try:
        payload = signing.unseal(_key(secret), _DOMAIN, PREFIX, token)
    except signing.BadToken:
        raise Unauthorized(
            "this inbox token is malformed or was not issued by this gateway: "
            "get a new one from `POST /v1/users/{user_id}/inbox-token`",
            code="invalid_inbox_token",
        ) from None
    user_id, _, expiry = payload.decode().rpartition(".")
    if int(expiry) <= now.timestamp():
        raise Unauthorized(
            "this inbox token has expired: get a new one from `POST /v1/users/{user_id}/inbox-token`",
            code="expired_inbox_token",
        )
    return user_id


def _key(secret: Secret | None) -> Secret:
    if secret is None or not secret:
        raise Unavailable(
            "inbox tokens are disabled: set NOTIGATE_INBOX_SECRET (32 characters or more) "
            "on every API process",
            code="inbox_not_configured",
        )
    return secret
