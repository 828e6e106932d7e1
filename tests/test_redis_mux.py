"""The hub's multiplexed Redis connection (server.store.mux) on a real Redis: every caller's
commands on one connection, the replies handed back to the right caller and parsed as
redis-py parses them, errors in their place, a cut connection made again, a silent Redis
timed out, a cancelled caller leaving the others in step."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis as redis_sync
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.settings import Settings
from server.store.embedded import EmbeddedRedis
from server.store.mux import MULTIPLEXED, Multiplexed
from server.store.pool import LeanRedis, open_redis
from server.store.scripts import HubScript
from tests.conftest import skip_on_cluster
from tests.helpers import eventually


@pytest.fixture
def redis_url(redis_url: str) -> str:
    skip_on_cluster(redis_url, "the multiplexed connection is the single Redis's client")
    return redis_url


def _client(url: str, **settings: Any) -> LeanRedis:
    client, _ = open_redis(url, Settings(**settings))
    assert isinstance(client, LeanRedis) and isinstance(client.mux, Multiplexed)
    return client


def _connections(url: str) -> int:
    watcher = redis_sync.Redis.from_url(url)
    try:
        return len(watcher.client_list(_type="normal")) - 1  # not the watcher itself
    finally:
        watcher.close()


async def _fill(client: Any) -> None:
    await client.delete("s", "h", "z", "l", "g", "x", "set")
    await client.hset("h", mapping={"a": "1", "b": "2"})
    await client.zadd("z", {"m": 1.5, "n": 2.0})
    await client.sadd("set", "p", "q")
    await client.rpush("l", "one", "two")
    await client.geoadd("g", (112.45, 34.62, "squad-a"))
    await client.xadd("x", {"e": "1"}, id="1-1")


# What the hub's code reads back through redis-py's response callbacks (bool, dict, float,
# pairs, sets); each is compared with the pool's own path on the same data.
READS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("set", ("s", "v"), {}),
    ("set", ("s", "w"), {"nx": True}),
    ("get", ("s",), {}),
    ("hgetall", ("h",), {}),
    ("hget", ("h", "a"), {}),
    ("hmget", ("h", ["a", "b", "c"]), {}),
    ("zscore", ("z", "m"), {}),
    ("zrange", ("z", 0, -1), {"withscores": True}),
    ("zrangebyscore", ("z", 0, 10), {"withscores": True}),
    ("smembers", ("set",), {}),
    ("sismember", ("set", "p"), {}),
    ("lrange", ("l", 0, -1), {}),
    ("geopos", ("g", "squad-a"), {}),
    ("geosearch", ("g",), {"longitude": 112.45, "latitude": 34.62, "radius": 1, "unit": "km"}),
    ("xrange", ("x",), {}),
    ("expire", ("h", 100), {}),
    ("exists", ("h", "nothing"), {}),
    ("incr", ("counter",), {}),
]


async def test_replies_are_parsed_as_redis_py_parses_them(redis_url: str) -> None:
    client = _client(redis_url)
    mux = client.mux
    try:
        for name, args, kwargs in READS:
            client.mux = None
            await _fill(client)
            await client.delete("counter")
            through_pool = await getattr(client, name)(*args, **kwargs)
            client.mux = mux
            await _fill(client)
            await client.delete("counter")
            through_mux = await getattr(client, name)(*args, **kwargs)
            assert through_mux == through_pool, name
            assert type(through_mux) is type(through_pool), name
    finally:
        client.mux = mux
        await client.aclose()


async def test_many_callers_share_one_connection_each_gets_its_own_reply(
    redis_url: str,
) -> None:
    client, round_trips = open_redis(redis_url, Settings(redis_connections=4))
    try:
        before = _connections(redis_url)
        counts = round_trips.count
        results = await asyncio.gather(*(client.incr(f"n{i % 7}") for i in range(2_100)))
        # Each key counted 1..300, and each caller got the value its own INCR made.
        for key in range(7):
            assert sorted(results[key::7]) == list(range(1, 301))
        assert round_trips.count - counts == 2_100
        assert _connections(redis_url) == before + 1  # one connection, not the pool's four
        pool = client.connection_pool
        assert not pool._in_use_connections and not pool._available_connections  # type: ignore[attr-defined]
    finally:
        await client.aclose()


async def test_a_pipeline_is_one_write_with_its_errors_in_their_place(redis_url: str) -> None:
    client, round_trips = open_redis(redis_url, Settings())
    try:
        await client.set("text", "not a number")
        before = round_trips.count
        pipe = client.pipeline(transaction=False)
        pipe.set("a", 1).incr("text").hgetall("nothing").incr("a")
        answers = await pipe.execute(raise_on_error=False)
        assert round_trips.count - before == 1
        assert answers[0] is True and answers[2] == {} and answers[3] == 2
        assert isinstance(answers[1], ResponseError) and "not an integer" in str(answers[1])
        pipe = client.pipeline(transaction=False)
        pipe.incr("a").incr("text")
        with pytest.raises(ResponseError, match=r"Command # 2 \(INCRBY text 1\)"):
            await pipe.execute()
        assert await client.get("a") == b"3"  # the pipeline's first command was carried out
        assert not pipe.command_stack  # reset for its next use
    finally:
        await client.aclose()


async def test_a_script_redis_lost_is_loaded_again(redis_url: str) -> None:
    client = _client(redis_url)
    try:
        script = client.register_script("return redis.call('INCR', KEYS[1])")
        await client.script_flush()
        with pytest.raises(NoScriptError):
            await client.evalsha(script.sha, 1, "k")
        assert await script(keys=["k"]) == 1  # redis-py's Script loads it and calls again
        assert await script(keys=["k"]) == 2
    finally:
        await client.aclose()


async def test_the_hubs_script_object_loads_a_lost_script_and_counts_one_round_trip(
    redis_url: str,
) -> None:
    """``HubScript`` (every script of the hub): one round trip a call on the multiplexed
    connection; after Redis lost its scripts, loaded again and called once more; queued on
    a pipeline, redis-py's own path."""
    client, round_trips = open_redis(redis_url, Settings())
    try:
        script = HubScript(client, "return redis.call('INCRBY', KEYS[1], ARGV[1])")
        await client.script_load(script.script)
        before = round_trips.count
        assert await script(keys=["k"], args=[2]) == 2
        assert round_trips.count - before == 1
        await client.script_flush()
        assert await script(keys=["k"], args=[3]) == 5  # NOSCRIPT, load, call again
        pipe = client.pipeline(transaction=False)
        await script(keys=["k"], args=[1], client=pipe)
        assert await pipe.execute() == [6]
    finally:
        await client.aclose()


async def test_what_hiredis_cannot_pack_goes_to_redis_py(redis_url: str) -> None:
    client = _client(redis_url)
    try:
        with pytest.raises(DataError):
            await client.set("k", None)  # type: ignore[arg-type]
        pipe = client.pipeline(transaction=False)
        pipe.set("k", "v").set("j", True)  # type: ignore[arg-type]
        with pytest.raises(DataError):
            await pipe.execute()
        assert await client.get("k") is None  # nothing of the refused pipeline was sent
    finally:
        await client.aclose()


async def test_commands_it_does_not_take_keep_the_pool(redis_url: str) -> None:
    """Blocking commands and transactions go through redis-py's pool: a BLPOP waiting on
    its own connection does not hold up the commands behind it."""
    assert not {"BLPOP", "XREADGROUP", "WAIT", "MULTI", "WATCH", "SELECT"} & MULTIPLEXED
    client = _client(redis_url)
    try:
        waiting = asyncio.create_task(client.blpop(["queue"], timeout=5))
        await asyncio.sleep(0.05)
        assert await asyncio.wait_for(client.incr("fast"), 1) == 1
        await client.rpush("queue", "x")
        assert await waiting == (b"queue", b"x")
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr("fast").incr("fast")
            assert await pipe.execute() == [2, 3]
    finally:
        await client.aclose()


async def test_a_cut_connection_is_made_again_and_the_commands_on_it_sent_again(
    embedded_redis: EmbeddedRedis,
) -> None:
    """On this process's own Redis: CLIENT KILL and a busy script would reach the tests of
    other processes on a shared one."""
    client = _client(embedded_redis.url)
    watcher = redis_sync.Redis.from_url(embedded_redis.url)
    watcher.delete("n", "slow")  # the embedded Redis is shared by the tests of this process
    try:
        script = client.register_script(
            "redis.call('INCR', KEYS[1]) local t = redis.call('TIME') "
            "local stop = tonumber(t[1]) * 1000000 + tonumber(t[2]) + 200000 "
            "repeat t = redis.call('TIME') until tonumber(t[1]) * 1000000 + tonumber(t[2]) >= stop "
            "return redis.call('GET', KEYS[1])"
        )
        await client.incr("n")  # connected
        # A command in flight when the connection is cut: sent again on a new one.
        slow = asyncio.create_task(script(keys=["slow"]))
        await asyncio.sleep(0.05)
        watcher.execute_command("CLIENT KILL", "SKIPME", "yes", "TYPE", "normal")
        results = await asyncio.gather(*(client.incr("n") for _ in range(20)))
        assert sorted(results) == list(range(2, 22))
        assert int(await slow) >= 1  # its first run may have counted: the script went again
    finally:
        watcher.close()
        await client.aclose()


async def test_a_redis_that_stops_answering_times_out(embedded_redis: EmbeddedRedis) -> None:
    client, _ = open_redis(f"{embedded_redis.url}?socket_timeout=0.3", Settings())
    assert isinstance(client, LeanRedis) and client.mux is not None
    stall = (
        "local stop = tonumber(redis.call('TIME')[1]) + 2 "
        "repeat until tonumber(redis.call('TIME')[1]) >= stop"
    )
    try:
        busy = asyncio.create_task(client.eval(stall, 0))
        await asyncio.sleep(0.05)
        with pytest.raises(RedisTimeoutError, match="no reply from Redis within 0.3 s"):
            await busy
        # When Redis answers again, the next command is made on a new connection.
        for _ in range(40):
            try:
                assert await client.incr("after") >= 1
                break
            except (RedisTimeoutError, RedisConnectionError):
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("no answer after the stall")
    finally:
        await client.aclose()


async def test_a_cancelled_caller_leaves_the_others_in_step(
    embedded_redis: EmbeddedRedis,
) -> None:
    client = _client(embedded_redis.url)
    try:
        script = client.register_script(
            "local t = redis.call('TIME') "
            "local stop = tonumber(t[1]) * 1000000 + tonumber(t[2]) + 100000 "
            "repeat t = redis.call('TIME') until tonumber(t[1]) * 1000000 + tonumber(t[2]) >= stop "
            "return ARGV[1]"
        )
        await script(args=["warm"])
        first = asyncio.create_task(script(args=["first"]))
        second = asyncio.create_task(client.echo("second"))
        await asyncio.sleep(0.02)
        first.cancel()
        assert await second == b"second"  # not the cancelled caller's reply
        assert await client.echo("third") == b"third"
    finally:
        await client.aclose()


async def test_a_closed_client_refuses_at_once(redis_url: str) -> None:
    client = _client(redis_url)
    await client.incr("n")
    mux = client.mux
    await client.aclose()
    assert mux is not None
    with pytest.raises(RedisConnectionError, match="closed"):
        await mux.execute([("INCR", "n")])


# ---- against a scripted server: what a real Redis rarely does on cue ----------------------------


class _Scripted:
    """A local TCP server speaking just enough RESP for these tests: each read is answered
    with the next of ``replies`` (None: no answer, ever). Counts connections made and ended."""

    def __init__(self, replies: list[bytes | None]) -> None:
        self.replies = replies
        self.received: list[bytes] = []
        self.accepted = 0
        self.ended = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> _Scripted:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while data := await reader.read(65536):
                self.received.append(data)
                reply = self.replies.pop(0) if self.replies else None
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.ended += 1
            writer.close()


async def _until(condition: Callable[[], bool]) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check, timeout_s=3.0, interval_s=0.01)


async def test_a_redis_still_loading_is_asked_again_as_redis_py_would() -> None:
    """``-LOADING`` (a Redis restarted with its data, still reading it) is a connection
    error in redis-py: raised, and the command sent again. Not an answer to hand on."""
    loading = b"-LOADING Redis is loading the dataset in memory\r\n"
    async with _Scripted([loading, b"$1\r\nv\r\n"]) as server:
        client, _ = open_redis(f"redis://127.0.0.1:{server.port}/0?protocol=2", Settings())
        try:
            assert isinstance(client, LeanRedis) and client.mux is not None
            assert await client.get("k") == b"v"
            assert server.received == [b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"] * 2
        finally:
            await client.aclose()


async def test_a_connection_whose_handshake_never_ends_is_closed_not_left_open() -> None:
    """Redis accepts but never answers HELLO: each try times out, and each socket it made
    is closed (none left open for the process's life)."""
    async with _Scripted([]) as server:
        url = f"redis://127.0.0.1:{server.port}/0?socket_connect_timeout=0.1"
        client, _ = open_redis(url, Settings())
        try:
            with pytest.raises(RedisConnectionError):
                await client.get("k")
            assert server.accepted >= 2  # tried again
            await _until(lambda: server.ended == server.accepted)
        finally:
            await client.aclose()


async def test_closing_the_client_while_it_connects_leaves_no_connection() -> None:
    """``aclose`` while the handshake is under way: the caller hears the client was closed,
    and the connection is not kept (nor left open)."""
    async with _Scripted([]) as server:
        client, _ = open_redis(f"redis://127.0.0.1:{server.port}/0", Settings())
        call = asyncio.create_task(client.get("k"))
        await _until(lambda: bool(server.received))  # the HELLO is in, unanswered
        await client.aclose()
        with pytest.raises(RedisConnectionError, match="closed"):
            await call
        assert not call.cancelled()
        await _until(lambda: server.ended == server.accepted == 1)
