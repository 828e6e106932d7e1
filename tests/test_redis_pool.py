"""The hub's Redis client (server.store.pool) on a real Redis: hiredis parses and packs, the
pool stays within its bound through a burst, hands connections on in order, gives up on a
wait after its limit without losing a connection, and survives its connections being cut
(what a Redis restart does to them)."""

from __future__ import annotations

import asyncio
import enum
from typing import Any

import pytest
import redis as redis_sync
from redis._parsers.hiredis import _AsyncHiredisParser
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.settings import Settings
from server.store.pool import BoundedPool, lean_connection, open_redis
from tests.conftest import skip_on_cluster


class Kind(enum.IntEnum):
    ONE = 1


ARGUMENTS: list[tuple[object, ...]] = [
    ("SET", "k", "v"),
    ("SCRIPT LOAD", "return 1"),  # a two-word name goes out as two arguments
    (b"CLIENT SETNAME", b"x"),
    ("GEOADD", "g", 112.4545000001, 34.62, "squad-洛"),
    ("ZADD", "z", 1e20, b"\x00\xff", -0.0, 7, 12345678901234567890),
    ("SET", "k", memoryview(b"view")),
    ("EVALSHA", "abc", 0),
]


@pytest.fixture
def redis_url(redis_url: str) -> str:
    """This module's tests are of the single Redis's pool (server.store.pool); the cluster
    client's bound and packing are tested in tests/test_cluster.py."""
    skip_on_cluster(redis_url, "BoundedPool, DEBUG and CLIENT KILL address one server")
    return redis_url


@pytest.mark.parametrize("args", ARGUMENTS)
def test_hiredis_packs_what_redis_py_packs(args: tuple[object, ...]) -> None:
    python, packed = Connection(), lean_connection(Connection)()
    assert b"".join(packed.pack_command(*args)) == b"".join(python.pack_command(*args))
    assert b"".join(packed.pack_commands([args, args])) == b"".join(
        python.pack_commands([args, args])
    )


def test_what_hiredis_refuses_is_packed_or_refused_by_redis_py() -> None:
    python, packed = Connection(), lean_connection(Connection)()
    assert packed.pack_command("SET", "k", Kind.ONE) == python.pack_command("SET", "k", Kind.ONE)
    with pytest.raises(DataError):
        packed.pack_command("SET", "k", None)
    with pytest.raises(DataError):
        packed.pack_commands([("SET", "k", "v"), ("SET", "k", True)])


async def test_the_hubs_client_parses_with_hiredis_and_counts_its_round_trips(
    redis_url: str,
) -> None:
    client, round_trips = open_redis(redis_url, Settings(redis_connections=8))
    try:
        pool = client.connection_pool
        assert isinstance(pool, BoundedPool) and pool.max_connections == 8
        assert await client.set("k", 1.5) and await client.get("k") == b"1.5"
        connection = await pool.get_connection()
        assert isinstance(connection._parser, _AsyncHiredisParser)
        assert type(connection).__mro__[1].__name__ == "LeanConnection"
        await pool.release(connection)
        before = round_trips.count
        pipe = client.pipeline(transaction=False)
        pipe.set("a", 1).incr("a").get("a")
        assert await pipe.execute() == [True, 2, b"2"]
        await client.get("a")
        assert round_trips.count - before == 2  # one pipeline, one command
    finally:
        await client.aclose()


async def test_a_pipeline_hands_its_connection_back_without_a_task(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py releases a pipeline's connection through ``asyncio.shield`` (a task each
    time); the hub's pipelines give a clean connection back at once, and one that must be
    dropped still goes the long way."""
    client, _ = open_redis(redis_url, Settings(redis_connections=2))
    client.mux = None  # the pool's own path (the multiplexed one: tests/test_redis_mux.py)
    shielded: list[object] = []
    shield = asyncio.shield

    def counting_shield(awaitable: Any) -> Any:
        shielded.append(awaitable)
        return shield(awaitable)

    monkeypatch.setattr(asyncio, "shield", counting_shield)
    try:
        pool = client.connection_pool
        assert isinstance(pool, BoundedPool)
        for _ in range(3):
            pipe = client.pipeline(transaction=False)
            pipe.set("a", 1).incr("a")
            assert await pipe.execute() == [True, 2]
        async with client.pipeline(transaction=True) as pipe:  # WATCH, MULTI/EXEC
            await pipe.watch("a")
            assert await pipe.get("a") == b"2"
            pipe.multi()
            pipe.set("a", 3)
            assert await pipe.execute() == [True]
        assert shielded == []
        assert len(pool._available_connections) == 1 and not pool._in_use_connections
        # A connection that must be dropped: released through the pool's own release.
        pipe = client.pipeline(transaction=False)
        pipe.get("a")
        monkeypatch.setattr(
            type(pool._available_connections[0]), "should_reconnect", lambda _: True
        )
        assert await pipe.execute() == [b"3"]
        assert len(shielded) == 1
    finally:
        await client.aclose()


async def test_a_burst_waits_in_line_within_the_bound(redis_url: str) -> None:
    client, _ = open_redis(redis_url, Settings(redis_connections=4))
    client.mux = None  # the pool's own path (the multiplexed one: tests/test_redis_mux.py)
    watcher = redis_sync.Redis.from_url(redis_url)
    try:
        await client.set("n", 0)  # one connection made
        baseline = len(watcher.client_list())
        # 2,000 commands at once, each holding its connection for a blocking pop of 10 ms:
        # far more than 4 at a time, so most wait for one released.
        results = await asyncio.gather(
            *(client.blpop(["never"], timeout=0.01) for _ in range(40)),
            *(client.incr("n") for _ in range(1_960)),
        )
        assert results[:40] == [None] * 40
        assert sorted(results[40:]) == list(range(1, 1_961))
        pool = client.connection_pool
        assert isinstance(pool, BoundedPool)
        assert len(pool._available_connections) == 4 and not pool._in_use_connections
        assert len(watcher.client_list()) <= baseline + 3  # never more than 4 in all
    finally:
        watcher.close()
        await client.aclose()


async def test_a_wait_gives_up_after_its_limit_and_loses_no_connection(redis_url: str) -> None:
    pool = BoundedPool.from_url(redis_url, max_connections=1, wait_s=0.2)
    client = Redis.from_pool(pool)
    try:
        held = await pool.get_connection()
        with pytest.raises(RedisConnectionError, match="no Redis connection free"):
            await client.get("k")
        waiting = asyncio.create_task(client.get("k"))
        await asyncio.sleep(0.05)
        waiting.cancel()  # a caller that stops waiting leaves no claim behind
        with pytest.raises(asyncio.CancelledError):
            await waiting
        second = asyncio.create_task(client.set("k", "v"))
        await asyncio.sleep(0.05)
        await pool.release(held)  # handed straight to the one still waiting
        assert await second is True
        assert await client.get("k") == b"v"
        assert len(pool._available_connections) == 1 and not pool._waiters
    finally:
        await client.aclose()


@pytest.mark.parametrize("multiplexed", [True, False], ids=["multiplexed", "pool"])
async def test_connections_cut_by_redis_are_made_again(redis_url: str, multiplexed: bool) -> None:
    """A restart closes every connection; the next commands reconnect, none fails."""
    client, _ = open_redis(redis_url, Settings(redis_connections=4))
    if not multiplexed:
        client.mux = None
    watcher = redis_sync.Redis.from_url(redis_url)
    try:
        await asyncio.gather(*(client.incr("n") for _ in range(20)))  # connections open
        killed = watcher.execute_command("CLIENT KILL", "SKIPME", "yes", "TYPE", "normal")
        assert killed >= 1
        await asyncio.sleep(0.05)  # the closed sockets reach the event loop
        results = await asyncio.gather(*(client.incr("n") for _ in range(20)))
        assert sorted(results) == list(range(21, 41))
    finally:
        watcher.close()
        await client.aclose()


async def test_a_redis_that_stops_answering_still_times_out(redis_url: str) -> None:
    """Small commands are written without a timer (they cannot block), the reply is still
    awaited with ``socket_timeout``; a large command is sent as redis-py sends it."""
    pool = BoundedPool.from_url(redis_url, max_connections=2, socket_timeout=0.3)
    pool.connection_class = lean_connection(pool.connection_class)
    client = Redis.from_pool(pool)
    try:
        big = b"x" * 100_000
        assert await client.set("big", big) and await client.get("big") == big
        try:
            with pytest.raises(RedisTimeoutError):
                await client.execute_command("DEBUG", "SLEEP", "0.6")
        except ResponseError as exc:  # a shared server may refuse DEBUG: nothing to stall
            pytest.skip(f"this Redis cannot be made to stop answering: {exc}")
        await asyncio.sleep(0.5)
        assert await client.incr("after") == 1
        connection = await pool.get_connection()
        assert connection.socket_timeout == 0.3  # the fast path put it back
        await pool.release(connection)
    finally:
        await client.aclose()
