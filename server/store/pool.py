"""The hub's Redis client: one bounded pool per process, commands packed in C, replies parsed
in C, and nothing on a command's way to a connection but a list pop.

Why not redis-py's pools as they are (measured in ``tools.bench``, see docs/benchmarks.md):

* ``BlockingConnectionPool`` enters an ``asyncio.Condition`` and an asyncio timeout for every
  command, and its release notifies the condition; ``ConnectionPool`` takes an
  ``asyncio.Lock`` on both ways and raises instead of waiting when all connections are busy.
  Each asyncio primitive costs a ``getpid`` system call on Python 3.11, and a command on the
  hub's hot path is otherwise a few microseconds of Python.
* The asyncio connection packs commands in pure Python (``pack_command``: ~2 µs per
  argument); the sync one packs with hiredis, the asyncio one does not (redis-py 8.1).

So :class:`BoundedPool` takes a free connection without awaiting anything; only when all
``max_connections`` are busy does a command wait, in line (first come, first served), for
the next connection released, handed over directly, for at most ``wait_s``. It still bounds
the connections (Redis and the open-files limit see at most ``redis_connections`` per
process) and a burst (thousands of phones saying hello at once, each a ``connect.lua``)
queues instead of failing. A Redis restart: a connection that saw its socket closed is
reconnected when taken (``can_read`` sees the end of the stream), and a command whose
connection dies under it is sent again after a reconnect, with backoff (``Retry``) for about
1.5 s: every script is idempotent by its ids (a retried step finds its command id or version
already moved and says so), so a retry is safe. That makes redis-py's periodic health-check
``PING`` (an event-loop clock read per command) redundant: it is off.

Replies are parsed by hiredis: redis-py picks its ``_AsyncHiredisParser`` by itself when
hiredis >= 3.2 is installed (a dependency of the project, see pyproject.toml).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import hiredis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from server.settings import Settings
from server.store.mux import MAX_PIPELINE, MULTIPLEXED, Multiplexed, parsed, words
from server.store.round_trips import RoundTrips, count_round_trips

WAIT_S = 10.0  # longest a command waits for a free connection before it fails
RETRY = (ExponentialBackoff(cap=0.8, base=0.05), 5)  # ~1.5 s of reconnects per command


def open_redis(url: str, settings: Settings) -> tuple[Redis, RoundTrips]:
    """The process's Redis client on ``url`` (a :class:`BoundedPool` of
    ``settings.redis_connections``, commands packed by hiredis, the hot commands on one
    multiplexed connection: :mod:`server.store.mux`) and the counter of its round trips. The
    caller closes the client (``aclose``), which closes the pool."""
    pool = BoundedPool.from_url(
        url,
        max_connections=settings.redis_connections,
        wait_s=WAIT_S,
        retry=Retry(*RETRY),
        health_check_interval=0,
    )
    pool.connection_class = lean_connection(pool.connection_class)
    round_trips = count_round_trips(pool)
    client: LeanRedis = LeanRedis.from_pool(pool)  # type: ignore[assignment]
    client.mux = Multiplexed.for_client(client, round_trips, RETRY)
    return client, round_trips


class LeanPipeline(Pipeline):
    """redis-py's pipeline, but one without a transaction, of the commands the multiplexed
    connection takes, goes through it (:mod:`server.store.mux`); and a clean connection goes
    back to the :class:`BoundedPool` at once when the pipeline is done: redis-py shields the
    release from cancellation, which makes a task of it (a task, a context and a loop turn
    per pipeline), although the pool's release only ever awaits when the connection must be
    dropped."""

    mux: Multiplexed | None = None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack = self.command_stack
        mux = self.mux
        if (
            mux is None
            or not stack
            or len(stack) > MAX_PIPELINE
            or self.is_transaction
            or self.explicit_transaction
            or self.watching
            or self.scripts
            or not all(_multiplexed(args, options) for args, options in stack)
        ):
            return await super().execute(raise_on_error)
        try:
            replies = await mux.execute([args for args, _ in stack])
        except TypeError:  # an argument hiredis does not pack: redis-py packs or refuses it
            return await super().execute(raise_on_error)
        finally:
            if self.command_stack is stack:  # not handed on to redis-py's own execute
                await self.reset()
        response = [
            parsed(self, args[0], reply, dict(options))
            for (args, options), reply in zip(stack, replies, strict=True)
        ]
        if raise_on_error:
            self.raise_first_error(stack, response)
        return response

    async def reset(self) -> None:  # type: ignore[override]  # redis-py's stubs: RESET
        connection, pool = self.connection, self.connection_pool
        if (
            connection is not None
            and not self.watching
            and isinstance(pool, BoundedPool)
            and pool.release_at_once(connection)
        ):
            self.connection = None
        await super().reset()


class LeanRedis(Redis):
    """The hub's client: the commands in :data:`~server.store.mux.MULTIPLEXED` go through
    one shared connection (``mux``: None where it does not apply, see
    :meth:`Multiplexed.for_client`), the rest through the pool; its pipelines are
    :class:`LeanPipeline`."""

    mux: Multiplexed | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        mux = self.mux
        if mux is None or not _multiplexed(args, options):
            return await super().execute_command(*args, **options)
        try:
            (reply,) = await mux.execute((args,))
        except TypeError:  # an argument hiredis does not pack: redis-py packs or refuses it
            return await super().execute_command(*args, **options)
        if isinstance(reply, ResponseError):
            raise reply
        return parsed(self, args[0], reply, options)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = LeanPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.mux = self.mux
        return pipe

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self.mux is not None:
            await self.mux.aclose()
        await super().aclose(close_connection_pool)


def _multiplexed(args: Sequence[Any], options: Mapping[str, Any]) -> bool:
    """Whether a command goes through the multiplexed connection: one of its commands, with
    no option that changes how its reply is read (``NEVER_DECODE``, ``EMPTY_RESPONSE``)."""
    return args[0] in MULTIPLEXED and (not options or options.keys() <= {"keys"})


class BoundedPool(ConnectionPool):
    """At most ``max_connections`` connections; a command takes a free one without awaiting
    anything, or waits in line for one to be released (at most ``wait_s``, then
    ``ConnectionError``). See the module's docstring for why."""

    def __init__(self, *, wait_s: float = WAIT_S, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wait_s = wait_s
        self._waiters: deque[asyncio.Future[AbstractConnection]] = deque()

    async def get_connection(self, *_: Any, **__: Any) -> AbstractConnection:
        try:
            connection = self._available_connections.pop()
        except IndexError:
            if len(self._in_use_connections) < self.max_connections:
                connection = self.make_connection()
            else:
                connection = await self._wait_for_release()
        self._in_use_connections.add(connection)
        try:
            # A connection whose socket Redis closed (a restart), or that kept an unread
            # reply, is connected again before use; a live clean one goes out as it is.
            if not connection.is_connected or await connection.can_read():
                await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        if connection.should_reconnect():
            await connection.disconnect()
        self._hand_on(connection)

    def release_at_once(self, connection: AbstractConnection) -> bool:
        """Release ``connection`` without awaiting, if it need not be dropped first; False
        (nothing done) if it must go through :meth:`release`."""
        if connection.should_reconnect():
            return False
        self._hand_on(connection)
        return True

    def _hand_on(self, connection: AbstractConnection) -> None:
        """To the first command still waiting (the connection stays in use), else back to the
        free ones."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._in_use_connections.discard(connection)
        self._available_connections.append(connection)

    async def _wait_for_release(self) -> AbstractConnection:
        waiter: asyncio.Future[AbstractConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.wait_s):
                return await waiter
        except BaseException as exc:
            # Handed a connection just as the wait ended (timeout, cancellation): pass it on.
            if waiter.done() and not waiter.cancelled():
                self._hand_on(waiter.result())
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise RedisConnectionError(
                    f"no Redis connection free within {self.wait_s} s "
                    f"({self.max_connections} in use)"
                ) from None
            raise


# A command this small sent on a connection with nothing waiting to go out fits in the
# transport's buffer (asyncio's high-water mark is 64 KiB): the write returns at once.
_SMALL_SEND = 32 * 1024


def lean_connection(base: Any) -> Any:
    """``base`` (the pool's connection class: TCP, TLS or Unix socket) packing its commands
    with hiredis. An argument hiredis does not take (anything but str, bytes, int, float) is
    packed by redis-py as before, with its errors.

    It also sends a small command without redis-py's ``asyncio.wait_for`` around the write (a
    task and a timer per command): a write that cannot block needs no timeout. A large one,
    or one behind unsent bytes, is sent with the timeout as before; a Redis that stops
    answering is still caught by the timeout on the reply (``socket_timeout``)."""

    class Lean(base):  # type: ignore[misc, valid-type]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            timeout: float | None = self.socket_timeout  # type: ignore[has-type]
            if (
                timeout
                and self.is_connected
                and type(command) is list
                and len(command) == 1
                and len(command[0]) < _SMALL_SEND
                and not self._writer.transport.get_write_buffer_size()
            ):
                # Nothing below awaits but a drain that returns at once; the connection is
                # this caller's alone meanwhile, so the timeout is back before anyone reads.
                self.socket_timeout = None
                try:
                    await super().send_packed_command(command, check_health)
                finally:
                    self.socket_timeout = timeout
            else:
                await super().send_packed_command(command, check_health)

        def pack_command(self, *args: Any) -> list[bytes]:
            try:
                return [hiredis.pack_command(words(args))]
            except TypeError:
                return super().pack_command(*args)  # type: ignore[no-any-return]

        def pack_commands(self, commands: Any) -> list[bytes]:
            try:
                return [b"".join([hiredis.pack_command(words(cmd)) for cmd in commands])]
            except TypeError:
                return super().pack_commands(commands)  # type: ignore[no-any-return]

    Lean.__name__ = f"Lean{base.__name__}"
    return Lean
