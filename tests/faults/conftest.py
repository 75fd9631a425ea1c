"""Fault-test fixtures: a Redis of the test's own, to kill and replace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.redis_server import RedisServer
from gateway.services import Services
from tests.conftest import make_settings, open_services

# These tests kill and restart real processes and wait up to 2 minutes for a load to settle:
# they get more than the suite's per-test timeout (pyproject), still bounded.
FAULT_TIMEOUT = 300


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent == Path(__file__).parent and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(FAULT_TIMEOUT))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
async def on_own_redis(
    database_url: str, own_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Services]:
    """The gateway's parts on the test's database and its own Redis (`own_redis`), started;
    the dev outbox under the test's folder (`tmp_path / "outbox"`)."""
    monkeypatch.setenv("NOTIGATE_OUTBOX", str(tmp_path / "outbox"))
    services = await open_services(make_settings(database_url, own_redis.url, tmp_path))
    await services.start()
    yield services
    await services.close()
