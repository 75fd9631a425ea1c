"""Schema migrations (Alembic), applied by `notigate db upgrade` and by `./dev run`.

Each migration upgrades an existing database in place without losing rows; the test
suite upgrades a database holding data from every earlier revision to the newest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from gateway.errors import ConfigError
from gateway.store.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(connection: Any = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def upgrade(database: Database, revision: str = "head") -> None:
    await _migrate(database, lambda config: command.upgrade(config, revision))


async def downgrade(database: Database, revision: str) -> None:
    await _migrate(database, lambda config: command.downgrade(config, revision))


class MigrationError(RuntimeError):
    pass


async def _migrate(database: Database, step: Callable[[Config], None]) -> None:
    """Run a migration in one transaction.

    SQLite changes a column by copying its table, and dropping the old copy of a table
    other rows refer to fails while foreign keys are enforced; so they are switched off
    for the migration (the pragma only takes effect outside a transaction) and checked
    before it commits.
    """
    async with database.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            await connection.commit()
        try:
            await connection.run_sync(lambda sync: step(_config(sync)))
            if sqlite:
                broken = (await connection.exec_driver_sql("PRAGMA foreign_key_check")).all()
                if broken:
                    raise MigrationError(f"the migration left rows whose references are gone: {broken[:5]}")
            await connection.commit()
        finally:
            if sqlite:
                await connection.rollback()
                await connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                await connection.commit()


async def current(database: Database) -> str | None:
    async with database.connect() as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


async def require_current(database: Database, who: str) -> None:
    """Refuse to run `who` on a schema older (or newer) than this code: say what to do instead."""
    revision = await current(database)
    if revision != head():
        raise ConfigError(
            f"the database schema is at revision {revision or 'none (an empty database)'}, {who} needs "
            f"{head()}: run `notigate db upgrade`"
        )


def head() -> str:
    found = ScriptDirectory.from_config(_config()).get_current_head()
    if found is None:
        raise RuntimeError("no migrations found")
    return found


async def autogenerate(database: Database, message: str) -> None:
    """Write a new revision from the difference between the tables and the database (dev tool)."""
    async with database.begin() as connection:
        await connection.run_sync(
            lambda sync: command.revision(_config(sync), message=message, autogenerate=True)
        )
