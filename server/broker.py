"""Pushes between hub processes.

A push for a squad connected elsewhere goes to the process that holds it, on that process's
own Redis channel (the squad's ``hub`` field names it), never as a broadcast every process
must decode. The outbox in Redis stays the source of truth: a lost channel message is
repaired by the phone's next resume, or by the gap check when the next frame arrives.

On a Redis Cluster (:mod:`server.store.cluster`) the channel lives on the node that holds its
slot: with Redis 7 it is a shard channel (SSUBSCRIBE / SPUBLISH: a message travels to that
shard only, not over the whole cluster bus); Redis 6.2 has none, so a plain PUBLISH (which the
cluster broadcasts to every node) reaches the subscription on that node. After a failover the
subscription is lost with its node (or told ``sunsubscribe`` when its slot moves): the
listener reads the topology again and subscribes on the slot's new master; pushes published
meanwhile are repaired as any lost one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub

from server.hub import Hub
from server.store import keys
from server.store.availability import RedisAvailability, is_outage
from server.store.cluster import is_cluster, sharded_pubsub

log = logging.getLogger(__name__)
_message = msgspec.msgpack.Decoder(tuple[str, int, bytes])
_encoder = msgspec.msgpack.Encoder()


CLOSE = -1  # a message's seq that closes the squad's connection (its body: the close code)


def _nobody(squad: str, body: bytes) -> None:
    pass


class Broker:
    def __init__(
        self,
        redis: Redis,
        hub: Hub,
        availability: RedisAvailability,
        on_push: Callable[[str, bytes], None] = _nobody,
    ) -> None:
        """``on_push(squad, body)`` sees every numbered frame pushed from this process, once
        (Web Push wakes a backgrounded phone); it must not block."""
        self._redis = redis
        self._hub = hub
        self._availability = availability
        self._on_push = on_push
        self._cluster = is_cluster(redis)
        self._sharded: bool | None = None  # a cluster with shard channels (Redis 7): known
        # once asked (the first push or subscription)

    async def push(self, unit: str, squad: str, seq: int, body: bytes, hub: str) -> None:
        """Deliver a numbered frame that is already in the squad's outbox to the process
        ``hub`` that holds the squad ("" when offline: the frame waits for the resume)."""
        self._on_push(squad, body)
        if hub == self._hub.id:
            self._hub.deliver(squad, seq, body)
        elif hub:
            data = _encoder.encode((squad, seq, body))
            if self._cluster and await self._shard_channels():
                await self._redis.execute_command("SPUBLISH", keys.hub_channel(hub), data)
            else:
                await self._redis.publish(keys.hub_channel(hub), data)

    async def close_squad(self, squad: str, hub: str, code: int, reason: str) -> None:
        """Close the squad's connection wherever it is: here, or on the process ``hub``
        (a message with no frame: ``seq`` -1, the close code in the body)."""
        self._hub.close_squad(squad, code, reason)  # a hello being checked here, too
        if hub and hub != self._hub.id:
            data = _encoder.encode((squad, CLOSE, str(code).encode()))
            if self._cluster and await self._shard_channels():
                await self._redis.execute_command("SPUBLISH", keys.hub_channel(hub), data)
            else:
                await self._redis.publish(keys.hub_channel(hub), data)

    async def _shard_channels(self) -> bool:
        if self._sharded is None:
            self._sharded = await sharded_pubsub(self._redis)
        return self._sharded

    def receive(self, data: bytes) -> None:
        """A message published by another process for a squad here."""
        squad, seq, body = _message.decode(data)
        if seq == CLOSE:
            self._hub.close_squad(squad, int(body), "closed by another process")
            return
        self._hub.deliver(squad, seq, body)

    async def listen(self) -> None:
        """Receive this process's channel until cancelled, resubscribing after a Redis
        restart."""
        while True:
            pubsub: PubSub | None = None
            try:
                pubsub = await self._subscribe(keys.hub_channel(self._hub.id))
                async for message in pubsub.listen():
                    kind = message["type"]
                    if kind in ("message", "smessage"):
                        self.receive(message["data"])
                    elif kind == "sunsubscribe":  # its slot moved: subscribe where it is now
                        raise ConnectionError("shard channel moved")
                    if _cancelling():
                        raise asyncio.CancelledError
            except Exception as exc:  # noqa: BLE001 - reconnect after a Redis restart
                if _cancelling():
                    raise asyncio.CancelledError from None
                if is_outage(exc):
                    self._availability.failed("hub channel", exc)
                else:
                    log.warning("hub channel lost; resubscribing", exc_info=True)
                await asyncio.sleep(0.5)
            finally:
                if pubsub is not None and self._cluster:  # its own connection, to one node
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()

    async def _subscribe(self, channel: str) -> PubSub:
        """A subscription to ``channel``: on a single Redis its client's; on a cluster on the
        node that holds the channel's slot (topology read again first: this runs at start
        and after a failover), a shard channel where Redis has them."""
        if not self._cluster:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(channel)
            return pubsub
        cluster: Any = self._redis
        await cluster.nodes_manager.initialize()
        node = cluster.get_node_from_key(channel)
        pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
        pubsub = PubSub(pool, ignore_subscribe_messages=False)
        if await self._shard_channels():
            await pubsub.ssubscribe(channel)
        else:
            await pubsub.subscribe(channel)
        return pubsub


def _cancelling() -> bool:
    """Whether this task is being cancelled: a client library may turn the CancelledError
    raised inside a read into its own connection error, which must not keep a loop alive."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
