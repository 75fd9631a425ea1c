"""Admission control: shed `low` intents and bulk requests while the delivery side is behind.

A campaign accepted faster than workers deliver only grows a backlog that delays everything
behind it, and the producer learns nothing. So intake measures the backlog, and past a
threshold answers new `low`-priority intents and bulk requests `429` with `Retry-After`,
while `urgent` and `normal` intake go on: they are what the backlog would otherwise delay.

The backlog is read at most once a second per process (`Backlog.read`): per queue, how many
jobs are due and how long the oldest due one has waited (one Redis round trip for all
queues), and how many recipients of stored bulk requests are not yet expanded (one indexed
query). Deferred jobs (quiet hours, `send_at`) are not due and do not count.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.errors import Overloaded
from gateway.metrics import INTAKE_SHED
from gateway.redis_keys import Keys
from gateway.store.bulk_requests import BulkStore


@dataclass(frozen=True, slots=True)
class QueueBacklog:
    queue: str
    due: int  # jobs whose time has come, still waiting in the queue
    oldest_wait: float  # seconds the oldest of them has waited


@dataclass(frozen=True, slots=True)
class Backlog:
    queues: tuple[QueueBacklog, ...]
    unexpanded: int  # bulk recipients stored and not yet expanded into notifications


@dataclass(frozen=True, slots=True)
class Limits:
    backlog: int  # due jobs in any one queue
    wait: float  # seconds the oldest due job of any queue has waited
    unexpanded: int  # bulk recipients not yet expanded


def overload(backlog: Backlog, limits: Limits) -> str | None:
    """Why new sheddable work is refused, or None when it is welcome."""
    for q in backlog.queues:
        if q.due > limits.backlog:
            return f"queue {q.queue!r} holds {q.due} due jobs (limit {limits.backlog})"
        if q.oldest_wait > limits.wait:
            return f"queue {q.queue!r} has had a job waiting {q.oldest_wait:.0f}s (limit {limits.wait:g}s)"
    if backlog.unexpanded > limits.unexpanded:
        return f"{backlog.unexpanded} bulk recipients wait to be expanded (limit {limits.unexpanded})"
    return None


async def read_backlog(
    redis: Redis, keys: Keys, queues: Sequence[str], now: dt.datetime
) -> list[QueueBacklog]:
    """Each queue's due jobs and the age of the oldest, in one round trip."""
    now_ms = now.timestamp() * 1000
    async with redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.zcount(keys.queue(queue), "-inf", now_ms)
            pipe.zrangebyscore(keys.queue(queue), "-inf", now_ms, start=0, num=1, withscores=True)
        found = await pipe.execute()
    out = []
    for n, queue in enumerate(queues):
        due, oldest = int(found[2 * n]), found[2 * n + 1]
        wait = max(0.0, (now_ms - float(oldest[0][1])) / 1000) if oldest else 0.0
        out.append(QueueBacklog(queue, due, wait))
    return out


class Admission:
    """The intake's view of the backlog, refreshed at most every `every` seconds."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        bulk: BulkStore,
        queues: Callable[[], Sequence[str]],
        limits: Limits,
        clock: Callable[[], dt.datetime],
        every: float = 1.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.bulk = bulk
        self.queues = queues
        self.limits = limits
        self.clock = clock
        self.every = every
        self._read_at = -math.inf
        self._reason: str | None = None
        self._lock = asyncio.Lock()

    async def backlog(self) -> Backlog:
        now = self.clock()
        queues = await read_backlog(self.redis, self.keys, sorted(set(self.queues())), now)
        return Backlog(tuple(queues), await self.bulk.unexpanded())

    async def admit(self, what: str) -> None:
        """Raise `Overloaded` (429 with Retry-After) for sheddable work while overloaded."""
        reason = await self._current()
        if reason is not None:
            INTAKE_SHED.labels(what).inc()
            raise Overloaded(
                f"the gateway is behind on deliveries ({reason}): {what} intake is paused; "
                f"urgent and normal intents are still accepted. Retry in {self._retry_after():g}s",
                retry_after=self._retry_after(),
            )

    def _retry_after(self) -> float:
        return max(5.0, 4 * self.every)

    async def _current(self) -> str | None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._read_at < self.every:
            return self._reason
        async with self._lock:  # one reading for every request that arrives meanwhile
            if loop.time() - self._read_at >= self.every:
                self._reason = overload(await self.backlog(), self.limits)
                self._read_at = loop.time()
        return self._reason
