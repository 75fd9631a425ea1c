"""Shared fixtures: the shipped policy bundle, compiled once per CEL runtime."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import settings

from gateway.policy.cel import available_runtimes
from gateway.policy.checker import load_policy
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.compiler import BundlePaths
from gateway.redis_server import RedisServer
from gateway.services import Services
from gateway.settings import Settings
from gateway.store import migrate
from gateway.store.database import Database

REPO = Path(__file__).resolve().parents[1]

# `./dev test` is reproducible: a fixed seed and no example database. Set
# HYPOTHESIS_PROFILE=explore to search afresh with more examples.
settings.register_profile("repeatable", derandomize=True, database=None, print_blob=True, deadline=None)
settings.register_profile("explore", max_examples=2000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
RUNTIMES = available_runtimes()
_STARTED = time.time()


def shipped_paths() -> BundlePaths:
    return BundlePaths.for_policies(REPO / "policies")


@pytest.fixture(scope="session")
def bundle_paths() -> BundlePaths:
    return shipped_paths()


@pytest.fixture(scope="session", params=RUNTIMES)
def runtime_name(request: pytest.FixtureRequest) -> str:
    """Every engine test runs under each installed CEL runtime: they must decide alike."""
    return str(request.param)


_compiled: dict[str, CompiledPolicy] = {}


def compiled_policy(runtime: str) -> CompiledPolicy:
    if runtime not in _compiled:
        _compiled[runtime] = load_policy(shipped_paths(), runtime=runtime)
    return _compiled[runtime]


@pytest.fixture(scope="session")
def policy(runtime_name: str) -> CompiledPolicy:
    return compiled_policy(runtime_name)


# --- real services: Redis, SQLite, PostgreSQL ------------------------------------------


POSTGRES_ADMIN = os.environ.get("NOTIGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the whole run, on its own port: tests may stop and restart it."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def _postgres_reachable() -> bool:
    async def probe() -> bool:
        try:
            connection = await asyncpg.connect(POSTGRES_ADMIN, timeout=2)
        except (OSError, asyncpg.PostgresError):
            return False
        await connection.close()
        return True

    return asyncio.run(probe())


POSTGRES = _postgres_reachable()


async def _postgres_admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _postgres_database_url(name: str) -> str:
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


async def _upgrade(url: str) -> None:
    database = Database(url)
    try:
        await migrate.upgrade(database)
    finally:
        await database.dispose()


# Most tests want a database at the newest revision. Running the migrations for each of them
# cost ~0.1 s of the suite's CPU per test and PostgreSQL ~0.25 s more for the DDL: instead
# each xdist worker migrates one template per backend (with `migrate.upgrade`, as before)
# and every test gets its own copy of it. Tests of the migrations themselves ask for
# `empty_database_url`.


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the newest revision, copied for each test that wants one."""
    path = tmp_path_factory.mktemp("migrated") / "notigate.db"
    asyncio.run(_upgrade(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def migrated_postgres() -> Iterator[str]:
    """A PostgreSQL database at the newest revision: the template of each test's database."""
    if not POSTGRES:
        pytest.skip(f"no PostgreSQL reachable at {POSTGRES_ADMIN} (set NOTIGATE_TEST_POSTGRES)")
    name = f"notigate_template_{uuid.uuid4().hex[:12]}"
    asyncio.run(_postgres_admin(f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(_upgrade(_postgres_database_url(name)))
        yield name
    finally:
        asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _postgres_database(template: str | None) -> Iterator[str]:
    """A fresh PostgreSQL database for one test (a copy of `template`), dropped afterwards."""
    if not POSTGRES:
        pytest.skip(f"no PostgreSQL reachable at {POSTGRES_ADMIN} (set NOTIGATE_TEST_POSTGRES)")
    name = f"notigate_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    asyncio.run(_postgres_admin(f'CREATE DATABASE "{name}"{copy}'))
    yield _postgres_database_url(name)
    asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on SQLite and, where reachable, on PostgreSQL: a database of its
    own at the newest revision."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
    else:
        yield from _postgres_database(request.getfixturevalue("migrated_postgres"))


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables yet, on SQLite and PostgreSQL (for the migration tests)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    else:
        yield from _postgres_database(None)


@pytest.fixture
def sqlite_url(tmp_path: Path, migrated_sqlite: Path) -> str:
    """A SQLite database of the test's own at the newest revision."""
    path = tmp_path / "notigate.db"
    shutil.copyfile(migrated_sqlite, path)
    return f"sqlite+aiosqlite:///{path}"


class Clock:
    """A settable clock for services under test."""

    def __init__(self, now: dt.datetime | None = None) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now if self.now is not None else dt.datetime.now(dt.UTC)


def make_settings(database_url: str, redis_url: str, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "policies_dir": REPO / "policies",
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_prefix": f"t{uuid.uuid4().hex[:10]}",
        "provider_profile": "dev",
        "job_timeout": 5.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def open_services(settings: Settings, clock: Clock | None = None) -> Services:
    services = Services(settings, policy=compiled_policy("cel-expr-python"), clock=clock or Clock())
    await migrate.upgrade(services.database)
    return services


@pytest.fixture
async def services(
    database_url: str, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Services]:
    """The whole gateway's parts on a fresh database (SQLite, and PostgreSQL where reachable) and a
    private Redis prefix."""
    monkeypatch.setenv("NOTIGATE_OUTBOX", str(tmp_path / "outbox"))
    opened = await open_services(make_settings(database_url, redis_server.url, tmp_path))
    await opened.start()
    yield opened
    await opened.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say where the console's browser tests left their screenshots, for a reviewer to look at."""
    shots = REPO / "var" / "screenshots"
    fresh = [p for p in shots.glob("*.png") if p.stat().st_mtime >= _STARTED] if shots.is_dir() else []
    if fresh:
        terminalreporter.write_line(f"console screenshots ({len(fresh)}): {shots}")
