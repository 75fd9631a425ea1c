"""Store fixtures: a `Database` per test on SQLite and PostgreSQL (through `database_url`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.store import migrate
from gateway.store.database import Database
from gateway.store.deliveries import DeliveryStore


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[Database]:
    """A database with no tables yet (for the migration tests)."""
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def database(empty_database: Database) -> Database:
    """A database upgraded to the newest revision."""
    await migrate.upgrade(empty_database)
    return empty_database


@pytest.fixture
def store(database: Database) -> DeliveryStore:
    """Every delivery operation over the test's database (`gateway.store.deliveries`)."""
    return DeliveryStore(database)
