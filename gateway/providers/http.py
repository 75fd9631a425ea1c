"""The one HTTP/1.1 client of the adapters that POST to a provider (webhook, SendGrid).

Why aiohttp, behind this seam: measured against the same local endpoint from 50 tasks
(bench/README.md, "Delivery: issue 11 results"), a bare aiohttp session spends ~90 µs of
CPU per POST where a bare httpx client spends ~1,700-2,000 µs: its connector takes an idle
connection from a per-host deque, where httpcore's pool walks every connection on every
request. The
adapters see only `HttpClient.post`, an `Answer` and an `HttpFailure`, so the choice is
made here once.

One client per adapter, kept for the adapter's life: connections are kept alive and
reused (a provider's TLS handshake is paid once per connection, not per message). The
session is opened on first use, inside the running event loop, as aiohttp requires.

`timeout` bounds each step, as httpx's did: getting a connection (from the pool or a new
one), and each wait for the answer's bytes. What a failure means for the message is what
the adapters need, so it is classified once here (`HttpFailure.kind`, `.sent`):

| what happened                                   | kind          | sent (the provider may have it) |
|-------------------------------------------------|---------------|---------------------------------|
| no connection in time (connect, pool wait)      | `timeout`     | no                              |
| refused, DNS, TLS                               | `unreachable` | no                              |
| the request went out, no answer in time         | `timeout`     | yes                             |
| the answer is not HTTP, or stopped mid-way      | `malformed`   | yes                             |
| the connection broke after it was open          | `unreachable` | yes                             |

Cookies are never kept: one provider's (or one user's webhook's) cookie must not ride on
the next request. Redirects are not followed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import aiohttp

from gateway.providers.base import MALFORMED, TIMEOUT, UNREACHABLE, Retryable

FailureKind = Literal["timeout", "unreachable", "malformed"]
_CODES: dict[FailureKind, str] = {"timeout": TIMEOUT, "unreachable": UNREACHABLE, "malformed": MALFORMED}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # names compare case-insensitively
    body: bytes


class HttpFailure(Exception):
    """No answer to use: `kind` says what went wrong, `sent` whether the provider may have the request."""

    def __init__(self, kind: FailureKind, sent: bool, cause: BaseException) -> None:
        super().__init__(f"{kind} ({type(cause).__name__})")
        self.kind = kind
        self.sent = sent
        self.cause = cause

    def retryable(self, who: str, *, ambiguous: bool) -> Retryable:
        """The adapter's result: `who` names the provider in the error; `ambiguous` when the
        provider cannot drop a repeat and may have taken the request."""
        what = {
            "timeout": "no answer in time",
            "unreachable": "cannot connect" if not self.sent else "the connection broke",
            "malformed": "the answer is not valid HTTP",
        }[self.kind]
        return Retryable(
            f"{who}: {what} ({type(self.cause).__name__})",
            code=_CODES[self.kind],
            ambiguous=ambiguous and self.sent,
        )


def _classify(exc: BaseException) -> HttpFailure:
    # Order matters: ConnectionTimeoutError is a ServerTimeoutError and a TimeoutError,
    # ClientConnectorError a ClientOSError, ServerDisconnectedError a ClientConnectionError.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return HttpFailure("timeout", False, exc)
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.InvalidURL):
        return HttpFailure("unreachable", False, exc)
    if isinstance(exc, TimeoutError):  # SocketTimeoutError: waiting for the answer
        return HttpFailure("timeout", True, exc)
    if isinstance(
        exc, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError | aiohttp.ClientPayloadError
    ):
        return HttpFailure("malformed", True, exc)
    return HttpFailure("unreachable", True, exc)


class HttpClient:
    def __init__(self, *, timeout: float, limit: int = 100) -> None:
        self.timeout = timeout
        self.limit = limit  # connections open at once; a send past it waits for one (within `timeout`)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limit),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.timeout, sock_connect=self.timeout, sock_read=self.timeout
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST `body`; the answer whatever its status, or `HttpFailure`."""
        try:
            async with self._open().post(url, data=body, headers=headers, allow_redirects=False) as response:
                return Answer(response.status, response.headers, await response.read())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _classify(exc) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
