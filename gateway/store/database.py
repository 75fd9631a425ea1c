"""Connections to the store: SQLite (aiosqlite, WAL) by default, PostgreSQL (asyncpg) by URL.

One `Database` per process holds the async engines. SQLite gets the pragmas that make it a
reasonable server database (WAL so readers never block the writer, FULL sync so a commit,
and the 202 that follows it, survives a power loss and not only a process crash; group
commit pays that fsync once per batch); how its writers, of one process and of several,
take turns at its one write lock is `gateway.store.sqlite_writes`. Failures to reach the
database surface as `Unavailable` (HTTP 503); a value the store refuses (SQLSTATE class 22
or 23, or a number the driver cannot bind) as `Unstorable` or `Conflict` (HTTP 422/409), so
that a group commit can tell one poisoned item from an outage and retry its neighbours
without it (`gateway.batching.isolating`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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
from gateway.store.sqlite_writes import (
    Lane,
    WriteGate,
    sqlite_pragmas,
    sqlite_reset,
    sqlite_writer_setup,
    write_transaction,
)
from gateway.store.urgent_flag import UrgentFlag

__all__ = ["Database", "Lane", "refused_value", "sqlstate"]


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
            # before every use. A connection is rolled back on its return only when it holds
            # a transaction (`sqlite_reset`), not after every read.
            options["pool_reset_on_return"] = None
            if file := _sqlite_file(parsed):
                Path(file).parent.mkdir(parents=True, exist_ok=True)
        else:
            options.update(
                pool_pre_ping=True,  # a server restart leaves dead connections in the pool
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_timeout=5,
                connect_args={"timeout": 5, "command_timeout": 30},
            )
        self.engine: AsyncEngine = create_async_engine(url, **options)
        # SQLite's write transactions on connections of their own (`sqlite_writes`);
        # reads, and PostgreSQL's transactions, on `engine`.
        self.writer: AsyncEngine | None = None
        self.gate: WriteGate | None = None
        self.urgent_flag: UrgentFlag | None = None
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", sqlite_pragmas)
            event.listen(self.engine.sync_engine, "reset", sqlite_reset)
            self.gate = WriteGate()
            if file := _sqlite_file(parsed):
                self.urgent_flag = UrgentFlag.beside(file)
                self.writer = create_async_engine(url, **options)
                event.listen(self.writer.sync_engine, "connect", sqlite_writer_setup)
                event.listen(self.writer.sync_engine, "reset", sqlite_reset)

    @contextlib.asynccontextmanager
    async def begin(self, *, lane: Lane = "normal") -> AsyncIterator[AsyncConnection]:
        """A transaction; a database that cannot be reached raises Unavailable, not a 500.

        On SQLite the transaction waits its turn at the `WriteGate`, by `lane`; an urgent one
        raises the `UrgentFlag`, for which every other one, in any process, waits a little."""
        flag: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()
        if self.urgent_flag is not None and lane == "urgent":
            flag = self.urgent_flag.raised()
        async with flag, self._transaction(lane) as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def _transaction(self, lane: Lane) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._opened(lane) as connection:
                yield connection
        except (OperationalError, InterfaceError, OSError, TimeoutError) as exc:
            if isinstance(exc, OperationalError) and not _is_connectivity(exc):
                raise
            raise Unavailable("the database is unavailable; nothing was stored, try again") from exc
        except (DBAPIError, OverflowError) as exc:
            if (refused := refused_value(exc)) is None:
                raise
            raise refused from exc

    def _opened(self, lane: Lane) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        if self.writer is not None and self.gate is not None:
            return write_transaction(self.writer, self.gate, lane, self.urgent_flag)
        if self.gate is not None:  # SQLite in memory: one database per connection, no other process
            return _gated(self.gate, lane, self.engine)
        return self.engine.begin()

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
        if self.writer is not None:
            await self.writer.dispose()
        if self.urgent_flag is not None:
            self.urgent_flag.close()


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


def _sqlite_file(parsed: sa.URL) -> str | None:
    database = parsed.database
    return database if database and database != ":memory:" else None


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


@contextlib.asynccontextmanager
async def _gated(gate: WriteGate, lane: Lane, engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with gate.held(lane), engine.begin() as connection:
        yield connection


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
