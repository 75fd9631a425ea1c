"""Bearer API keys for every call, and the scope checks the routes ask for.

`Authorization: Bearer <key id>.<secret>`. A missing or unknown key is 401; a key asking
for what its scopes do not allow is 403; both in the contract's error shape.
"""

from __future__ import annotations

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
TRACKING_PATHS = r"^/v1/(webhooks/sendgrid|webhooks/twilio/status|unsubscribe/[^/]+)$"


class ApiKeyAuthentication(AbstractAuthenticationMiddleware):
    def __init__(self, app: ASGIApp, keys: ApiKeyStore) -> None:
        super().__init__(app, exclude=[*(f"^{p}" for p in OPEN_PATHS), INBOX_PATHS, TRACKING_PATHS])
        self.keys = keys

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
