"""One Redis connection shared by every command in flight: the hub's hot path to Redis.

A command through redis-py's asyncio client, even with the hub's :class:`BoundedPool` and
hiredis, goes through a dozen coroutines: the pool, the retry wrapper, the observability
hooks (awaited for every command in redis-py 8), the stream writer's drain, the stream
reader, a timeout around the read. On this machine that was about 150 µs of the hub's CPU per
script call against about 75 µs for the same call written on a socket and its reply parsed
as it arrives (``tools.bench``, ``redis_call``; docs/benchmarks.md, session 8). A request's
lifecycle makes about a dozen of them, intake to resolution, citizen messages included.

So :class:`Multiplexed` writes each command (or a pipeline's commands, in one write) on one
connection and hands the replies back in order, as they arrive: Redis answers a connection's
commands in the order it sent them. A caller awaits one future; nothing else is allocated.

What it takes and what it leaves (the rest goes through redis-py's pool as before):

* only the commands in :data:`MULTIPLEXED`: no blocking command (``BLPOP``, ``XREADGROUP``
  with ``BLOCK``, ``WAIT``) that would hold up everyone behind it, nothing that changes the
  connection's state (``SELECT``, ``WATCH``, ``MULTI``, ``CLIENT``, subscriptions);
* pipelines without a transaction, of at most :data:`MAX_PIPELINE` commands (a large batch,
  the positions' flush, keeps its own connection: the commands queued behind it here would
  wait for all of it);
* arguments hiredis packs (str, bytes, int, float); anything else is packed, or refused with
  its error, by redis-py.

A lost connection (a Redis restart, ``CLIENT KILL``) fails the commands waiting on it, and
each is sent again on a new connection, with the same backoff as the pool's commands (about
1.5 s): the hub's scripts are idempotent by their ids, and redis-py retries the same way.
``socket_timeout``, when configured, bounds the wait for a reply: one timer per connection
checks the oldest command in flight, not a timer per command.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import (
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.backoff import AbstractBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import check_protocol_version

from server.store.round_trips import RoundTrips

# Non-blocking commands that leave the connection as they found it.
MULTIPLEXED = frozenset(
    {
        *("EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "PING", "TIME", "ECHO"),
        *("GET", "SET", "SETNX", "SETEX", "PSETEX", "GETDEL", "GETEX", "MGET", "MSET"),
        *("INCR", "INCRBY", "INCRBYFLOAT", "DECR", "DECRBY"),
        *("DEL", "UNLINK", "EXISTS", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "PERSIST"),
        *("TTL", "PTTL", "TYPE"),
        *("HGET", "HSET", "HSETNX", "HMGET", "HMSET", "HGETALL", "HDEL", "HEXISTS"),
        *("HINCRBY", "HINCRBYFLOAT", "HLEN", "HKEYS", "HVALS"),
        *("SADD", "SREM", "SMEMBERS", "SISMEMBER", "SMISMEMBER", "SCARD"),
        *("ZADD", "ZREM", "ZSCORE", "ZMSCORE", "ZCARD", "ZCOUNT", "ZRANGE", "ZRANGEBYSCORE"),
        *("ZREVRANGE", "ZREVRANGEBYSCORE", "ZRANK", "ZINCRBY", "ZREMRANGEBYSCORE"),
        *("LPUSH", "RPUSH", "LRANGE", "LLEN", "LTRIM", "LINDEX"),
        *("XADD", "XRANGE", "XREVRANGE", "XLEN", "XACK"),
        *("GEOADD", "GEOPOS", "GEOSEARCH", "GEODIST"),
    }
)
MAX_PIPELINE = 64  # a larger pipeline keeps a connection of its own (see the module's doc)


class _Batch:
    """Commands written together, and their replies as they come."""

    __slots__ = ("future", "left", "replies", "sent_at")

    def __init__(self, future: asyncio.Future[list[Any]], count: int, sent_at: float) -> None:
        self.future = future
        self.left = count
        self.replies: list[Any] = []
        self.sent_at = sent_at


_MORE = object()  # hiredis: no whole reply yet
_PUSH = hiredis.PushNotification


class _Link(asyncio.Protocol):
    """One connection: batches written in order, replies handed back in that order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(
            protocolError=InvalidResponse, replyError=BaseParser.parse_error, notEnoughData=_MORE
        )
        self.waiting: deque[_Batch] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        # Made in the loop it serves; asking for the running loop on each command costs a
        # getpid system call on Python 3.11.
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader, waiting = self._reader, self.waiting
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not _MORE:
                if type(reply) is _PUSH:  # RESP3's out-of-band messages: none asked for here
                    continue
                batch = waiting[0]
                batch.replies.append(reply)
                batch.left -= 1
                if not batch.left:
                    waiting.popleft()
                    if not batch.future.done():  # its caller may have been cancelled
                        batch.future.set_result(batch.replies)
        except (InvalidResponse, IndexError) as exc:  # garbage, or a reply nobody asked for
            self.fail(RedisConnectionError(f"Redis connection out of step: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Redis connection lost: {exc or 'closed'}"))

    def fail(self, error: Exception) -> None:
        """Close the connection and fail every batch still waiting on it."""
        if self.lost is None:
            self.lost = error
        if self.transport is not None:
            self.transport.abort()
        while self.waiting:
            future = self.waiting.popleft().future
            if not future.done():
                future.set_exception(error)

    def send(self, packed: bytes, count: int) -> asyncio.Future[list[Any]]:
        loop = self._loop
        future: asyncio.Future[list[Any]] = loop.create_future()
        if self.lost is not None or self.transport is None:
            future.set_exception(self.lost or RedisConnectionError("Redis connection closed"))
            return future
        self.waiting.append(_Batch(future, count, loop.time()))
        self.transport.write(packed)
        return future


class Multiplexed:
    """Commands from any number of callers on one connection, made (again) when needed."""

    def __init__(
        self,
        prototype: Connection | UnixDomainSocketConnection,
        *,
        round_trips: RoundTrips,
        backoff: AbstractBackoff,
        retries: int,
    ) -> None:
        self._prototype = prototype  # never connected: where and how to connect
        self._round_trips = round_trips
        self._backoff = backoff
        self._retries = retries
        self._timeout: float | None = prototype.socket_timeout
        self._link: _Link | None = None
        self._connecting: asyncio.Future[_Link] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    @classmethod
    def for_client(cls, client: Redis, round_trips: RoundTrips, retry: Any) -> Multiplexed | None:
        """The multiplexed path to ``client``'s server, connected as the pool's connections
        are (address, credentials, database, RESP version, timeouts: read from a connection
        the pool makes and never connects), or None where it does not apply: TLS, replies
        decoded as text, a credential provider."""
        prototype = client.connection_pool.make_connection()
        if (
            not isinstance(prototype, Connection | UnixDomainSocketConnection)
            or isinstance(prototype, SSLConnection)
            or prototype.encoder.decode_responses
            or prototype.credential_provider is not None
        ):
            return None
        backoff, retries = retry
        return cls(prototype, round_trips=round_trips, backoff=backoff, retries=retries)

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The replies to ``commands`` (errors as exception objects, in their place), sent
        in one write. Raises ``TypeError`` before anything is sent when hiredis cannot pack
        an argument; ``redis.exceptions.ConnectionError`` when no connection could be made
        and kept for the retries' time."""
        packed = b"".join([hiredis.pack_command(words(command)) for command in commands])
        count = len(commands)
        attempt = 0
        while True:
            try:
                link = self._link
                if link is None or link.lost is not None:
                    link = await self._connected()
                self._round_trips.count += 1
                future = link.send(packed, count)
                if self._timeout and self._watchdog is None:
                    self._watch()
                replies = await future
                for reply in replies:
                    # LOADING, too many clients, ...: redis-py's parser raises these (and its
                    # retry sends the command again); nothing of the batch was carried out
                    if isinstance(reply, RedisConnectionError):
                        raise reply
                return replies
            except (RedisConnectionError, OSError, TimeoutError) as exc:
                attempt += 1
                if self._closed or attempt > self._retries:
                    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
                        raise
                    raise RedisConnectionError(f"Redis unreachable: {exc!r}") from exc
                await asyncio.sleep(self._backoff.compute(attempt))

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._link is not None:
            self._link.fail(RedisConnectionError("the client was closed"))
            self._link = None

    async def _connected(self) -> _Link:
        """The live connection: made by the first caller that needs it, awaited by the
        others meanwhile."""
        if self._closed:
            raise RedisConnectionError("the client was closed")
        connecting = self._connecting
        if connecting is None:
            self._connecting = connecting = asyncio.ensure_future(self._connect())
            connecting.add_done_callback(self._connected_or_not)  # if all callers went away
        try:
            return await asyncio.shield(connecting)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if connecting.cancelled() and not (task and task.cancelling()):  # by aclose
                raise RedisConnectionError("the client was closed") from None
            raise

    def _connected_or_not(self, connecting: asyncio.Future[_Link]) -> None:
        if self._connecting is connecting:
            self._connecting = None
        if not connecting.cancelled():
            connecting.exception()  # retrieved: its callers, if any, had it raised

    async def _connect(self) -> _Link:
        link = _Link()
        try:
            await self._set_up(link)
            if self._closed:  # closed while connecting: nobody may use this connection
                raise RedisConnectionError("the client was closed")
        except BaseException:  # a timeout, a refusal, a cancellation: no socket left open
            link.fail(RedisConnectionError("Redis connection not made"))
            raise
        self._link = link
        return link

    async def _set_up(self, link: _Link) -> None:
        """Connect ``link`` and say HELLO (AUTH, SELECT, SETNAME) as redis-py does."""
        loop = asyncio.get_running_loop()
        prototype = self._prototype
        async with asyncio.timeout(prototype.socket_connect_timeout or 10.0):
            if isinstance(prototype, UnixDomainSocketConnection):
                await loop.create_unix_connection(lambda: link, prototype.path)
            else:
                await loop.create_connection(lambda: link, prototype.host, prototype.port)
            setup: list[tuple[Any, ...]] = []
            password, user = prototype.password, prototype.username
            credentials = ("AUTH", user or "default", password) if password else ()
            if check_protocol_version(prototype.protocol, 3):  # as redis-py's connections
                setup.append(("HELLO", 3, *credentials))
            elif password:
                setup.append(("AUTH", user, password) if user else ("AUTH", password))
            if prototype.client_name:
                setup.append(("CLIENT", "SETNAME", prototype.client_name))
            if prototype.db:
                setup.append(("SELECT", prototype.db))
            if setup:
                packed = b"".join(hiredis.pack_command(command) for command in setup)
                for reply in await link.send(packed, len(setup)):
                    if isinstance(reply, Exception):
                        raise reply

    def _watch(self) -> None:
        """Fail the connection when its oldest command has waited ``socket_timeout`` for
        its reply (one timer per connection, moved along as replies come)."""
        timeout = self._timeout
        assert timeout
        loop = asyncio.get_running_loop()
        link = self._link
        if link is None or link.lost is not None or not link.waiting:
            self._watchdog = None
            return
        overdue = link.waiting[0].sent_at + timeout - loop.time()
        if overdue <= 0:
            self._watchdog = None
            link.fail(RedisTimeoutError(f"no reply from Redis within {timeout} s"))
            return
        self._watchdog = loop.call_later(overdue, self._watch_again)

    def _watch_again(self) -> None:
        self._watchdog = None
        self._watch()


_NAMES: dict[Any, tuple[bytes, ...]] = {}  # 'SCRIPT LOAD' -> (b'SCRIPT', b'LOAD'), ...


def words(command: Sequence[Any]) -> tuple[Any, ...]:
    """The command with its name in words (redis-py passes 'SCRIPT LOAD' as one argument),
    as redis-py's own packer sends it."""
    name = command[0]
    split = _NAMES.get(name)
    if split is None:
        split = tuple((name.encode() if isinstance(name, str) else name).split())
        if len(_NAMES) < 1024:  # command names only; a bound against anything odd
            _NAMES[name] = split
    return (*split, *command[1:])


def parsed(client: Redis, name: Any, reply: Any, options: dict[str, Any]) -> Any:
    """``reply`` as redis-py's client would hand it back: through the command's response
    callback (``HGETALL`` -> dict, ``SET`` -> bool, ...) with its options."""
    if isinstance(reply, ResponseError):
        return reply
    callbacks = client.response_callbacks  # case-insensitive by [] and in, not by .get
    if name not in callbacks:
        return reply
    options.pop("keys", None)
    result = callbacks[name](reply, **options)
    assert not inspect.isawaitable(result), f"{name}: an awaitable response callback"
    return result
