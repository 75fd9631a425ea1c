"""hiredis packs our Redis commands into the very bytes redis-py would send."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from gateway.redis_packing import PackedConnection
from gateway.redis_server import RedisServer
from gateway.services import connect_redis

COMMANDS: list[tuple[Any, ...]] = [
    ("GET", "k"),
    (b"SET", b"k", b"\x00\xff binary"),
    ("SET", "clé", "dé jà vu ✓"),
    ("ZADD", "z", 0.1, "a", 1e20, "b", -0.0, "c", float("inf"), "d"),
    ("INCRBY", "n", 12345678901234567890),
    ("EVALSHA", "a" * 40, 36, *[f"h:u_{i:06d}" for i in range(36)], 1733470000000, '{"x":[1]}' * 9000),
    ("CONFIG GET", "maxmemory"),  # a name holding a space: redis-py splits it
    (b"CLIENT SETNAME", b"worker"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_the_bytes_are_redis_pys(command: tuple[Any, ...]) -> None:
    assert b"".join(PackedConnection().pack_command(*command)) == b"".join(
        Connection().pack_command(*command)
    )


@pytest.mark.parametrize("value", [None, True, ["a", "list"]])
def test_what_redis_py_refuses_is_refused_with_its_error(value: Any) -> None:
    with pytest.raises(DataError, match="Invalid input of type"):
        PackedConnection().pack_command("SET", "k", value)


async def test_a_real_redis_reads_what_it_packs(redis_server: RedisServer) -> None:
    redis = connect_redis(redis_server.url)
    keys = [f"packing:{i}" for i in range(40)]
    assert redis.connection_pool.connection_class is PackedConnection
    try:
        assert await redis.set("packing:clé", "dé jà vu ✓") is True
        assert await redis.get("packing:clé") == "dé jà vu ✓".encode()
        script = redis.register_script(
            "for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1] .. i) end return #KEYS"
        )
        assert await script(keys=keys, args=["v"]) == 40
        assert await redis.mget(keys[:3]) == [b"v1", b"v2", b"v3"]
        assert "maxmemory" in await redis.config_get("maxmemory")  # the split name still works
    finally:
        await redis.delete("packing:clé", *keys)
        await redis.aclose()
