"""Hand committed jobs to Redis at once, and note in the outbox that Redis took them.

The job rows are already durable; pushing them right after the commit is what makes an
urgent message go out in milliseconds rather than at the relay's next pass. If Redis is
unreachable the push is simply dropped: the relay finds the unmarked rows and pushes them
when Redis is back. Marks are written in batches, in the background, to spare a commit
per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from redis.exceptions import RedisError

from gateway.queue.enqueue import Enqueuer
from gateway.store.database import Database
from gateway.store.intake import NewJob
from gateway.store.tables import JobRow

log = logging.getLogger("gateway.queue")
jobs = JobRow.__table__  # type: ignore[attr-defined]
PUSH_BATCH = 1000


class Dispatcher:
    def __init__(
        self,
        database: Database,
        enqueuer: Enqueuer,
        clock: Callable[[], dt.datetime],
        flush_every: float = 0.2,
    ) -> None:
        self.database = database
        self.enqueuer = enqueuer
        self.clock = clock
        self.flush_every = flush_every
        self._marks: list[str] = []
        self._pending: list[NewJob] = []
        self._pusher: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="dispatch-marks")

    async def stop(self) -> None:
        if self._pusher is not None:
            await asyncio.gather(self._pusher, return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        with contextlib.suppress(Exception):
            await self.flush()

    def dispatch(self, new_jobs: Sequence[NewJob]) -> None:
        """Push in the background; the caller does not wait for Redis.

        Jobs dispatched while a push is on its way go together in the next one: one round
        trip for all the intents of a commit, not one each.
        """
        if not new_jobs:
            return
        self._pending.extend(new_jobs)
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.create_task(self._push_pending(), name="dispatch-push")

    async def _push_pending(self) -> None:
        await asyncio.sleep(0)  # the other intents of this commit dispatch in this same tick
        while self._pending:
            batch, self._pending = self._pending[:PUSH_BATCH], self._pending[PUSH_BATCH:]
            await self.push(batch)

    async def push(self, new_jobs: Sequence[NewJob]) -> bool:
        try:
            taken = await self.enqueuer.push(new_jobs)
        except (RedisError, OSError) as exc:
            log.info("could not enqueue %d jobs now (%s); the relay will", len(new_jobs), exc)
            return False
        self._marks.extend(taken)
        return True

    async def flush(self) -> None:
        marks, self._marks = self._marks, []
        if not marks:
            return
        try:
            async with self.database.begin() as connection:
                for start in range(0, len(marks), 500):
                    await connection.execute(
                        sa.update(jobs)
                        .where(jobs.c.id.in_(marks[start : start + 500]), jobs.c.enqueued_at.is_(None))
                        .values(enqueued_at=self.clock())
                    )
        except Exception:
            self._marks = marks + self._marks  # a later flush will mark them; the relay may push again
            raise

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every)
            try:
                await self.flush()
            except Exception as exc:  # the database is down: marks wait, nothing is lost
                log.info("could not mark enqueued jobs yet: %s", exc)
