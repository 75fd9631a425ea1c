"""Multi-row INSERTs for the intake's hot path, on SQLite straight to the driver.

An accepted intent writes about five rows. Through SQLAlchemy Core each row costs tens of
microseconds of parameter binding (a type processor for every column of every row) and
each statement a dozen hops to aiosqlite's thread; on SQLite that was the largest share
of accepting an intent. Here the statement is built once per table, each column's
conversion is chosen once, and the rows go to the driver's `executemany` in one hop, on
the connection (and so in the transaction) the caller holds.

Values are stored exactly as SQLAlchemy stores them (`UTCDateTime` as naive UTC text in
SQLAlchemy's format, JSON as text, booleans as integers), so every other query reads and
compares them unchanged; `tests/store/test_bulk.py` holds both paths to that. PostgreSQL
keeps SQLAlchemy's own executemany: asyncpg is asynchronous already and batches it well.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.sqlite_writes import sqlite_driver
from gateway.store.tables import UTCDateTime

Convert = Callable[[Any], Any]


def sqlite_time(value: dt.datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite DATETIME writes (`2026-12-04 16:42:36.123456`, naive UTC).

    `isoformat` writes it a third faster than `strftime`, and the store's times are mostly in
    UTC already, which skips the conversion."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("the store takes aware datetimes only")
    if value.tzinfo is not dt.UTC:
        value = value.astimezone(dt.UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def from_sqlite_time(value: str | None) -> dt.datetime | None:
    """`sqlite_time` read back: an aware UTC datetime, as `UTCDateTime` gives it."""
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC) if value is not None else None


def _json(value: Any) -> str:
    # SQLAlchemy's JSON type (none_as_null=False) stores None as the JSON text 'null' too.
    return msgspec.json.encode(value).decode()


def _boolean(value: bool | None) -> int | None:
    return None if value is None else int(value)


class _SqliteInsert:
    def __init__(self, table: sa.Table) -> None:
        self.columns = [c.name for c in table.columns if not _autoincrement(c)]
        compiled = (
            sa.insert(table)
            .values({name: sa.bindparam(name) for name in self.columns})
            .compile(dialect=sqlite.dialect())
        )
        self.sql = str(compiled)  # INSERT INTO t (a, b, ...) VALUES (?, ?, ...)
        self.columns = list(compiled.positiontup or ())
        self.converters: list[Convert | None] = [_converter(table.c[name].type) for name in self.columns]
        # A row's values in column order in one C call; then only the few columns that need a
        # conversion (times, JSON, booleans) are touched, by position.
        columns = self.columns
        self._values: Callable[[Mapping[str, Any]], Any] = (
            operator.itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
        )
        self._convert = [(i, c) for i, c in enumerate(self.converters) if c is not None]

    def parameters(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...] | list[Any]]:
        values, convert = self._values, self._convert
        out: list[tuple[Any, ...] | list[Any]] = []
        times: dict[dt.datetime, str | None] = {}  # a batch's rows share a few instants (its `now`)
        for row in rows:
            cells = list(values(row))
            for i, conversion in convert:
                cell = cells[i]
                if conversion is sqlite_time:
                    if cell is not None:
                        text = times.get(cell)
                        cells[i] = text if text is not None else times.setdefault(cell, sqlite_time(cell))
                else:
                    cells[i] = conversion(cell)
            out.append(cells)
        return out


def _converter(kind: sa.types.TypeEngine[Any]) -> Convert | None:
    if isinstance(kind, UTCDateTime):
        return sqlite_time
    if isinstance(kind, sa.types.TypeDecorator):
        if type(kind).process_bind_param is not sa.types.TypeDecorator.process_bind_param:
            raise TypeError(f"bulk insert does not know how {kind!r} binds; add it or use sa.insert")
        return _converter(kind.impl_instance)  # e.g. SQLModel's AutoString: a plain String
    if isinstance(kind, sa.JSON):
        return _json
    if isinstance(kind, sa.Boolean):
        return _boolean
    if isinstance(kind, sa.String | sa.Integer | sa.Float):
        return None
    raise TypeError(f"bulk insert has no conversion for {kind!r}; add one or use sa.insert")


def _autoincrement(column: sa.Column[Any]) -> bool:
    return bool(column.primary_key and isinstance(column.type, sa.Integer) and column.autoincrement)


_plans: dict[str, _SqliteInsert] = {}


async def insert_rows(
    connection: AsyncConnection, table: sa.Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """INSERT every row (each a mapping with a value for every column) in the caller's transaction."""
    if not rows:
        return
    if connection.dialect.name != "sqlite":
        await connection.execute(sa.insert(table), list(rows))
        return
    plan = _plans.get(table.name)
    if plan is None:
        plan = _plans[table.name] = _SqliteInsert(table)
    driver = await sqlite_driver(connection)
    await driver.executemany(plan.sql, plan.parameters(rows))
