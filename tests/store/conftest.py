"""Store fixtures: a `Database` per test on SQLite and PostgreSQL (through `database_url`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.store import migrate
from gateway.store.database import Database
from gateway.store.deliveries import DeliveryStore


@pytest.fixture
async def empty_database(empty_database_url: str) -> AsyncIterator[Database]:
    """A database with no tables yet (for the migration tests)."""
    database = Database(empty_database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A database at the newest revision (`database_url`: a copy of the migrated template)."""
    database = Database(database_url)
    assert await migrate.current(database) == migrate.head()
    yield database
    await database.dispose()


@pytest.fixture
def store(database: Database) -> DeliveryStore:
    """Every delivery operation over the test's database (`gateway.store.deliveries`)."""
    return DeliveryStore(database)
