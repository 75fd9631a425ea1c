"""Micro-batching: many concurrent callers, one round of I/O, each caller its own answer.

Requests that arrive while a batch is being processed wait for the next batch and are
processed together: one query for all their users, one Redis pipeline for all their
histories, one transaction for all their rows. Under light load a batch holds one
request and nobody waits; under heavy load the cost of each round trip is shared. A
batch's `process` returns one result or exception per item, so one bad request fails
alone. An exception from `process` itself fails the whole batch, unless the batcher was
told (`isolate`) that such an exception is some item's fault: then the batch is split in
halves and each half processed again, down to the item at fault, which alone gets the
error (`isolating`). Only a `process` that can run again without effect (a transaction
that rolled back) may be isolated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from gateway.errors import Unavailable

log = logging.getLogger("gateway.batching")

T = TypeVar("T")
R = TypeVar("R")
Process = Callable[[list[T]], Awaitable[list[R | BaseException]]]
Isolate = Callable[[Exception], bool]


def not_an_outage(exc: Exception) -> bool:
    """The `isolate` of work that fails as a whole only when a dependency is away."""
    return not isinstance(exc, Unavailable)


async def isolating(process: Process[T, R], items: list[T], isolate: Isolate) -> list[R | BaseException]:
    """`process(items)`, or, when it raises an error `isolate` says is some item's, the halves
    processed apart, recursively: one poisoned item costs about 2·log2(n) extra rounds and
    fails alone. An error `isolate` does not claim (an outage) is raised for the whole batch."""
    try:
        return await process(items)
    except Exception as exc:
        if not isolate(exc):
            raise
        if len(items) == 1:
            return [exc]
        half = len(items) // 2
        return [
            *await isolating(process, items[:half], isolate),
            *await isolating(process, items[half:], isolate),
        ]


class MicroBatcher(Generic[T, R]):
    """See the module docstring. One batch is processed at a time; work that must not wait
    for another kind's batches (urgent intents) gets a batcher of its own."""

    def __init__(
        self, process: Process[T, R], *, name: str, max_batch: int = 500, isolate: Isolate | None = None
    ) -> None:
        self.process = process
        self.name = name
        self.max_batch = max_batch
        self.isolate = isolate  # see the module docstring
        self._waiting: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()  # nothing waits and no batch is being processed
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.submitted = 0
        self.batches = 0  # processed without an exception of their own (halves count apart)
        self.items = 0

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"batch-{self.name}")

    async def stop(self, *, grace: float = 0.0) -> None:
        """Stop processing; whatever still waits then fails with `RuntimeError`. With `grace`,
        what was submitted gets up to that many seconds to be processed first, so a writer's
        last items land rather than being cut off in the middle of their transaction."""
        if self._task is not None and grace > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._waiting:
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(RuntimeError(f"{self.name} stopped"))

    def put(self, item: T) -> asyncio.Future[R]:
        """Queue `item`; the future resolves with its result. Cancelling the future does not
        take the item back: it is processed all the same, and its result dropped."""
        if self._task is None:
            raise RuntimeError(f"{self.name} is not started")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self.submitted += 1
        self._idle.clear()
        self._ready.set()
        return future

    async def submit(self, item: T) -> R:
        return await self.put(item)

    async def submit_many(self, items: list[T]) -> list[R | BaseException]:
        """Several items at once (they share batches); one result or exception each, in order."""
        futures = [self.put(item) for item in items]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        """The next batch: what waits, in arrival order, up to `max_batch`."""
        lane = self._waiting
        batch = [lane.popleft() for _ in range(min(len(lane), self.max_batch))]
        if not lane:
            self._ready.clear()
        return batch

    async def _process(self, items: list[T]) -> list[R | BaseException]:
        if self.isolate is None:
            return self._counted(items, await self.process(items))

        async def counted(part: list[T]) -> list[R | BaseException]:
            return self._counted(part, await self.process(part))

        return await isolating(counted, items, self.isolate)

    def _counted(self, items: list[T], results: list[R | BaseException]) -> list[R | BaseException]:
        self.batches += 1
        self.items += len(items)
        return results

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            await asyncio.sleep(0)  # let requests that are ready join this batch
            batch = self._take()
            if not batch:
                self._idle.set()
                continue
            try:
                results = await self._process([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(RuntimeError(f"{self.name} stopped"))
                raise
            except Exception as exc:
                log.warning("%s batch of %d failed: %s", self.name, len(batch), exc)
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            if not self._waiting:
                self._idle.set()


class TurnBatch(Generic[T, R]):
    """Calls made in one turn of the event loop, processed together right after it.

    For cheap, frequent calls where a round trip each would cost more than the call (a
    provider guard's Redis script per send). Unlike `MicroBatcher` it needs no start or stop
    and keeps no task between batches: the first call of a turn schedules the batch, the
    others of that turn join it. Batches may overlap (one can start while the previous waits
    for its answer), so `process` must not depend on their order. `process` returns one
    result per item; an exception it raises goes to every item of the batch.
    """

    def __init__(self, process: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self.process = process
        self._items: list[tuple[T, asyncio.Future[R]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # set while a batch is scheduled
        self._running: set[asyncio.Task[None]] = set()

    def submit(self, item: T) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if self._loop is not loop:  # the turn's first call (or a closed loop left a batch behind)
            self._items = []
            self._loop = loop
            loop.call_soon(self._launch)  # after the callbacks already due in this turn
        self._items.append((item, future))
        return future

    def _launch(self) -> None:
        batch, self._items, self._loop = self._items, [], None
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self.process([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


_Call = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]]
_Answer = tuple[asyncio.Future[Any], Any, Exception | None]  # (future, result, or the error raised)


class ThreadLane:
    """Blocking calls run in order on one thread of their own, many per wake-up.

    For small blocking calls made by many concurrent tasks (the dev outbox's file writes).
    `asyncio.to_thread` hands each to the default pool: with 50 in flight its threads and the
    event loop took turns at the GIL around every call, 530-610 µs of CPU per `.eml` write
    that costs 140 µs inline. Here the thread takes everything queued, runs it, and answers
    each event loop once per round: 190 µs. Started at the first call; `close` lets it finish
    what it holds and end.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        """`fn(*args)` on the lane's thread; the future is settled on the caller's loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        with self._lock:  # a call never lands in the queue of a thread told to end
            if self._thread is None:
                self._calls = queue.SimpleQueue()  # each thread its own queue
                self._thread = threading.Thread(
                    target=self._run, args=(self._calls,), name=self.name, daemon=True
                )
                self._thread.start()
            self._calls.put((loop, future, fn, args))
        return future

    def close(self) -> None:
        """The thread ends after the calls already queued (it is not waited for)."""
        with self._lock:
            if self._thread is not None:
                self._calls.put(None)
                self._thread = None

    @staticmethod
    def _run(calls: queue.SimpleQueue[_Call | None]) -> None:
        while True:
            first = calls.get()
            if first is None:
                return
            batch, last = [first], False
            with contextlib.suppress(queue.Empty):
                while (more := calls.get_nowait()) is not None:
                    batch.append(more)
                last = True  # a close was queued behind this batch
            answers: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
            for loop, future, fn, args in batch:
                answers.setdefault(loop, []).append(_answer(future, fn, args))
            for loop, settled in answers.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, settled)
            if last:
                return


def _answer(future: asyncio.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> _Answer:
    try:
        return (future, fn(*args), None)
    except Exception as exc:
        return (future, None, exc)


def _settle(settled: list[_Answer]) -> None:
    for future, result, exc in settled:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
