"""What a Redis would lose, read from a real redis-server's settings at start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.redis_config import assess, warn_if_unsafe
from gateway.redis_server import RedisServer


def test_a_persistent_redis_that_never_evicts_is_safe() -> None:
    assert (
        assess({"appendonly": "yes", "save": "", "maxmemory": "0", "maxmemory-policy": "allkeys-lru"}) == []
    )
    assert assess({"appendonly": "yes", "maxmemory": "2gb", "maxmemory-policy": "noeviction"}) == []


def test_no_append_only_file_and_eviction_are_each_named() -> None:
    problems = assess(
        {"appendonly": "no", "save": "3600 1", "maxmemory": "1073741824", "maxmemory-policy": "allkeys-lru"}
    )
    assert len(problems) == 2
    assert "appendonly no; RDB snapshots only" in problems[0]
    assert "maxmemory-policy allkeys-lru" in problems[1]


@pytest.mark.parametrize("persist", [False, True])
async def test_the_check_reads_a_real_redis(
    tmp_path: Path, persist: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with RedisServer(tmp_path / "redis", persist=persist) as server:
        redis: Redis = Redis.from_url(server.url)
        try:
            problems = await warn_if_unsafe(redis)
        finally:
            await redis.aclose()
    if persist:
        assert problems == [] and "Redis keeps" not in caplog.text
    else:
        assert len(problems) == 1 and "Recommended for production: appendonly yes" in caplog.text


async def test_an_unreachable_redis_is_reported_as_unchecked(caplog: pytest.LogCaptureFixture) -> None:
    from gateway.redis_server import free_port

    caplog.set_level(logging.INFO, "gateway.redis")
    redis: Redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    try:
        assert await warn_if_unsafe(redis) == []
    finally:
        await redis.aclose()
    assert "its persistence is not checked" in caplog.text
