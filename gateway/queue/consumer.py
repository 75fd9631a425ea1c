"""One tier's queue, consumed for as long as the worker process runs, whatever Redis does.

arq's `Worker.main()` ends on the first Redis error: a Redis that restarts (or is replaced
by an empty one on the same address) would leave a worker process that still relays and
decides but never delivers again. So each queue has a `QueueConsumer` that runs arq's loop
and, when it ends for any reason other than a requested stop, logs why, waits (backing off
from 0.5 s to 10 s, reset after a healthy minute) and starts a fresh arq `Worker` with new
connections. Jobs the old loop had started finish on their own: their outcomes go to the
database, not to Redis, and anything Redis lost meanwhile is pushed again by the relay.

`notigate_worker_consuming{queue}` is 1 while the loop runs on a connected Redis, 0 between
a failure and the next successful start: the worker's health signal for an alert or a probe.
An error that is not a connection problem (a bug) is not retried: it ends the consumer, and
the worker process exits non-zero so that its supervisor restarts it (`WorkerProcess.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from arq.typing import StartupShutdown
from arq.worker import Worker
from redis.exceptions import RedisError

from gateway.metrics import WORKER_CONSUMING, WORKER_RESTARTS

log = logging.getLogger("gateway.worker")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
HEALTHY_AFTER = 60.0  # a loop that ran this long starts its next backoff from the beginning


class QueueConsumer:
    """Runs arq's loop for one queue, restarting it with fresh connections after Redis failures."""

    def __init__(
        self, queue: str, make_worker: Callable[[StartupShutdown], Worker], stop: asyncio.Event
    ) -> None:
        self.queue = queue
        self.make_worker = make_worker  # a new arq Worker each time (new pool, new state), given its hook
        self.stop = stop
        self.current: Worker | None = None
        self.starts = 0
        self._retiring: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_FIRST
        while not self.stop.is_set():
            worker = self.current = self.make_worker(self._started)
            began = loop.time()
            try:
                await worker.async_run()
                why = "its loop returned"
            except (RedisError, OSError, TimeoutError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            finally:
                WORKER_CONSUMING.labels(self.queue).set(0)
            if self.stop.is_set():
                return
            self._retire(worker)
            if loop.time() - began >= HEALTHY_AFTER:
                backoff = BACKOFF_FIRST
            WORKER_RESTARTS.labels(self.queue).inc()
            log.warning("queue %s stopped consuming (%s); reconnecting in %.1f s", self.queue, why, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _started(self, ctx: dict[Any, Any]) -> None:
        """arq's startup hook: the pool is connected and the loop is about to poll."""
        self.starts += 1
        WORKER_CONSUMING.labels(self.queue).set(1)
        if self.starts > 1:
            log.info("queue %s consuming again", self.queue)

    def running(self) -> list[asyncio.Task[Any]]:
        """Jobs still running, in this loop and in loops retired after a failure."""
        current = list(self.current.tasks.values()) if self.current is not None else []
        return [t for t in (*current, *self._retiring) if not t.done()]

    async def close(self) -> None:
        """After a stop: let running jobs finish (the caller bounds the wait), then disconnect."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self.current is not None:
            try:
                await self.current.close()
            except (RedisError, OSError, TimeoutError) as exc:
                log.info("queue %s closed without Redis: %s", self.queue, type(exc).__name__)

    def _retire(self, worker: Worker) -> None:
        """Let a failed loop's running jobs end, then drop its connections, in the background."""
        worker.allow_pick_jobs = False
        task = asyncio.create_task(_drain(worker), name=f"retire-{self.queue}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


async def _drain(worker: Worker) -> None:
    # A job's own failure was logged by arq or lies in the database; a job cut off from Redis
    # fails only in arq's bookkeeping afterwards. Neither is this task's to raise.
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    pool = worker.pool
    if pool is not None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await pool.close(close_connection_pool=True)
