"""Values as SQLAlchemy's column types store them on SQLite, both ways, for the hot
statements handed straight to aiosqlite's driver (one hop to its thread, where SQLAlchemy
takes about four and a type processor per column of every row).

SQLite's storage: `UTCDateTime` as naive UTC text in SQLAlchemy's format, JSON as text,
booleans as integers. The intake's inserts write it (`gateway.store.bulk`); the worker's
claim and job read read it back (`SqliteRows`), with the columns' names and the values
SQLAlchemy would have given, so the code using them is the same on both databases.
`tests/store/test_bulk.py` and the claim tests hold both paths to one answer.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa

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


def _to_json(value: Any) -> str:
    # SQLAlchemy's JSON type (none_as_null=False) stores None as the JSON text 'null' too.
    return msgspec.json.encode(value).decode()


def _from_json(value: str | None) -> Any:
    return msgspec.json.decode(value) if value is not None else None


def _to_boolean(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _from_boolean(value: int | None) -> bool | None:
    return None if value is None else bool(value)


class Conversion(NamedTuple):
    """How one column type's values go to SQLite and come back; None: as they are."""

    write: Convert | None
    read: Convert | None


_AS_IS = Conversion(None, None)


def conversion(kind: sa.types.TypeEngine[Any]) -> Conversion:
    """The conversion of a column type the store uses; TypeError for one it does not know
    (a decorator with a bind step of its own, say), so nothing is stored or read wrong."""
    if isinstance(kind, UTCDateTime):
        return Conversion(sqlite_time, from_sqlite_time)
    if isinstance(kind, sa.types.TypeDecorator):
        if type(kind).process_bind_param is not sa.types.TypeDecorator.process_bind_param:
            raise TypeError(f"no SQLite conversion for {kind!r}; add one or go through SQLAlchemy")
        return conversion(kind.impl_instance)  # e.g. SQLModel's AutoString: a plain String
    if isinstance(kind, sa.JSON):
        return Conversion(_to_json, _from_json)
    if isinstance(kind, sa.Boolean):
        return Conversion(_to_boolean, _from_boolean)
    if isinstance(kind, sa.String | sa.Integer | sa.Float):
        return _AS_IS
    raise TypeError(f"no SQLite conversion for {kind!r}; add one or go through SQLAlchemy")


class SqliteRows:
    """Reads rows of `columns`, in that order, as `columns` names them (`.select` lists them)."""

    def __init__(self, name: str, columns: Sequence[sa.Column[Any]]) -> None:
        self.select = ", ".join(f"{c.table.name}.{c.name}" for c in columns)
        # Two columns of one name (two tables' `id`) are renamed by position in `row`.
        names = [c.name for c in columns]
        self.row: Callable[..., Any] = collections.namedtuple(name, names, rename=True)  # type: ignore[misc]
        reads = (conversion(column.type).read for column in columns)
        self._convert = [(i, read) for i, read in enumerate(reads) if read is not None]

    def values(self, raw: Sequence[Any]) -> list[Any]:
        cells = list(raw)
        for i, convert in self._convert:
            cells[i] = convert(cells[i])
        return cells

    def of(self, raw: Sequence[Any]) -> Any:
        return self.row(*self.values(raw))
