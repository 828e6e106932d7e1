"""Pushes between hub processes.

A push for a squad connected elsewhere goes to the process that holds it, on that process's
own Redis channel (the squad's ``hub`` field names it), never as a broadcast every process
must decode. The outbox in Redis stays the source of truth: a lost channel message is
repaired by the phone's next resume, or by the gap check when the next frame arrives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec
from redis.asyncio import Redis

from server.hub import Hub
from server.store import keys
from server.store.availability import RedisAvailability, is_outage

log = logging.getLogger(__name__)
_message = msgspec.msgpack.Decoder(tuple[str, int, bytes])
_encoder = msgspec.msgpack.Encoder()


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

    async def push(self, unit: str, squad: str, seq: int, body: bytes, hub: str) -> None:
        """Deliver a numbered frame that is already in the squad's outbox to the process
        ``hub`` that holds the squad ("" when offline: the frame waits for the resume)."""
        self._on_push(squad, body)
        if hub == self._hub.id:
            self._hub.deliver(squad, seq, body)
        elif hub:
            await self._redis.publish(keys.hub_channel(hub), _encoder.encode((squad, seq, body)))

    def receive(self, data: bytes) -> None:
        """A message published by another process for a squad here."""
        squad, seq, body = _message.decode(data)
        self._hub.deliver(squad, seq, body)

    async def listen(self) -> None:
        """Receive this process's channel until cancelled, resubscribing after a Redis
        restart."""
        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(keys.hub_channel(self._hub.id))
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self.receive(message["data"])
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


def _cancelling() -> bool:
    """Whether this task is being cancelled: a client library may turn the CancelledError
    raised inside a read into its own connection error, which must not keep a loop alive."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
