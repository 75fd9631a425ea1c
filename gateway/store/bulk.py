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

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.store.sqlite_values import Convert, conversion, sqlite_time
from gateway.store.sqlite_writes import sqlite_driver


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
        self.converters: list[Convert | None] = [
            conversion(table.c[name].type).write for name in self.columns
        ]
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
            for i, convert_cell in convert:
                cell = cells[i]
                if convert_cell is sqlite_time:
                    if cell is not None:
                        text = times.get(cell)
                        cells[i] = text if text is not None else times.setdefault(cell, sqlite_time(cell))
                else:
                    cells[i] = convert_cell(cell)
            out.append(cells)
        return out


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
