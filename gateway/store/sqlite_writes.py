"""SQLite's write transactions: who goes first, and how the write lock is taken.

SQLite has one write lock per database file. Two things decide how long a writer waits for it:

- Within a process, `WriteGate` queues writers by lane (urgent, normal, background), so a
  writer starts the moment the one before it commits, and an urgent one goes before every
  other one waiting.
- Between processes (the API beside its workers) only the lock itself orders them. SQLite's
  busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms between tries, however
  soon the lock frees, so a writer that had waited a while slept on through the lock's release
  and the next few transactions: under a campaign's expansion, an urgent commit waited 80 ms
  (p99) in there, and 130 ms more behind an ordinary writer of its own process that was
  asleep in it. So a write transaction takes the lock first thing (BEGIN IMMEDIATE) on a
  connection whose busy handler gives up after its first two tries (3 ms), and tries again
  every `LOCK_RETRY` itself; an ordinary writer still waiting for the lock steps aside at
  the gate when an urgent one queues behind it, and holds back while another process's urgent
  writer has raised its `gateway.store.urgent_flag`.

While a process holds the lock, Python's cyclic garbage collector is held off
(`collection_deferred`): a full collection of a busy worker's heap stops its event loop for
~100 ms, and one that fell between two statements of a transaction kept every other process
(an OTP's commit in the API) waiting that long. The collection runs right after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolResetState

from gateway.store.urgent_flag import STEP as URGENT_STEP
from gateway.store.urgent_flag import UrgentFlag

Lane = Literal["urgent", "normal", "background"]
LANES: tuple[Lane, ...] = ("urgent", "normal", "background")

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
)
WRITER_BUSY_TIMEOUT_MS = 3  # SQLite's own tries at the lock: at 0, 1 and 3 ms
LOCK_RETRY = 0.0005  # then ours, this far apart
LOCK_PATIENCE = 10.0  # seconds, after which "database is locked" surfaces (as Unavailable)


class WriteGate:
    """This process's SQLite writers, one at a time, by lane: urgent, normal, background.

    A worker's background writes (expanding bulk requests) go after its deliveries' claims
    and outcomes, so a campaign being expanded never makes a delivery job outlive its lease.
    """

    def __init__(self) -> None:
        self._held = False
        self._holder: asyncio.Task[Any] | None = None
        self._waiting: dict[Lane, deque[asyncio.Future[None]]] = {lane: deque() for lane in LANES}

    @contextlib.asynccontextmanager
    async def held(self, lane: Lane) -> AsyncIterator[None]:
        await self.acquire(lane)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, lane: Lane) -> None:
        me = asyncio.current_task()
        if self._held and self._holder is me:
            raise RuntimeError("a write transaction was opened inside another one of the same task")
        await self._acquire(lane)
        self._holder = me

    def release(self) -> None:
        self._holder = None
        self._release()

    def urgent_waiting(self) -> bool:
        return any(not turn.done() for turn in self._waiting["urgent"])

    async def _acquire(self, lane: Lane) -> None:
        if not self._held and not any(self._waiting.values()):
            self._held = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting[lane]
        queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # handed the gate just as we were cancelled: pass it on
            else:
                queue.remove(turn)
            raise

    def _release(self) -> None:
        for lane in LANES:
            queue = self._waiting[lane]
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)  # the gate passes straight on: still held
                    return
        self._held = False


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def sqlite_writer_setup(dbapi_connection: Any, record: Any) -> None:
    """A write connection: the driver leaves BEGIN to us (`_take_write_lock`), and SQLite's
    busy handler gives up after its first two tries, for ours to take over."""
    sqlite_pragmas(dbapi_connection, record)
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={WRITER_BUSY_TIMEOUT_MS}")
    cursor.close()
    dbapi_connection.isolation_level = None


@contextlib.asynccontextmanager
async def write_transaction(
    writer: AsyncEngine, gate: WriteGate, lane: Lane, flag: UrgentFlag | None = None
) -> AsyncIterator[AsyncConnection]:
    """A transaction that holds the gate, then SQLite's write lock from its first statement.
    The lock is tried every `LOCK_RETRY` while another process writes, for up to
    `LOCK_PATIENCE`. A non-urgent writer that has not got it yet lets an urgent one go first:
    one queued at this process's gate, and (for up to the flag's patience) one of another
    process that raised the `flag`."""
    await gate.acquire(lane)
    holding = True
    try:
        async with writer.connect() as connection:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + LOCK_PATIENCE
            deferring = loop.time() + flag.patience if flag is not None and lane != "urgent" else 0.0
            while True:
                if lane != "urgent" and gate.urgent_waiting():
                    holding = False
                    gate.release()
                    await gate.acquire(lane)
                    holding = True
                elif flag is not None and loop.time() < deferring and flag.raised_elsewhere():
                    await asyncio.sleep(URGENT_STEP)
                elif await _began(connection, deadline):
                    break
                else:
                    await asyncio.sleep(LOCK_RETRY)
            with collection_deferred():
                try:
                    yield connection
                except BaseException:
                    await connection.rollback()
                    raise
                await connection.commit()
    finally:
        if holding:
            gate.release()


# Tasks of this process now holding a write lock (one per database file), and whether the
# collector was switched off here (so is switched back on when the last one lets go).
_holders: dict[asyncio.Task[Any], int] = {}
_switched_off = False


@contextlib.contextmanager
def collection_deferred() -> Iterator[None]:
    """No cyclic garbage collection while any task of the process holds the lock.

    A holder whose task ended without leaving (its event loop closed under it) is forgotten
    at the next write transaction, so it never keeps the collector off for good."""
    task = asyncio.current_task()
    if task is None:
        yield
        return
    _holders[task] = _holders.get(task, 0) + 1
    _settle()
    try:
        yield
    finally:
        if _holders.get(task, 0) > 1:
            _holders[task] -= 1
        else:
            _holders.pop(task, None)
        _settle()


def _settle() -> None:
    global _switched_off
    for gone in [t for t in _holders if t.done() or t.get_loop().is_closed()]:
        del _holders[gone]
    if _holders and not _switched_off and gc.isenabled():
        gc.disable()
        _switched_off = True
    elif not _holders and _switched_off:
        gc.enable()
        _switched_off = False


async def sqlite_driver(connection: AsyncConnection) -> Any:
    """The aiosqlite connection under `connection`, in its transaction: for the hot statements
    sent in one hop to its thread (each SQLAlchemy statement costs about four)."""
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def _began(connection: AsyncConnection, deadline: float) -> bool:
    """BEGIN IMMEDIATE: True once it holds the write lock, False while another process does.

    Straight to the driver (one hop to its thread; three through SQLAlchemy's cursor), then
    SQLAlchemy is told a transaction is open (which sends nothing on SQLite), so the caller's
    `commit` commits it even when every statement of the body goes to the driver too."""
    driver = await sqlite_driver(connection)
    try:
        await driver.execute_fetchall("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        if "locked" in str(exc) and asyncio.get_running_loop().time() < deadline:
            return False
        raise DBAPIError.instance("BEGIN IMMEDIATE", None, exc, sqlite3.Error) from exc
    await connection.begin()
    return True


def sqlite_reset(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
    """A connection going back to the pool is rolled back only if a transaction is open.

    Most come back from reads, which open none, or from a commit: SQLAlchemy's own reset
    would send every one of them a ROLLBACK anyway, a hop to the driver's thread each, two
    or three per intent accepted at light load. Installed with `pool_reset_on_return=None`."""
    if state.asyncio_safe and dbapi_connection.driver_connection.in_transaction:
        dbapi_connection.rollback()
