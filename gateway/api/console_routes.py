"""Serves the console's files at `/console` with headers that keep it a closed page.

The files are open (no key: the page is how one signs in); everything the page shows comes
from the API with the key the user gives it. Each response carries a Content-Security-Policy
that allows scripts only from the gateway's own files (no inline script, no `eval`, no other
origin), so a string from data that slipped into the page as markup still could not run.
Inline styles are allowed because an email's HTML, previewed in a sandboxed frame that
inherits this policy, is styled inline the way mail clients expect.
"""

from __future__ import annotations

from litestar import Response, Router
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

from gateway.api.auth import PUBLIC
from gateway.console import STATIC

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


async def _secure(response: Response) -> Response:  # type: ignore[type-arg]
    response.headers.update(SECURITY_HEADERS)
    return response


def console_router() -> Router:
    return create_static_files_router(
        path="/console",
        directories=[STATIC],
        html_mode=True,
        name="console",
        opt=PUBLIC,
        after_request=_secure,
        # Revalidated on every load: a gateway upgrade must never pair a new API with old scripts.
        cache_control=CacheControlHeader(no_cache=True),
        include_in_schema=False,
    )
