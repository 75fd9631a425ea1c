"""Share one transaction among many concurrent writers, acknowledging none before it commits.

A commit costs about a millisecond on SQLite whether it holds one row or a hundred; a
commit per request caps a process near 1,000 requests/s. `GroupCommit` is a micro-batcher
(`gateway.batching`) whose batch is one transaction: each item's future resolves with its
own result once the transaction has committed, or with the error if it failed.

A transaction that fails for any reason but an outage (`Unavailable`) rolled back and can
run again, so the batch is retried in halves until the item at fault is alone
(`gateway.batching.isolating`): that item alone gets the error, `Unstorable` (422) for a
value the store refuses, and every other item is stored. An outage fails the whole batch
(503) at once: retrying it in halves would only fail slower.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.batching import MicroBatcher, not_an_outage
from gateway.store.database import Database, Lane

T = TypeVar("T")
R = TypeVar("R")
Write = Callable[[AsyncConnection, list[T], dt.datetime], Awaitable[list[R]]]


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        database: Database,
        write: Write[T, R],
        *,
        clock: Callable[[], dt.datetime],
        name: str,
        max_batch: int = 500,
        lane: Lane = "normal",
    ) -> None:
        self.database = database
        self.write = write
        self.clock = clock
        self.name = name
        self.lane = lane  # its transactions' turn at the database's write gate
        self.batcher: MicroBatcher[T, R] = MicroBatcher(
            self._transaction, name=name, max_batch=max_batch, isolate=not_an_outage
        )

    @property
    def commits(self) -> int:
        return self.batcher.batches

    @property
    def items(self) -> int:
        return self.batcher.items

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self, *, grace: float = 0.0) -> None:
        """Stop; with `grace`, what was submitted gets that long to be committed first."""
        await self.batcher.stop(grace=grace)

    def put(self, item: T) -> asyncio.Future[R]:
        """Queue `item` for a commit; the future resolves once it is stored. Cancelling the
        future does not take the item back (see `MicroBatcher.put`)."""
        return self.batcher.put(item)

    async def submit(self, item: T) -> R:
        """Wait for the commit that stores `item`."""
        return await self.batcher.submit(item)

    async def _transaction(self, items: list[T]) -> list[R | BaseException]:
        async with self.database.begin(lane=self.lane) as connection:
            return list(await self.write(connection, items, self.clock()))
