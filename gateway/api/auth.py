"""Bearer API keys for every call, and the scope checks the routes ask for.

`Authorization: Bearer <key id>.<secret>`. A missing or unknown key is 401; a key asking
for what its scopes do not allow is 403; both in the contract's error shape.

Which routes take no key is said on the route, not by path patterns here: a handler or
router with `opt=PUBLIC` is skipped by the middleware (Litestar's `exclude_from_auth` opt
key). Those are the probes and `/metrics`, the OpenAPI document and its assets, the
inbox's routes (each verifies a user's inbox token, `gateway.api.inbox_routes`), and the
provider webhooks and unsubscribe links (each verifies its signature,
`gateway.api.tracking_routes`). Routes only an admin key may call carry the `admin_only`
guard, on their router when all of its routes are admin's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

from gateway.errors import Forbidden, Unauthorized
from gateway.store.keys import ApiKey, ApiKeyStore

# The `opt` of a route that takes no API key (it is open, or checks a credential of its own).
PUBLIC: dict[str, Any] = {"exclude_from_auth": True}


# Another kind of bearer credential that stands for a key (console links): returns the key it
# grants and what to expose as `request.auth`, or None for a token that is not of its kind.
Delegation = Callable[[str], Awaitable[tuple[ApiKey, object] | None]]


class ApiKeyAuthentication(AbstractAuthenticationMiddleware):
    """Every route but those marked `opt=PUBLIC` needs a key."""

    def __init__(self, app: ASGIApp, keys: ApiKeyStore, delegation: Delegation | None = None) -> None:
        super().__init__(app, exclude_from_auth_key=next(iter(PUBLIC)))
        self.keys = keys
        self.delegation = delegation

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "send an API key as `Authorization: Bearer <key>` (create one with `notigate keys create`)",
                code="missing_api_key",
            )
        if self.delegation is not None and (delegated := await self.delegation(token.strip())) is not None:
            return AuthenticationResult(user=delegated[0], auth=delegated[1])
        key = await self.keys.authenticate(token.strip())
        if key is None:
            raise Unauthorized("this API key is unknown or revoked", code="invalid_api_key")
        return AuthenticationResult(user=key, auth=key)


def admin_only(connection: ASGIConnection[Any, ApiKey, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of the routes only an admin key may call: 403 `admin_required` for any other."""
    key = connection.user
    if not key.admin:
        raise Forbidden(f"key {key.name!r} has no admin rights, which this call needs", code="admin_required")


def require_event(key: ApiKey, event: str, field: str = "event") -> None:
    if not key.may_send(event):
        raise Forbidden(
            f"key {key.name!r} may not send {event!r} (it may send {', '.join(key.events) or 'nothing'})",
            field=field,
            code="event_not_allowed",
        )
