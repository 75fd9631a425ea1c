"""In-app messages, written to the user's inbox in our own store (`gateway.store.inbox`).

`idempotent`: the item is keyed on the delivery id and written with ON CONFLICT DO NOTHING,
so sending a delivery again (a worker that died after the write) stores nothing new and is
still delivered. The message id is the delivery id, which is also the inbox item's id.

From the rendered message's fields: `title` (else `subject`), `body` (else `text`),
`action_url`, `icon`, `data` (an object) and the message's `category`. Items are written in
group commits (one transaction for whatever concurrent sends have queued).

Once an item's commit is done, and when the registry was given Redis (`AdapterDeps.redis`),
`{"user_id", "item_id"}` is published on `Keys.inbox_channel(user_id)` so the user's open
inbox streams show it at once. Publishing is best effort: the item is stored and delivered
either way, and a stream that missed it shows it on the next page read.

Outcomes (our store has no provider codes):

| what happened                                       | result                               |
|-----------------------------------------------------|--------------------------------------|
| written, or already there from an earlier send      | delivered (message id: delivery id)  |
| neither title nor body, or `data` not an object     | permanent `invalid_message`          |
| a value longer than its column (checked before)     | permanent `rejected`                 |
| the store refused a value (Unstorable: SQLSTATE 22)  | permanent `rejected`                 |
| the database cannot be reached (Unavailable)        | retryable `unreachable`              |
| any other database error                            | retryable `store_error`              |
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from gateway.errors import ConfigError, Conflict, Unavailable, Unstorable
from gateway.providers.base import (
    UNREACHABLE,
    AdapterDeps,
    Address,
    Delivered,
    Limits,
    Message,
    Permanent,
    Retryable,
    SendResult,
)
from gateway.providers.settings import InboxSettings
from gateway.providers.spec import ProviderSpec
from gateway.redis_keys import Keys
from gateway.store import inbox
from gateway.store.database import Database, sqlstate
from gateway.store.group_commit import GroupCommit

log = logging.getLogger("gateway.providers.inbox")


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class InboxAdapter:
    idempotent = True
    settings = InboxSettings
    secrets = InboxSettings.credentials
    limits = Limits()

    def __init__(
        self,
        name: str,
        channel: str,
        database: Database,
        *,
        clock: Callable[[], dt.datetime] = _utc_now,
        redis: Redis | None = None,
        keys: Keys | None = None,
    ) -> None:
        self.name = name
        self.channel = channel
        self.database = database
        self.clock = clock
        self.redis = redis
        self.keys = keys
        # Items are written in group commits: one transaction per batch, run by the batcher's
        # own task. On SQLite a write transaction per in-app message competed with every other
        # writer for the one write lock; and a caller cancelled mid-write (a job timeout) can
        # never leave a transaction open, since the caller does not run it.
        self.writes: GroupCommit[inbox.InboxItem, bool] = GroupCommit(
            database, inbox.add_many, clock=clock, name="inbox", max_batch=200
        )
        self._started: asyncio.Lock | None = None
        self._running = False

    @classmethod
    def from_spec(cls, spec: ProviderSpec, deps: AdapterDeps) -> InboxAdapter:
        spec.typed(InboxSettings)  # it takes none: a stray setting is a mistake
        if deps.database is None:
            raise ConfigError(
                f"provider {spec.name!r} (adapter inbox) writes to the store, but no database was given: "
                "build the registry with AdapterDeps(database=...)"
            )
        return cls(spec.name, spec.channel, deps.database, redis=deps.redis, keys=deps.keys)

    async def send(self, message: Message, address: Address, *, idempotency_key: str) -> SendResult:
        fields = message.fields
        title = _text(fields.get("title") or fields.get("subject"))
        body = _text(fields.get("body") or fields.get("text"))
        data = fields.get("data")
        if not title and not body:
            return Permanent("invalid_message", f"{self.name}: the rendered message has no title and no body")
        if data is not None and not isinstance(data, dict):
            return Permanent(
                "invalid_message", f"{self.name}: fields.data must be an object, not {type(data).__name__}"
            )
        item = inbox.InboxItem(
            id=message.delivery_id,
            notification_id=message.notification_id,
            user_id=address.value if address.kind == "user" else message.user_id,
            event=message.event,
            category=message.category,
            title=title,
            body=body,
            action_url=_text(fields.get("action_url")) or None,
            icon=_text(fields.get("icon")) or None,
            data=data or {},
            created_at=self.clock(),
        )
        problem = inbox.too_long(item)
        if problem is not None:
            return Permanent("rejected", f"{self.name}: the store cannot hold this item: {problem}")
        try:
            await self._start()
            written = await self.writes.submit(item)
        except Unavailable:
            return Retryable(f"{self.name}: the database is unavailable", code=UNREACHABLE)
        except (Unstorable, Conflict) as exc:  # this item alone: its batch was retried without it
            return Permanent("rejected", f"{self.name}: {exc.message}")
        except DBAPIError as exc:
            state = sqlstate(exc)
            return Retryable(
                f"{self.name}: the store failed ({type(exc).__name__}, SQLSTATE {state or 'unknown'})",
                code="store_error",
            )
        if written:
            await self._announce(item)
        return Delivered(provider_message_id=message.delivery_id)

    async def _announce(self, item: inbox.InboxItem) -> None:
        """Tell the user's open streams; a Redis that fails costs them the live update only."""
        if self.redis is None or self.keys is None:
            return
        payload = json.dumps({"user_id": item.user_id, "item_id": item.id})
        try:
            await self.redis.publish(self.keys.inbox_channel(item.user_id), payload)
        except (RedisError, OSError) as exc:
            log.warning(
                "%s: item %s is stored, but its live update was not published (%s)",
                self.name,
                item.id,
                type(exc).__name__,
            )

    async def _start(self) -> None:
        if self._running:
            return
        if self._started is None:
            self._started = asyncio.Lock()
        async with self._started:
            if not self._running:
                await self.writes.start()
                self._running = True

    async def close(self) -> None:
        """Stop the writer (after its last batch); the database belongs to whoever gave it."""
        if self._running:
            await self.writes.stop()
            self._running = False


def _text(value: Any) -> str:
    return "" if value is None else str(value)
