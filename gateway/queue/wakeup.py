"""Workers woken the moment a job is queued, instead of polling their queues.

arq's worker polls its queue every `poll_delay`: at 20 ms, three idle queues cost a worker
5-12% of a core, and a one-time code still waits for the next poll. Here:

- `Enqueuer.push` publishes each queue it filled on `<prefix>:wake` (in the same Lua call
  that queues the jobs, so a wake never arrives before its job);
- each worker process keeps one subscription (`Wakeups`), and sets the event of the
  queue's consumer;
- `WakeableWorker` replaces arq's fixed-step poll loop with one that, after taking what it
  can, rests until the next job is due, a wake-up arrives, one of its own jobs ends (a slot
  frees), or `idle` seconds pass: the fallback while the subscription itself is down.

Only the loop is replaced, and it hands arq's `start_jobs` only the due jobs not already
running here; claiming, running and finishing jobs stay arq's. The loop uses
two members arq keeps private (`_pool`, `_poll_iteration`), so arq is pinned below 0.29 in
pyproject.toml and `tests/test_wakeup.py` holds the behaviour to account.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from arq.connections import create_pool
from arq.worker import Worker
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.redis_keys import Keys

log = logging.getLogger("gateway.worker")

BUSY_REST = 0.05  # jobs are due but none could start (running elsewhere, or every slot taken)


class WakeableWorker(Worker):
    """arq's Worker whose poll loop rests until there is something to do (see the module)."""

    def __init__(self, *args: Any, wake: asyncio.Event, idle: float, **kwargs: Any) -> None:
        super().__init__(*args, on_job_end=self._job_ended, **kwargs)
        self.wake = wake
        self.idle = idle

    async def main(self) -> None:
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        while True:
            self.wake.clear()  # anything queued from here on is seen by this pass or wakes the rest
            started = self._jobs_started()
            await self._poll_iteration()
            if self._jobs_started() == started:
                await self._rest()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's, less the jobs this worker is running now.

        A job stays in its queue until it ends, so each pass of the loop reads the running
        ones again, and arq asks Redis about each (WATCH, EXISTS, ZSCORE, UNWATCH) before
        skipping it; here a pass follows every job's end, which made those questions two in
        three of a busy worker's job starts. Left out, they cost nothing, and a job whose
        in-progress mark expired while it ran here is not started by this worker a second time.
        """
        running = {job_id for job_id, task in self.tasks.items() if not task.done()}
        await super().start_jobs([j for j in job_ids if j.decode() not in running])

    async def _rest(self) -> None:
        first = await self.pool.zrange(self.queue_name, 0, 0, withscores=True)
        if not first:
            delay = self.idle
        else:
            delay = first[0][1] / 1000 - time.time()
            delay = BUSY_REST if delay <= 0 else min(delay, self.idle)
        await rest(self.wake, delay)

    async def _job_ended(self, ctx: dict[Any, Any]) -> None:
        self.wake.set()  # a slot is free: due jobs may be waiting for it


async def rest(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set, for up to `seconds`.

    Not `asyncio.wait_for`: on Python 3.11 a cancellation that arrives as the event is set is
    dropped there (it returns the event's result), and the poll loop above, which runs until
    cancelled, then ran on after its worker was told to stop: the stop hung until the test
    harness gave up (a rare failure of the suite). `asyncio.timeout` keeps the cancellation.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class Wakeups:
    """One worker process's subscription to the wake-up channel, fanned out to its queues."""

    def __init__(self, redis: Redis, keys: Keys, events: Mapping[str, asyncio.Event]) -> None:
        self.redis = redis
        self.channel = keys.wake()
        self.events = events

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until `stop`; a lost subscription is opened again (queues poll meanwhile)."""
        while not stop.is_set():
            try:
                await self._listen(stop)
            except (RedisError, OSError, TimeoutError, RuntimeError) as exc:
                # RuntimeError: redis-py's pub/sub when its connection was dropped under it.
                log.info("wake-ups interrupted (%s): queues poll until they are back", type(exc).__name__)
                for event in self.events.values():
                    event.set()  # whatever was queued meanwhile is looked at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def _listen(self, stop: asyncio.Event) -> None:
        async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(self.channel)
            while not stop.is_set():
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                data = message.get("data")
                queue = data.decode() if isinstance(data, bytes) else str(data)
                event = self.events.get(queue)
                if event is not None:
                    event.set()
