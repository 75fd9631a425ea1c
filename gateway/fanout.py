"""Bulk fan-out: workers expand stored bulk requests into notifications, at a pace the
delivery side sustains.

`POST /v1/intents/bulk` only stores the request (`gateway.store.bulk_requests`) and answers.
Each worker with a relay runs a `BulkFanout`: it claims the oldest unfinished request with a
lease, and stores its recipients a chunk at a time through the same intake path as single
intents (`Intake.expand`: decided, reserved, group-committed, enqueued), moving the cursor
after each chunk. Before each chunk it looks at the queues: while any holds more than
`expand_backlog` due jobs, expansion waits, so a campaign of a million recipients becomes
jobs no faster than workers send them and never buries the critical queue.

Crash safety: see the store's docstring. The recipients of the chunk a dying worker was
storing are expanded again by the next claimant, as idempotent replays of the same keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Sequence

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.admission import read_backlog
from gateway.errors import ClientError, Unavailable
from gateway.failpoints import failpoint
from gateway.intake import Intake
from gateway.metrics import BULK_EXPANDED
from gateway.model import BulkIntent
from gateway.redis_keys import Keys
from gateway.store.bulk_requests import BulkStore, Claimed

log = logging.getLogger(__name__)


def recipients_of(claimed: Claimed, user_ids: Sequence[str]) -> BulkIntent:
    """The stored request for some of its recipients. Without an idempotency key of its own
    the bulk id stands in, so that expanding a chunk twice replays instead of sending twice."""
    body = {**claimed.intent, "user_ids": list(user_ids)}
    body["idempotency_key"] = body.get("idempotency_key") or claimed.id
    return msgspec.convert(body, BulkIntent, strict=False)


class BulkFanout:
    def __init__(
        self,
        *,
        store: BulkStore,
        intake: Intake,
        redis: Redis,
        keys: Keys,
        queues: Callable[[], Sequence[str]],
        owner: str,
        clock: Callable[[], dt.datetime],
        lease: dt.timedelta,
        expand_backlog: int,
        chunk: int = 100,  # one group commit's worth: short write transactions between deliveries'
        idle: float = 1.0,
    ) -> None:
        self.store = store
        self.intake = intake
        self.redis = redis
        self.keys = keys
        self.queues = queues
        self.owner = owner
        self.clock = clock
        self.lease = lease
        self.expand_backlog = expand_backlog
        self.chunk = chunk
        self.idle = idle

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                worked = await self.expand_one(stop)
            except (Unavailable, RedisError, OSError) as exc:  # Redis or the database away
                log.info("bulk expansion waiting: %s", exc)
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.idle)

    async def expand_one(self, stop: asyncio.Event | None = None) -> bool:
        """Claim one unfinished request and expand it to the end (or until `stop`, or until
        the claim is lost); False when there was nothing to claim."""
        stop = stop or asyncio.Event()
        claimed = await self.store.claim(self.owner, self.clock(), self.lease)
        if claimed is None:
            return False
        position = claimed.expanded
        try:
            while position < len(claimed.user_ids) and not stop.is_set():
                if await self._behind():
                    if not await self._advance(claimed, position, []):
                        return True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.idle)
                    continue
                chunk = claimed.user_ids[position : position + self.chunk]
                request = recipients_of(claimed, chunk)
                results = await self.intake.expand(request.intents(), claimed.producer, claimed.id)
                failpoint("bulk.chunk_stored")  # stored, cursor not moved: the next claimant replays it
                refusals = [
                    f"{user_id}: {result.message}"
                    for user_id, result in zip(chunk, results, strict=True)
                    if isinstance(result, ClientError)
                ]
                position += len(chunk)
                BULK_EXPANDED.inc(len(chunk))
                if not await self._advance(claimed, position, refusals):
                    return True
        except BaseException:
            with contextlib.suppress(Exception):
                await self.store.release(claimed, self.owner)
            raise
        if position < len(claimed.user_ids):  # stopping: leave the rest to another worker at once
            await self.store.release(claimed, self.owner)
        else:
            log.info("bulk request %s expanded: %d recipients", claimed.id, len(claimed.user_ids))
        return True

    async def _advance(self, claimed: Claimed, position: int, refusals: list[str]) -> bool:
        kept = await self.store.advance(
            claimed, self.owner, expanded=position, refusals=refusals, now=self.clock(), lease=self.lease
        )
        if not kept:
            log.warning("bulk request %s: the claim went to another worker; leaving it", claimed.id)
        return kept

    async def _behind(self) -> bool:
        queues = await read_backlog(self.redis, self.keys, sorted(set(self.queues())), self.clock())
        return any(q.due > self.expand_backlog for q in queues)
