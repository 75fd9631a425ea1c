"""Connections to the store: SQLite (aiosqlite, WAL) by default, PostgreSQL (asyncpg) by URL.

One `Database` per process holds the async engine. SQLite gets the pragmas that make it a
reasonable server database (WAL so readers never block the writer, a busy timeout so
writers from several processes queue instead of failing, FULL sync so a commit, and the
202 that follows it, survives a power loss and not only a process crash; group commit
pays that fsync once per batch). Failures to reach the database surface as `Unavailable` (HTTP 503);
a value the store refuses (SQLSTATE class 22 or 23, or a number the driver cannot bind) as
`Unstorable` or `Conflict` (HTTP 422/409), so that a group commit can tell one poisoned item
from an outage and retry its neighbours without it (`gateway.batching.isolating`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import msgspec
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gateway.errors import ConfigError, Conflict, NotigateError, Unavailable, Unstorable
from gateway.redact import mask_url

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
)


Lane = Literal["urgent", "normal", "background"]
LANES: tuple[Lane, ...] = ("urgent", "normal", "background")


class WriteGate:
    """This process's SQLite writers, one at a time, by lane: urgent, normal, background.

    SQLite has one write lock per database. Two transactions of one process that reach for
    it together make the loser sleep in SQLite's busy handler (1, 2, 5, 10 ms, ...), however
    soon the lock frees, and two that both read first can fail outright. Queued here instead,
    a writer starts the moment the one before it commits. An urgent intent's commit goes
    before every other one waiting: it waits at most for the transaction in progress. A
    worker's background writes (expanding bulk requests) go after its deliveries' claims and
    outcomes, so a campaign being expanded never makes a delivery job outlive its lease.
    Writers in other processes still meet at SQLite's own lock.
    """

    def __init__(self) -> None:
        self._held = False
        self._holder: asyncio.Task[Any] | None = None
        self._waiting: dict[Lane, deque[asyncio.Future[None]]] = {lane: deque() for lane in LANES}

    @contextlib.asynccontextmanager
    async def held(self, lane: Lane) -> AsyncIterator[None]:
        me = asyncio.current_task()
        if self._held and self._holder is me:
            raise RuntimeError("a write transaction was opened inside another one of the same task")
        await self._acquire(lane)
        self._holder = me
        try:
            yield
        finally:
            self._holder = None
            self._release()

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


class Database:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        parsed = _parse(url)
        self.dialect = parsed.get_backend_name()
        options: dict[str, Any] = {
            # A failed statement's message would carry its parameters: addresses, device
            # tokens, message text. Logs and tracebacks get the SQL alone.
            "hide_parameters": True,
            # msgspec writes and reads the JSON columns several times faster than the json module.
            "json_serializer": _json_text,
            "json_deserializer": msgspec.json.decode,
        }
        if self.dialect == "sqlite":
            # A file does not drop connections: no ping (a round trip to the driver's thread)
            # before every use.
            database = parsed.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        else:
            options.update(
                pool_pre_ping=True,  # a server restart leaves dead connections in the pool
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_timeout=5,
                connect_args={"timeout": 5, "command_timeout": 30},
            )
        self.engine: AsyncEngine = create_async_engine(url, **options)
        self.gate: WriteGate | None = None
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            self.gate = WriteGate()

    @contextlib.asynccontextmanager
    async def begin(self, *, lane: Lane = "normal") -> AsyncIterator[AsyncConnection]:
        """A transaction; a database that cannot be reached raises Unavailable, not a 500.

        On SQLite the transaction waits its turn at the `WriteGate`, by `lane`."""
        gate = self.gate.held(lane) if self.gate is not None else contextlib.nullcontext()
        async with gate, self._transaction() as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.begin() as connection:
                yield connection
        except (OperationalError, InterfaceError, OSError, TimeoutError) as exc:
            if isinstance(exc, OperationalError) and not _is_connectivity(exc):
                raise
            raise Unavailable("the database is unavailable; nothing was stored, try again") from exc
        except (DBAPIError, OverflowError) as exc:
            if (refused := refused_value(exc)) is None:
                raise
            raise refused from exc

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as connection:
                yield connection
        except (OperationalError, InterfaceError, OSError, TimeoutError) as exc:
            if isinstance(exc, OperationalError) and not _is_connectivity(exc):
                raise
            raise Unavailable("the database is unavailable; try again") from exc
        except (DBAPIError, OverflowError) as exc:
            if (refused := refused_value(exc)) is None:
                raise
            raise refused from exc

    async def ping(self) -> bool:
        try:
            async with self.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))
            return True
        except (Unavailable, DBAPIError):
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()


DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


def _parse(url: str) -> sa.URL:
    """The URL, if it names a driver we run on; else a ConfigError that echoes it masked."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is None or parsed.drivername not in DRIVERS:
        raise ConfigError(
            f"DATABASE_URL={mask_url(url)!r} is not valid: use sqlite+aiosqlite:///path/to/file.db "
            "or postgresql+asyncpg://user:password@host/database (the driver is part of the scheme)"
        )
    return parsed


def sqlstate(exc: BaseException) -> str:
    """PostgreSQL's error code, which asyncpg's errors carry but SQLAlchemy does not map."""
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return state if isinstance(state, str) else ""


def refused_value(exc: BaseException) -> NotigateError | None:
    """The caller's error hidden in a database error, if it is one: a value the store refuses
    (class 22, data exception; SQLite's driver raises OverflowError for an integer beyond 64
    bits) or one that conflicts with a stored row (class 23). The message names the class,
    never the statement's parameters (they hold addresses and message text)."""
    state = sqlstate(exc)
    if isinstance(exc, (OverflowError, DataError)) or state.startswith("22"):
        return Unstorable(
            f"the store cannot hold a value of this request (SQLSTATE {state or 'unknown'}: "
            "a character such as NUL, a number beyond its column, or a date out of range)"
        )
    if isinstance(exc, IntegrityError) or state.startswith("23"):
        return Conflict(f"a value of this request conflicts with stored data (SQLSTATE {state or 'unknown'})")
    return None


def _json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _is_connectivity(exc: OperationalError) -> bool:
    """SQLite reports locks and missing files as OperationalError too; only some mean 'down'."""
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return exc.connection_invalidated or any(
        marker in text
        for marker in (
            "unable to open",
            "connection",
            "disk i/o",
            "database is locked",
            "could not connect",
            "closed",
            "timeout",
        )
    )
