"""The published contract: the statuses each operation answers, and the reference page offline.

Litestar documents a route's success and, for any route with input, a 400 in its own
`{status_code, detail, extra}` shape, which the gateway never sends: every error it answers is
`{"error": {"code", "message", "field"}}` (`gateway.api.errors`). Each route therefore names
the statuses it really answers with `responses=errors(...)`, built from the bundles below, and
`tests/api/test_openapi.py` (a schemathesis run against a live gateway among them) holds the
document to what the gateway does.

`/schema` renders with Swagger UI's files from the `openapi-ui-bundles` package, served by the
gateway itself under `/schema/assets/`: the page works on a machine with no internet.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Router
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.params import PathParameter, QueryParameter
from litestar.static_files import create_static_files_router
from openapi_ui_bundles import swagger_ui

from gateway import __version__
from gateway.api.auth import PUBLIC
from gateway.api.errors import ErrorBody

ErrorStatus = Literal[400, 401, 403, 404, 409, 413, 415, 422, 429, 503]

# What each status means on this API; the body's `code` says which case it is.
MEANINGS: dict[ErrorStatus, str] = {
    400: "The request cannot be read: the body is not JSON (`malformed_json`), or a required "
    "query parameter is missing (`bad_request`)",
    401: "No credential, or one that is unknown, expired, revoked or badly signed",
    403: "The credential is valid but does not allow this call: an event outside the key's scope "
    "(`event_not_allowed`), a call for admin keys (`admin_required`), another user's inbox",
    404: "Nothing by that id, or nothing this key may see (another producer's notification is as "
    "invisible as a missing one)",
    409: "The request conflicts with the state it would change",
    413: "The body is larger than the limit (`NOTIGATE_MAX_BODY_BYTES`, bulk: `NOTIGATE_MAX_BULK_BYTES`)",
    415: "The body is not `application/json`",
    422: "A field is invalid; `field` names it (e.g. `intent.priority`), `message` says what is valid",
    429: "The key's intake quota is spent (`rate_limited`), or deliveries are behind and this "
    "sheddable work waits (`overloaded`); `Retry-After` says in how many seconds to retry",
    503: "A dependency (database, Redis) cannot be reached, or the feature is not configured on this "
    "gateway (the message names the variable); nothing was stored half-way, retry later",
}

# Bundles the routes combine. An API key on the request: 401 without a valid one, 503 when the
# key store is unreachable. Admin routes add 403. Input: a JSON body can be unreadable (400),
# too large (413) or invalid (422); query and path parameters, missing (400) or invalid (422).
KEYED: tuple[ErrorStatus, ...] = (401, 503)
ADMIN: tuple[ErrorStatus, ...] = (401, 403, 503)
BODY: tuple[ErrorStatus, ...] = (400, 413, 422)
PARAMS: tuple[ErrorStatus, ...] = (400, 422)


def errors(*groups: ErrorStatus | tuple[ErrorStatus, ...]) -> dict[int, ResponseSpec]:
    """`responses=` for a route: each status it answers besides its successes, in the error shape."""
    statuses: set[ErrorStatus] = set()
    for group in groups:
        statuses.update(group if isinstance(group, tuple) else (group,))
    return {
        status: ResponseSpec(data_container=ErrorBody, description=MEANINGS[status], generate_examples=False)
        for status in sorted(statuses)
    }


def raw_body(media_type: str, schema: Schema, description: str) -> type[Operation]:
    """`operation_class=` for a route that reads its body itself (a provider's signed webhook,
    a one-click form): Litestar documents only bodies it parses, so the operation says it."""

    class WithBody(Operation):
        def __init__(self, **fields: Any) -> None:
            super().__init__(**fields)
            content = {media_type: OpenAPIMediaType(schema=schema)}
            self.request_body = RequestBody(content=content, description=description, required=True)

    return WithBody


# Parameters several routes take, described once.
NotificationId = Annotated[
    str, PathParameter(description="A notification's id, as `POST /v1/intents` answered it")
]
UserIdInPath = Annotated[str, PathParameter(description="The recipient's id, as intents name it")]
Cursor = Annotated[
    str | None,
    QueryParameter(description="The previous page's `next_cursor`; leave it out for the first page"),
]

ASSETS = "/schema/assets"


def assets_router() -> Router:
    """Swagger UI's files, from the installed package: no CDN between a reader and the API's
    reference. Open like the document itself."""
    return create_static_files_router(
        path=ASSETS,
        directories=[swagger_ui.static_path],
        opt=PUBLIC,
        include_in_schema=False,
        send_as_attachment=False,
    )


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Notigate",
        version=__version__,
        description="Policy-driven notification gateway. Routes under `/v1` take an API key as "
        "`Authorization: Bearer <key>` unless they say otherwise (the inbox takes a user's inbox "
        "token; provider webhooks and unsubscribe links carry their own signature; probes and "
        'metrics are open). Every error body is `{"error": {"code", "message", "field"}}`: `code` '
        "is machine-readable, `field` names the input at fault (or is null).",
        # The document and its pages are open: marked on their router, like every open route.
        openapi_router=Router(path="/schema", route_handlers=[], opt=PUBLIC, include_in_schema=False),
        render_plugins=[
            SwaggerRenderPlugin(
                path=["/", "/swagger"],
                js_url=f"{ASSETS}/swagger-ui-bundle.js",
                css_url=f"{ASSETS}/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
                favicon=f"<link rel='icon' type='image/png' href='{ASSETS}/favicon-32x32.png'>",
            )
        ],
        components=Components(
            security_schemes={
                "apiKey": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="`<key id>.<secret>` from `notigate keys create`",
                ),
                "inboxToken": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A user's inbox token, `it_...` (`POST /v1/users/{id}/inbox-token`); "
                    "also taken as `?token=` where no header can be set (EventSource)",
                ),
            }
        ),
    )
