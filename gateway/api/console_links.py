"""Console links: an admin hands someone a URL that signs the console in for a while.

`POST /v1/console-links` (admin key) returns `/console/#link=cl_...`. The token is a signed,
expiring delegation of the issuing key, narrowed to the event patterns and admin right the
admin chose; the API accepts it as `Authorization: Bearer cl_...` exactly where it accepts
that narrowed key. It sits in the URL's fragment, which browsers never send to a server, so
it does not land in access logs; the console moves it to the tab's sessionStorage and
takes it out of the address bar.

    cl_<base64url(JSON {"k": issuer key id, "e": [patterns], "a": admin, "x": expiry})>.<signature>

Signed with HMAC-SHA256 under `NOTIGATE_CONSOLE_SECRET` (`gateway.signing`, its own domain).
The server keeps no state: revoking the issuing key voids every link it issued (the issuer
is looked up on each request, through the key store's short cache), and rotating the
secret voids them all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.params import JSONBody

from gateway import signing
from gateway.api.auth import admin_only
from gateway.api.openapi import ADMIN, BODY, KEYED, errors
from gateway.errors import Forbidden, Unauthorized, Unavailable
from gateway.model import EventPattern
from gateway.redact import Secret
from gateway.services import Services
from gateway.store.keys import ApiKey, ApiKeyStore

PREFIX = "cl_"
DEFAULT_TTL = dt.timedelta(hours=8)
MAX_TTL = dt.timedelta(days=7)
_DOMAIN = b"notigate.console-link.v1:"


class LinkClaims(msgspec.Struct, frozen=True):
    k: str  # the issuing key's id
    e: list[str]  # event patterns
    a: bool  # admin
    x: int  # expiry, epoch seconds


@dataclass(frozen=True, slots=True)
class ConsoleLink:
    """What a verified link grants: the issuer's identity with the link's narrower scope."""

    key: ApiKey
    expires_at: dt.datetime


class LinkRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    events: list[EventPattern] | None = None  # default: the issuing key's own patterns
    admin: bool = False
    ttl_seconds: Annotated[int, msgspec.Meta(ge=60, le=int(MAX_TTL.total_seconds()))] = int(
        DEFAULT_TTL.total_seconds()
    )


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who the caller is, so a page can offer only what its key may do."""

    name: str
    kind: Literal["api_key", "console_link"]
    admin: bool
    events: list[str]
    expires_at: dt.datetime | None  # a console link's expiry; None for an API key


class IssuedLink(msgspec.Struct, frozen=True, kw_only=True):
    path: str  # append to the gateway's base URL
    token: str
    events: list[str]
    admin: bool
    expires_at: dt.datetime


def issue(secret: Secret | None, issuer: ApiKey, request: LinkRequest, now: dt.datetime) -> IssuedLink:
    events = list(request.events) if request.events is not None else list(issuer.events)
    for i, pattern in enumerate(events):
        if not covers(issuer.events, pattern):
            raise Forbidden(
                f"key {issuer.name!r} may not grant {pattern!r}: a link is never wider than the key "
                f"that issues it (its patterns: {', '.join(issuer.events) or 'none'})",
                field=f"events[{i}]",
                code="event_not_allowed",
            )
    if request.admin and not issuer.admin:
        raise Forbidden("only an admin key may issue an admin link", field="admin", code="admin_required")
    expires = now + dt.timedelta(seconds=request.ttl_seconds)
    claims = LinkClaims(k=issuer.id, e=events, a=request.admin, x=int(expires.timestamp()))
    token = signing.seal(_key(secret), _DOMAIN, PREFIX, msgspec.json.encode(claims))
    return IssuedLink(
        path=f"/console/#link={token}",
        token=token,
        events=events,
        admin=request.admin,
        expires_at=dt.datetime.fromtimestamp(claims.x, dt.UTC),
    )


async def verify(secret: Secret | None, keys: ApiKeyStore, token: str, now: dt.datetime) -> ConsoleLink:
    """What the link grants now; Unauthorized when forged, expired or its issuer is revoked."""
    try:
        claims = msgspec.json.decode(signing.unseal(_key(secret), _DOMAIN, PREFIX, token), type=LinkClaims)
    except (signing.BadToken, msgspec.DecodeError):
        raise Unauthorized(
            "this console link is malformed or was not issued by this gateway: ask an admin for a new one",
            code="invalid_console_link",
        ) from None
    if claims.x <= now.timestamp():
        raise Unauthorized(
            "this console link has expired: ask an admin for a new one", code="expired_console_link"
        )
    issuer = await keys.by_id(claims.k)
    if issuer is None or issuer.revoked_at is not None:
        raise Unauthorized(
            "the key that issued this console link was revoked, so the link no longer works",
            code="revoked_console_link",
        )
    narrowed = ApiKey(
        id=issuer.id,
        name=issuer.name,
        events=tuple(p for p in claims.e if covers(issuer.events, p)),
        admin=claims.a and issuer.admin,
        rate=issuer.rate,
        burst=issuer.burst,
        created_at=issuer.created_at,
    )
    return ConsoleLink(key=narrowed, expires_at=dt.datetime.fromtimestamp(claims.x, dt.UTC))


def covers(patterns: tuple[str, ...] | list[str], pattern: str) -> bool:
    """Does every event `pattern` matches match one of `patterns`? (`*` covers all, `order.*`
    covers `order.shipped` and `order.eu.*`.)"""
    for mine in patterns:
        if mine in ("*", pattern):
            return True
        if mine.endswith(".*") and pattern != "*" and pattern.startswith(mine[:-1]):
            return True
    return False


def _key(secret: Secret | None) -> Secret:
    if secret is None or not secret:
        raise Unavailable(
            "console links are disabled: set NOTIGATE_CONSOLE_SECRET (32 characters or more) on every "
            "API process; signing in with an API key still works",
            code="console_links_not_configured",
        )
    return secret


def link_authenticator(services: Services) -> Callable[[str], Awaitable[tuple[ApiKey, ConsoleLink] | None]]:
    """For `ApiKeyAuthentication`: a `cl_` token is a console link, anything else is not ours."""

    async def authenticate(token: str) -> tuple[ApiKey, ConsoleLink] | None:
        if not token.startswith(PREFIX):
            return None
        link = await verify(services.settings.console_secret, services.api_keys, token, services.clock())
        return link.key, link

    return authenticate


def console_link_router(services: Services) -> Router:
    @post(
        "/console-links",
        status_code=201,
        summary="Issue a link that signs the console in with a narrowed, expiring copy of this key",
        description="Admin keys only. The link carries the issuer's id, the event patterns (no wider "
        "than the issuer's), admin or not, and an expiry, signed with `NOTIGATE_CONSOLE_SECRET` "
        "(503 while unset); revoking the issuing key voids it. A console link cannot issue links.",
        guards=[admin_only],
        responses=errors(ADMIN, BODY),
    )
    async def create_link(
        data: JSONBody[LinkRequest], request: Request[ApiKey, Any, Any]
    ) -> Response[IssuedLink]:
        if isinstance(request.auth, ConsoleLink):
            raise Forbidden(
                "a console link cannot issue further links: use an API key", code="api_key_required"
            )
        link = issue(services.settings.console_secret, request.user, data, services.clock())
        return Response(link, status_code=201)

    @get(
        "/keys/current",
        summary="The key (or console link) this request is signed with, and its scope",
        description="What the console shows as the signed-in identity; any key may ask.",
        responses=errors(KEYED),
    )
    async def current(request: Request[ApiKey, Any, Any]) -> Principal:
        key, link = request.user, request.auth
        return Principal(
            name=key.name,
            kind="console_link" if isinstance(link, ConsoleLink) else "api_key",
            admin=key.admin,
            events=list(key.events),
            expires_at=link.expires_at if isinstance(link, ConsoleLink) else None,
        )

    return Router(path="/v1", route_handlers=[create_link, current], tags=["console"])
