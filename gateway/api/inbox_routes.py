"""The in-app inbox over HTTP: a user's feed, read and archive marks, and a live stream.

`/v1/inbox...` is called from the user's browser with an inbox token (`gateway.api.inbox_tokens`),
never an API key: `Authorization: Bearer it_...`, or `?token=it_...` where a header cannot be
set (an `EventSource`). The token decides whose inbox it is; another user's item id is 404,
as if it did not exist. An admin API key issues the tokens: `POST /v1/users/{id}/inbox-token`.

The stream (`GET /v1/inbox/stream`, Server-Sent Events) subscribes to the user's Redis
channel, which the inbox adapter publishes to after each item's commit, and reads each item
from the store, so it only ever shows committed items. Events:

- `unread` on connect: `{"unread_count": n}`;
- `item` per new item (`id:` the item id): `{"item": {...}, "unread_count": n}`;
- a comment line every 15 s, so proxies keep the connection open and a dead one is noticed.
Each stream holds a Redis connection, so a user may hold at most
`NOTIGATE_INBOX_STREAMS_PER_USER` open per process (`StreamSlots`); one more answers 429.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Request, Router, get, post
from litestar.params import PathParameter, QueryParameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from gateway.api import inbox_tokens
from gateway.api.auth import PUBLIC, admin_only
from gateway.api.openapi import ADMIN, PARAMS, Cursor, ErrorStatus, UserIdInPath, errors
from gateway.errors import ClientError, Forbidden, NotFound, RateLimited, Unauthorized, Unavailable
from gateway.services import Services
from gateway.store import inbox
from gateway.store.inbox import InboxItem
from gateway.store.keys import ApiKey

log = logging.getLogger("gateway.api.inbox")

HEARTBEAT = 15.0  # seconds between comment lines on an idle stream
MAX_LIMIT = 200


class InboxPage(msgspec.Struct, frozen=True):
    items: list[InboxItem]
    next_cursor: str | None
    unread_count: int


class InboxMark(msgspec.Struct, frozen=True):
    item: InboxItem
    unread_count: int


class ReadAll(msgspec.Struct, frozen=True):
    marked: int
    unread_count: int


class InboxToken(msgspec.Struct, frozen=True):
    token: str
    user_id: str
    expires_at: dt.datetime


# In the OpenAPI document: these routes take a user's inbox token, not an API key.
TOKEN: list[dict[str, list[str]]] = [{"inboxToken": []}]
# A missing, foreign or expired token is 401, another user's inbox 403, no inbox secret 503.
TOKEN_ERRORS: tuple[ErrorStatus, ...] = (401, 403, 503)
ItemId = Annotated[str, PathParameter(description="An inbox item's id")]
OwnUserId = Annotated[
    str | None, QueryParameter(description="Optional: the token's own user (403 for anyone else)")
]


class TooManyStreams(RateLimited):
    code = "too_many_streams"


class StreamSlots:
    """The live streams each user holds open in this process, at most `limit` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: Counter[str] = Counter()

    def take(self, user_id: str) -> Callable[[], None]:
        """A slot for one more stream, or 429; returns what gives it back (once, however often called)."""
        if self.open[user_id] >= self.limit:
            raise TooManyStreams(
                f"{self.limit} live inbox streams are open for this user already "
                "(NOTIGATE_INBOX_STREAMS_PER_USER): close one first",
                retry_after=HEARTBEAT,
            )
        self.open[user_id] += 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self.open[user_id] -= 1
                if self.open[user_id] <= 0:
                    del self.open[user_id]

        return give_back


def inbox_router(services: Services, *, heartbeat: float = HEARTBEAT) -> Router:
    database = services.database
    slots = StreamSlots(services.settings.inbox_streams_per_user)

    def reader(request: Request[Any, Any, Any], user_id: str | None = None) -> str:
        """The user the request's inbox token names; 403 when the caller asked for another's."""
        token = _token_of(request)
        owner = inbox_tokens.verify(services.settings.inbox_secret, token, services.clock())
        if user_id is not None and user_id != owner:
            raise Forbidden(
                "this inbox token is for another user: it reads only its own user's inbox",
                field="user_id",
                code="inbox_user_mismatch",
            )
        return owner

    async def mark(user_id: str, item_id: str, archived: bool) -> InboxMark:
        now = services.clock()
        marked = await (inbox.archive if archived else inbox.mark_read)(database, user_id, item_id, now)
        item = await inbox.get(database, user_id, item_id) if marked else None
        if item is None:
            raise NotFound(f"your inbox has no item {item_id!r}", field="item_id", code="unknown_item")
        return InboxMark(item=item, unread_count=await inbox.unread_count(database, user_id))

    @get(
        "/inbox",
        summary="The token's user's inbox, newest first, a page at a time",
        description="Items not archived, with `next_cursor` for the next page and the unread count.",
        security=TOKEN,
        opt=PUBLIC,  # the handler checks the inbox token
        responses=errors(TOKEN_ERRORS, PARAMS),
    )
    async def feed(
        request: Request[Any, Any, Any],
        limit: Annotated[int, QueryParameter(description=f"Items per page, 1 to {MAX_LIMIT}")] = 50,
        cursor: Cursor = None,
        unread: Annotated[bool, QueryParameter(description="Only unread items")] = False,
        user_id: OwnUserId = None,
    ) -> InboxPage:
        owner = reader(request, user_id)
        if not 1 <= limit <= MAX_LIMIT:
            raise ClientError(
                f"limit {limit} is out of range: ask for 1 to {MAX_LIMIT} items",
                field="limit",
                code="invalid_limit",
            )
        items, next_cursor = await inbox.page(
            database, owner, limit=limit, cursor=cursor or None, unread_only=unread
        )
        count = await inbox.unread_count(database, owner)
        return InboxPage(items=items, next_cursor=next_cursor, unread_count=count)

    @post(
        "/inbox/{item_id:str}/read",
        summary="Mark one item read",
        description="Answers the item and the new unread count; another user's item is a 404.",
        status_code=200,
        security=TOKEN,
        opt=PUBLIC,  # the handler checks the inbox token
        responses=errors(TOKEN_ERRORS, PARAMS, 404),
    )
    async def read(request: Request[Any, Any, Any], item_id: ItemId) -> InboxMark:
        return await mark(reader(request), item_id, archived=False)

    @post(
        "/inbox/{item_id:str}/archive",
        summary="Archive one item (out of the feed and the count)",
        description="Answers the item and the new unread count; another user's item is a 404.",
        status_code=200,
        security=TOKEN,
        opt=PUBLIC,  # the handler checks the inbox token
        responses=errors(TOKEN_ERRORS, PARAMS, 404),
    )
    async def archive(request: Request[Any, Any, Any], item_id: ItemId) -> InboxMark:
        return await mark(reader(request), item_id, archived=True)

    @post(
        "/inbox/read-all",
        summary="Mark every unread item read (`?up_to=` a time: only items created by then)",
        description="Answers how many items were marked and the new unread count.",
        status_code=200,
        security=TOKEN,
        opt=PUBLIC,  # the handler checks the inbox token
        responses=errors(TOKEN_ERRORS, PARAMS),
    )
    async def read_all(
        request: Request[Any, Any, Any],
        up_to: Annotated[
            dt.datetime | None,
            QueryParameter(description="Only items created by then; RFC 3339 with a zone"),
        ] = None,
    ) -> ReadAll:
        owner = reader(request)
        if up_to is not None and up_to.tzinfo is None:
            raise ClientError(
                "up_to needs a time zone, e.g. 2026-11-21T09:30:00Z", field="up_to", code="invalid_up_to"
            )
        marked = await inbox.mark_all_read(database, owner, services.clock(), up_to=up_to)
        return ReadAll(marked=marked, unread_count=await inbox.unread_count(database, owner))

    @get(
        "/inbox/stream",
        summary="New items and the unread count, live (Server-Sent Events)",
        description="A `text/event-stream` for `EventSource`, which cannot set headers: give the "
        'token as `?token=it_...`. Events: `unread` on connect (`{"unread_count": n}`), then '
        '`item` per new item (`id:` the item id; `{"item": {...}, "unread_count": n}`), and '
        f"a comment line every {HEARTBEAT:g} s on an idle stream. 503 while Redis cannot be reached.",
        security=TOKEN,
        opt=PUBLIC,  # the handler checks the inbox token
        media_type="text/event-stream",
        responses=errors(TOKEN_ERRORS, PARAMS, 429),
    )
    async def stream(
        request: Request[Any, Any, Any],
        # Declared for the document; `reader` reads it (or the header) like every inbox route.
        token: Annotated[
            str | None,
            QueryParameter(description="The inbox token (`it_...`), for clients that cannot set headers"),
        ] = None,
        user_id: OwnUserId = None,
    ) -> ServerSentEvent:
        owner = reader(request, user_id)
        give_back = slots.take(owner)
        pubsub = services.redis.pubsub()
        try:
            # Subscribed before the first count is read, so no item falls between the two.
            await pubsub.subscribe(services.keys.inbox_channel(owner))
        except (RedisError, OSError):
            give_back()
            await _close(pubsub)
            raise Unavailable(
                "the live inbox needs Redis, which cannot be reached", code="redis_unavailable"
            ) from None
        return ServerSentEvent(_events(services, pubsub, owner, heartbeat, give_back))

    @post(
        "/users/{user_id:str}/inbox-token",
        summary="Issue a user's inbox token (admin keys only)",
        description="A token good for that user's inbox alone, until it expires; signed with "
        "`NOTIGATE_INBOX_SECRET` (503 while unset). Hand it to the user's browser, never an API key.",
        status_code=201,
        security=[{"apiKey": []}],
        guards=[admin_only],
        responses=errors(ADMIN, PARAMS),
    )
    async def issue_token(
        user_id: UserIdInPath,
        request: Request[ApiKey, ApiKey, Any],
        ttl: Annotated[
            int | None,
            QueryParameter(
                description="Seconds the token lives, 1 to "
                f"{int(inbox_tokens.MAX_TTL.total_seconds())}; default "
                f"{int(inbox_tokens.DEFAULT_TTL.total_seconds())}"
            ),
        ] = None,
    ) -> InboxToken:
        # Checked as a number first: a timedelta of 10^15 seconds overflows.
        if ttl is not None and not 1 <= ttl <= inbox_tokens.MAX_TTL.total_seconds():
            raise ClientError(
                f"ttl {ttl} is out of range: give 1 to {int(inbox_tokens.MAX_TTL.total_seconds())} seconds",
                field="ttl",
                code="invalid_ttl",
            )
        lifetime = inbox_tokens.DEFAULT_TTL if ttl is None else dt.timedelta(seconds=ttl)
        expires_at = (services.clock() + lifetime).replace(microsecond=0)
        token = inbox_tokens.issue(services.settings.inbox_secret, user_id, expires_at)
        return InboxToken(token=token, user_id=user_id, expires_at=expires_at)

    return Router(
        path="/v1",
        tags=["inbox"],
        route_handlers=[feed, read, archive, read_all, stream, issue_token],
    )


def _token_of(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    token = value.strip() if scheme.lower() == "bearer" else ""
    token = token or request.query_params.get("token", "")
    if not token:
        raise Unauthorized(
            "send the inbox token as `Authorization: Bearer it_...` or `?token=it_...`",
            code="missing_inbox_token",
        )
    if not token.startswith(inbox_tokens.PREFIX):
        raise Unauthorized(
            "the inbox takes an inbox token (`it_...`, from `POST /v1/users/{user_id}/inbox-token`), "
            "not an API key: API keys must never reach a browser",
            code="invalid_inbox_token",
        )
    return token


async def _events(
    services: Services, pubsub: PubSub, user_id: str, heartbeat: float, give_back: Callable[[], None]
) -> AsyncIterator[ServerSentEventMessage]:
    """The stream's events until the client goes away (Litestar then cancels this generator)."""
    database = services.database
    try:
        count = await inbox.unread_count(database, user_id)
        yield ServerSentEventMessage(event="unread", data=_json({"unread_count": count}))
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=heartbeat)
            if message is None:
                yield ServerSentEventMessage(comment="heartbeat", data=None)
                continue
            item_id = _item_id(message.get("data"))
            item = await inbox.get(database, user_id, item_id) if item_id else None
            if item is None:
                continue
            count = await inbox.unread_count(database, user_id)
            yield ServerSentEventMessage(
                event="item", id=item.id, data=_json({"item": item, "unread_count": count})
            )
    except (RedisError, OSError) as exc:
        # Headers are sent: the stream just ends, and EventSource reconnects by itself.
        log.warning("an inbox stream lost Redis (%s); the client will reconnect", type(exc).__name__)
    finally:
        give_back()
        await _close(pubsub)


async def _close(pubsub: PubSub) -> None:
    # Shielded: on a client disconnect this runs inside a cancelled scope.
    with anyio.CancelScope(shield=True):
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()  # type: ignore[no-untyped-call]


def _item_id(data: Any) -> str | None:
    try:
        value = json.loads(data).get("item_id")
    except (TypeError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()
