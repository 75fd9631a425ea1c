"""Migrations: head is what the models declare, it goes down and up, and no step loses rows.

The data test walks every revision from base to head, writes a row into every table that
exists at each step (with only the columns that exist then, found by inspection), and
checks after every later step that each of those rows is still there with its values. A
new revision is covered as soon as it is added.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from gateway.store import migrate
from gateway.store.database import Database
from gateway.store.tables import METADATA

VERSION_TABLE = "alembic_version"

# Tables (or columns) a later revision drops on purpose, with the data: {"table": {"*"}} or
# {"table": {"column", ...}}. Anything else a revision drops fails the data test.
DROPPED_ON_PURPOSE: dict[str, set[str]] = {}


@dataclass(frozen=True)
class TableShape:
    columns: dict[str, sa.types.TypeEngine[Any]]
    nullable: dict[str, bool]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[tuple[tuple[str, ...], str, tuple[str, ...]], ...]


async def schema(database: Database) -> dict[str, TableShape]:
    """Every table but Alembic's own, as the database itself reports it."""

    def read(connection: sa.Connection) -> dict[str, TableShape]:
        inspector = sa.inspect(connection)
        shapes = {}
        for name in inspector.get_table_names():
            if name == VERSION_TABLE:
                continue
            columns = inspector.get_columns(name)
            shapes[name] = TableShape(
                columns={c["name"]: c["type"] for c in columns},
                nullable={c["name"]: bool(c["nullable"]) for c in columns},
                primary_key=tuple(inspector.get_pk_constraint(name)["constrained_columns"]),
                foreign_keys=tuple(
                    (tuple(fk["constrained_columns"]), fk["referred_table"], tuple(fk["referred_columns"]))
                    for fk in inspector.get_foreign_keys(name)
                ),
            )
        return shapes

    async with database.connect() as connection:
        return await connection.run_sync(read)


async def table_names(database: Database) -> set[str]:
    async with database.connect() as connection:
        return set(await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names()))


async def test_upgrade_to_head_creates_every_table_and_column_the_models_declare(
    empty_database: Database,
) -> None:
    await migrate.upgrade(empty_database)
    found = await schema(empty_database)
    declared = {table.name: table for table in METADATA.sorted_tables}
    assert set(found) == set(declared), "a model table has no migration (or a migration has no model)"
    assert {name: set(shape.columns) for name, shape in found.items()} == {
        name: {column.name for column in table.columns} for name, table in declared.items()
    }
    assert {name: shape.nullable for name, shape in found.items()} == {
        name: {column.name: bool(column.nullable) for column in table.columns}
        for name, table in declared.items()
    }
    assert {name: set(shape.primary_key) for name, shape in found.items()} == {
        name: {column.name for column in table.primary_key.columns} for name, table in declared.items()
    }


async def test_autogenerate_finds_nothing_left_to_migrate(database: Database) -> None:
    """Types, indexes and constraints too: the models and the migrated schema agree."""
    async with database.connect() as connection:
        differences = await connection.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), METADATA
            )
        )
    assert differences == []


async def test_current_is_none_before_and_head_after_and_base_round_trips(empty_database: Database) -> None:
    assert await migrate.current(empty_database) is None
    await migrate.upgrade(empty_database)
    assert await migrate.current(empty_database) == migrate.head()

    await migrate.downgrade(empty_database, "base")
    assert await migrate.current(empty_database) is None
    assert await table_names(empty_database) <= {VERSION_TABLE}

    await migrate.upgrade(empty_database)
    assert await migrate.current(empty_database) == migrate.head()
    assert await table_names(empty_database) == {t.name for t in METADATA.sorted_tables} | {VERSION_TABLE}


def revisions_in_order() -> list[str]:
    """Base to head; the history must be one line (each revision follows the one before)."""
    script = ScriptDirectory(str(migrate.MIGRATIONS))
    assert len(script.get_heads()) == 1, "the migrations have more than one head: merge them"
    ordered = [r.revision for r in reversed(list(script.walk_revisions("base", "heads")))]
    assert ordered[-1] == migrate.head()
    assert script.get_revision(ordered[0]).down_revision is None
    for before, after in itertools.pairwise(ordered):
        assert script.get_revision(after).down_revision == before
    return ordered


@dataclass
class Written:
    revision: str
    table: str
    key: dict[str, Any]
    values: dict[str, Any]


def sample(type_: sa.types.TypeEngine[Any], seed: int, column: str) -> Any:
    """A value of a reflected column type, distinct per seed."""
    if isinstance(type_, sa.Boolean):
        return seed % 2 == 1
    if isinstance(type_, sa.Integer):
        return seed
    if isinstance(type_, sa.Float):
        return seed + 0.25
    if isinstance(type_, sa.DateTime):
        # An instant with microseconds; stored naive (as UTC) where the column has no time zone.
        instant = dt.datetime(2026, 11, 21, 8, 30, tzinfo=dt.UTC) + dt.timedelta(
            minutes=seed, microseconds=123_456
        )
        return instant if type_.timezone else instant.replace(tzinfo=None)
    if isinstance(type_, sa.JSON):
        return {"seed": seed, "column": column, "items": [1, "two", None]}
    if isinstance(type_, sa.String):
        text = f"{seed}-{column}"
        return text[: type_.length] if type_.length else text
    raise AssertionError(f"teach sample() to fill a {type_!r} column ({column})")


def normalised(value: Any) -> Any:
    """SQLite gives naive UTC back where PostgreSQL gives aware: compare instants."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return value


def parents_first(shapes: dict[str, TableShape]) -> list[str]:
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in ordered:
            return
        assert name not in path, f"foreign keys form a cycle through {name}"
        for _, parent, _ in shapes[name].foreign_keys:
            if parent != name and parent in shapes:
                visit(parent, (*path, name))
        ordered.append(name)

    for name in sorted(shapes):
        visit(name, ())
    return ordered


def lightweight(name: str, shape: TableShape) -> sa.TableClause:
    return sa.table(name, *(sa.column(column, type_) for column, type_ in shape.columns.items()))


async def write_a_row_into_every_table(
    database: Database, revision: str, step: int, shapes: dict[str, TableShape]
) -> list[Written]:
    written: dict[str, Written] = {}
    async with database.begin() as connection:
        for position, name in enumerate(parents_first(shapes)):
            shape = shapes[name]
            values = {
                column: sample(type_, (step + 1) * 1000 + position * 50 + index, column)
                for index, (column, type_) in enumerate(shape.columns.items())
            }
            for columns, parent, referred in shape.foreign_keys:
                for column, target in zip(columns, referred, strict=True):
                    values[column] = written[parent].values[target]
            await connection.execute(sa.insert(lightweight(name, shape)).values(**values))
            written[name] = Written(revision, name, {c: values[c] for c in shape.primary_key}, values)
    return list(written.values())


async def check_rows_are_kept(
    database: Database, revision: str, shapes: dict[str, TableShape], rows: list[Written]
) -> None:
    async with database.connect() as connection:
        for row in rows:
            dropped = DROPPED_ON_PURPOSE.get(row.table, set())
            if "*" in dropped:
                continue
            assert row.table in shapes, f"revision {revision} dropped table {row.table} with its rows"
            shape = shapes[row.table]
            kept = [c for c in row.values if c not in dropped]
            lost = [c for c in kept if c not in shape.columns]
            assert not lost, f"revision {revision} dropped {row.table}.{lost} with their data"
            table = lightweight(row.table, shape)
            found = (
                await connection.execute(
                    sa.select(*(table.c[c] for c in kept)).where(
                        *(table.c[c] == value for c, value in row.key.items())
                    )
                )
            ).all()
            assert len(found) == 1, (
                f"the {row.table} row written at revision {row.revision} is gone after {revision}"
            )
            assert {c: normalised(v) for c, v in found[0]._mapping.items()} == {
                c: normalised(row.values[c]) for c in kept
            }, f"the {row.table} row written at revision {row.revision} changed after {revision}"


async def test_every_upgrade_step_keeps_the_rows_of_every_earlier_revision(empty_database: Database) -> None:
    written: list[Written] = []
    steps = revisions_in_order()
    for step, revision in enumerate(steps):
        await migrate.upgrade(empty_database, revision)
        assert await migrate.current(empty_database) == revision
        shapes = await schema(empty_database)
        await check_rows_are_kept(empty_database, revision, shapes, written)
        new = await write_a_row_into_every_table(empty_database, revision, step, shapes)
        assert {w.table for w in new} == set(shapes)
        written += new
    assert await migrate.current(empty_database) == migrate.head()
    await check_rows_are_kept(empty_database, steps[-1], await schema(empty_database), written)
    # Every table of the models got at least one row along the way.
    assert {w.table for w in written} >= {t.name for t in METADATA.sorted_tables}
