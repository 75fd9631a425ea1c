"""The outbox relay: whatever Redis did not take, or has forgotten, is handed to it again.

Three duties, each idempotent (enqueueing a job Redis still holds is a no-op):
- rows never marked enqueued (the push after commit failed, or the process died first)
  are pushed, critical tier first;
- when Redis has lost its data (restart without persistence: our epoch key is gone),
  every unfinished job is pushed again;
- a job arq ran and ended (a failure, a timeout) while its outbox row is still there gets
  a new id and is pushed again at once (arq refuses an ended job's id for a minute);
- a job due a while ago whose job key Redis no longer holds (lost) is pushed again.
A job's row disappears only when a worker has finished it, so the relay can always tell
unfinished work from done work without trusting Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import Unavailable
from gateway.ids import new_id
from gateway.queue.enqueue import Enqueuer
from gateway.redis_keys import Keys
from gateway.store.database import Database
from gateway.store.intake import NewJob, insert_jobs
from gateway.store.tables import DeliveryRow, JobRow

log = logging.getLogger("gateway.relay")
jobs = JobRow.__table__  # type: ignore[attr-defined]
deliveries = DeliveryRow.__table__  # type: ignore[attr-defined]


def oldest_taken(queue: str, before: dt.datetime, limit: int) -> sa.Select[Any]:
    """A queue's oldest jobs due before `before` that Redis took (on `ix_jobs_queue_run_at`)."""
    return (
        sa.select(jobs.c.id, jobs.c.queue, jobs.c.deliveries, jobs.c.priority, jobs.c.run_at)
        .where(jobs.c.queue == queue, jobs.c.enqueued_at.is_not(None), jobs.c.run_at < before)
        .order_by(jobs.c.run_at)
        .limit(limit)
    )


# The queues that hold jobs, one index search each on `ix_jobs_queue_run_at` (the next queue
# name after the last one), where DISTINCT would read every row of the outbox.
QUEUES_PRESENT = sa.text(
    """
    WITH RECURSIVE present(queue) AS (
        SELECT min(queue) FROM jobs
        UNION ALL
        SELECT (SELECT min(queue) FROM jobs WHERE queue > present.queue) FROM present
         WHERE present.queue IS NOT NULL
    )
    SELECT queue FROM present WHERE queue IS NOT NULL
    """
)


class Relay:
    def __init__(
        self,
        database: Database,
        redis: Redis,
        keys: Keys,
        enqueuer: Enqueuer,
        clock: Callable[[], dt.datetime],
        *,
        grace: dt.timedelta = dt.timedelta(seconds=1),
        overdue: dt.timedelta = dt.timedelta(seconds=60),
        batch: int = 500,
        interval: float = 1.0,  # rows wait `grace` (1 s) for the intake's own push anyway
        reconcile_every: float = 5.0,
    ) -> None:
        self.database = database
        self.redis = redis
        self.keys = keys
        self.enqueuer = enqueuer
        self.clock = clock
        self.grace = grace  # leave fresh rows to the intake's own push
        self.overdue = overdue
        self.batch = batch
        self.interval = interval
        self.reconcile_every = reconcile_every
        self.pushed = 0

    async def run(self, stop: asyncio.Event) -> None:
        last_reconcile = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                if loop.time() - last_reconcile >= self.reconcile_every:
                    await self.reconcile()
                    last_reconcile = loop.time()
                moved = await self.pass_once()
            except (RedisError, OSError, Unavailable) as exc:
                log.info("relay waiting for its dependencies: %s", exc)
                moved = 0
            if moved < self.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)

    async def rescue_orphans(self) -> int:
        """Deliveries left `sending` by a worker that died get a new job once their lease is over.

        arq would re-run the dead worker's job too, but only after the job timeout plus ten
        seconds; a fresh job lets any worker reclaim the deliveries as soon as their lease
        ends. Whichever job comes second finds them done: the claim is a compare-and-set.
        """
        now = self.clock()
        async with self.database.connect() as connection:
            orphans = list(
                await connection.execute(
                    sa.select(deliveries.c.id, deliveries.c.queue)
                    .where(deliveries.c.status == "sending", deliveries.c.lease_until < now)
                    .limit(self.batch)
                )
            )
        if not orphans:
            return 0
        by_queue: dict[str, list[str]] = {}
        for row in orphans:
            by_queue.setdefault(row.queue or "standard", []).append(row.id)
        rescue = [NewJob(new_id("j"), queue, ids, now, 0) for queue, ids in by_queue.items()]
        async with self.database.begin() as connection:
            await insert_jobs(connection, rescue, now, created_at=now - self.grace)
        log.warning("%d deliveries were left sending by a worker that stopped: queued again", len(orphans))
        return len(orphans)

    async def pass_once(self) -> int:
        """Push rows Redis has not taken; returns how many."""
        now = self.clock()
        async with self.database.connect() as connection:
            rows = list(
                await connection.execute(
                    sa.select(jobs.c.id, jobs.c.queue, jobs.c.deliveries, jobs.c.run_at, jobs.c.priority)
                    .where(jobs.c.enqueued_at.is_(None), jobs.c.created_at <= now - self.grace)
                    .order_by(jobs.c.priority, jobs.c.created_at)
                    .limit(self.batch)
                )
            )
        if not rows:
            return 0
        pending = [NewJob(r.id, r.queue, list(r.deliveries), r.run_at, r.priority) for r in rows]
        taken = await self.enqueuer.push(pending)
        async with self.database.begin() as connection:
            await connection.execute(
                sa.update(jobs)
                .where(jobs.c.id.in_(taken), jobs.c.enqueued_at.is_(None))
                .values(enqueued_at=now)
            )
        self.pushed += len(taken)
        log.info("relay pushed %d jobs Redis had not taken", len(taken))
        return len(taken)

    async def reconcile(self) -> int:
        """Find jobs Redis lost; returns how many were marked for pushing again."""
        await self.rescue_orphans()
        now = self.clock()
        if not await self.redis.exists(self.keys.epoch()):
            async with self.database.begin() as connection:
                reset = await connection.execute(
                    sa.update(jobs).where(jobs.c.enqueued_at.is_not(None)).values(enqueued_at=None)
                )
            await self.redis.set(self.keys.epoch(), now.isoformat())
            if reset.rowcount:
                log.warning("Redis lost its data: %d unfinished jobs will be pushed again", reset.rowcount)
            return int(reset.rowcount or 0)
        return await self._recover(now)

    async def _recover(self, now: dt.datetime) -> int:
        """Jobs whose arq run ended without finishing them, and jobs Redis lost: queued again.

        Per queue, the oldest jobs that are due: arq runs a queue oldest first, so a job that
        ran and ended is among them even behind a backlog of thousands.
        """
        async with self.database.connect() as connection:
            queues = [r[0] for r in await connection.execute(QUEUES_PRESENT)]
            due = [
                row
                for queue in queues
                for row in await connection.execute(oldest_taken(queue, now - self.grace, self.batch))
            ]
        ended, gone = await self.enqueuer.whereabouts([r.id for r in due])
        overdue = {r.id for r in due if r.run_at < now - self.overdue}
        missing = [job_id for job_id in gone if job_id in overdue]
        if ended:
            # arq keeps an ended job's result (and refuses its id) for a minute: new ids.
            ended_ids = set(ended)
            again = [
                NewJob(new_id("j"), r.queue, list(r.deliveries), now, r.priority)
                for r in due
                if r.id in ended_ids
            ]
            async with self.database.begin() as connection:
                await connection.execute(sa.delete(jobs).where(jobs.c.id.in_(ended)))
                await insert_jobs(connection, again, now, created_at=now - self.grace)
            log.warning(
                "%d jobs ended before their deliveries were done (failed or timed out): queued again",
                len(ended),
            )
        if missing:
            async with self.database.begin() as connection:
                await connection.execute(
                    sa.update(jobs).where(jobs.c.id.in_(missing)).values(enqueued_at=None)
                )
            log.warning("%d overdue jobs were missing from Redis: pushing them again", len(missing))
        return len(ended) + len(missing)
