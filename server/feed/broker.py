"""One reader of the units' event streams per hub process, for the center feed's sockets.

Each socket of :mod:`server.feed.session` catches up from the streams by itself (XRANGE from
its cursor), then takes live entries from this broker: one blocking XREAD for the whole
process however many center desks are connected, each entry encoded once as a frame and
handed to every subscriber without waiting (a subscriber must never block the broker: it
queues, or closes itself as a slow consumer).

XREAD names several streams, of several units, so several slots: a Redis Cluster refuses that
(even for slots of one node). There the broker reads each unit's stream with its own XREAD,
without BLOCK, all in one pipeline (redis-py sends one batch per node, in parallel), and waits
``POLL_S`` after a pass that found nothing: a live entry reaches the desks within that, at the
cost of one small pipeline per pass per process with a feed open. The broker runs only while
someone subscribes; it starts at the streams' ends (a subscriber
first catches up, then subscribes, then reads once more up to the end: see the session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from redis.asyncio import Redis

from dispatch_field.codes import CloseCode
from server.store import keys
from server.store.availability import is_outage
from server.store.cluster import is_cluster
from server.store.text import text

log = logging.getLogger(__name__)

BLOCK_MS = 1000  # one blocking read returns at least this often (new units are picked up)
POLL_S = 0.05  # on a cluster: the pause after a pass of reads that found nothing


def stream_position(stream_id: str) -> tuple[int, int]:
    """A stream id as a comparable pair: ``"1700000000000-3"`` -> (1700000000000, 3)."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class FeedEntry:
    unit: str
    stream_id: str
    position: tuple[int, int]
    frame: bytes  # {"t":"event","unit":…,"id":…,"event":{…}}, JSON


_encoder = msgspec.json.Encoder()


def entry_frame(unit: str, stream_id: str, fields: Any) -> FeedEntry:
    """The feed frame of one stream entry. An entry that is not an event object (it cannot
    happen through this code, but the stream is shared) is shown as ``{"unreadable": …}``."""
    raw = fields.get(b"e", fields.get("e"))
    event: object
    try:
        event = msgspec.json.decode(raw or b"")
        if not isinstance(event, dict):
            raise ValueError
    except (msgspec.DecodeError, ValueError):
        event = {"unreadable": text(raw) if raw is not None else None}
    frame = _encoder.encode({"t": "event", "unit": unit, "id": stream_id, "event": event})
    return FeedEntry(unit, stream_id, stream_position(stream_id), frame)


class Subscriber(Protocol):
    def live(self, entry: FeedEntry) -> None:
        """Take a live entry; must not block or raise."""

    def close(self, code: int, reason: str) -> None:
        """End the subscriber's connection with ``code``."""


async def stream_ends(redis: Redis, units: list[str]) -> dict[str, str]:
    """The id of each unit's newest entry ("0-0" for an empty or missing stream)."""
    pipe = redis.pipeline(transaction=False)
    for unit in units:
        pipe.xrevrange(keys.events(unit), count=1)
    results = await pipe.execute()
    return {
        unit: text(found[0][0]) if found else "0-0"
        for unit, found in zip(units, results, strict=True)
    }


class FeedBroker:
    def __init__(
        self,
        redis: Redis,
        units: Callable[[], list[str]],
        batch: int,
        on_outage: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        """``units``: every unit whose stream is read (called each pass: units may be added)."""
        self._redis = redis
        self._units = units
        self._batch = batch
        self._on_outage = on_outage
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._positioned = asyncio.Event()  # the running reader knows where it reads from

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self._positioned = asyncio.Event()
            self._task = asyncio.create_task(self._run())

    async def positioned(self, timeout_s: float = 2.0) -> None:
        """Wait until the reader has taken its start positions (the streams' ends when it
        started): a subscriber's last catch-up must read past them, or an entry added in
        between would come neither from the catch-up nor live. Gives up after ``timeout_s``
        (Redis unreachable: the catch-up fails on its own)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._positioned.wait(), timeout_s)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        if not self._subscribers and self._task is not None:
            self._task.cancel()
            self._task = None

    async def close(self) -> None:
        """The process is stopping: its feed sockets are closed (to reconnect elsewhere)."""
        for subscriber in list(self._subscribers):
            subscriber.close(CloseCode.SERVER_RESTART, "hub shutting down: reconnect")
        self._subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        positions: dict[str, str] = {}
        while self._subscribers:
            try:
                await self._pass(positions)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop outlives Redis restarts
                if is_outage(exc) and self._on_outage is not None:
                    self._on_outage("center feed", exc)
                else:
                    log.warning("center feed read failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)

    async def _pass(self, positions: dict[str, str]) -> None:
        units = self._units()
        new = [unit for unit in units if unit not in positions]
        if new:
            # Units already there when the broker started: from their ends. Units that appear
            # later: from their start (a new unit's stream is new).
            start = (
                await stream_ends(self._redis, new)
                if not positions
                else {unit: "0-0" for unit in new}
            )
            positions.update(start)
        self._positioned.set()
        streams: dict[Any, Any] = {keys.events(unit): positions[unit] for unit in units}
        replies: Any
        if is_cluster(self._redis):
            replies = await self._read_each(streams)
        else:
            replies = await self._redis.xread(streams, count=self._batch, block=BLOCK_MS)
        by_key = {keys.events(unit): unit for unit in units}
        for stream, entries in replies or ():
            unit = by_key[text(stream)]
            for stream_id, fields in entries:
                entry = entry_frame(unit, text(stream_id), fields)
                positions[unit] = entry.stream_id
                for subscriber in list(self._subscribers):
                    subscriber.live(entry)

    async def _read_each(self, streams: dict[Any, Any]) -> list[Any]:
        """One XREAD per stream in a pipeline (a cluster: each unit in its own slot), then a
        pause of ``POLL_S`` if nothing came; the replies as one XREAD's."""
        pipe = self._redis.pipeline(transaction=False)
        for stream, start in streams.items():
            pipe.xread({stream: start}, count=self._batch)
        replies = [reply for found in await pipe.execute() for reply in found or ()]
        if not replies:
            await asyncio.sleep(POLL_S)
        return replies
