"""Bearer API keys for every call, and the scope checks the routes ask for.

`Authorization: Bearer <key id>.<secret>`. A missing or unknown key is 401; a key asking
for what its scopes do not allow is 403; both in the contract's error shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

from gateway.errors import Forbidden, Unauthorized
from gateway.store.keys import ApiKey, ApiKeyStore

OPEN_PATHS = {"/schema", "/healthz", "/readyz", "/metrics"}
# The inbox routes take a user-scoped inbox token, not an API key: each handler verifies it
# (`gateway.api.inbox_routes`). Only `/v1/inbox` and what is under it: `/v1/inboxes` is not.
INBOX_PATHS = r"^/v1/inbox(/|$)"
# Provider webhooks (signed by the provider) and one-click unsubscribe links (signed by us):
# each handler verifies its signature (`gateway.api.tracking_routes`). Exactly these routes.
TRACKING_PATHS = r"^/v1/(webhooks/sendgrid|webhooks/twilio/(status|inbound)|unsubscribe/[^/]+)$"


# Another kind of bearer credential that stands for a key (console links): returns the key it
# grants and what to expose as `request.auth`, or None for a token that is not of its kind.
Delegation = Callable[[str], Awaitable[tuple[ApiKey, object] | None]]


class ApiKeyAuthentication(AbstractAuthenticationMiddleware):
    """Routes marked `exclude_from_auth` in their `opt` (the console's static files) are open."""

    def __init__(self, app: ASGIApp, keys: ApiKeyStore, delegation: Delegation | None = None) -> None:
        super().__init__(app, exclude=[*(f"^{p}" for p in OPEN_PATHS), INBOX_PATHS, TRACKING_PATHS])
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


def require_admin(key: ApiKey) -> None:
    if not key.admin:
        raise Forbidden(f"key {key.name!r} has no admin rights, which this call needs", code="admin_required")


def require_event(key: ApiKey, event: str, field: str = "event") -> None:
    if not key.may_send(event):
        raise Forbidden(
            f"key {key.name!r} may not send {event!r} (it may send {', '.join(key.events) or 'nothing'})",
            field=field,
            code="event_not_allowed",
        )
