"""One reader of the map per hub process, however many walls are connected to it.

While at least one wall is connected, the watcher reads the map from Redis every
:data:`TICK_S` (one read, the cost of one ``GET /api/v1/map``), compares it with the previous
read in memory and hands every wall the same encoded delta: the network carries what moved,
not the whole map, and the hub's cost does not grow with the number of walls. The day's
figures come from the ledger every few seconds, the ticker from the process's center-feed
broker (one stream reader per process already). With no wall connected, nothing runs.

A wall that cannot keep up (its few queued messages not taken) loses them and is sent a new
snapshot instead: a wall wants the present, not the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from server.feed.broker import FeedEntry
from server.ledger.streams import with_no_unit
from server.store import keys
from server.store.availability import is_outage
from server.store.text import text
from server.wallmap.figures import FiguresCache
from server.wallmap.state import MapState, delta, read_map, snapshot
from server.wallmap.ticker import KEPT, Ticker, item_of_frame, ticker_item

if TYPE_CHECKING:
    from server.components import Components as Services

log = logging.getLogger(__name__)

TICK_S = 1.0
QUEUED = 4  # messages a wall may have waiting before it is resynchronised
RESYNC = b""  # in a wall's queue: send a fresh snapshot

_encode = msgspec.json.Encoder().encode


class Wall:
    """One connected wall's outgoing messages (encoded JSON), bounded."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUED)

    def offer(self, message: bytes) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)


class MapWatcher:
    def __init__(self, services: Services, tick_s: float = TICK_S) -> None:
        self._services = services
        self._tick_s = tick_s
        self._walls: set[Wall] = set()
        self._task: asyncio.Task[None] | None = None
        self._state: MapState | None = None
        self._ready = asyncio.Event()
        self._figures = FiguresCache()
        self._day: dict[str, Any] = {}
        self._ticker = Ticker()
        self.reads = 0  # map reads since start (a test and the benchmark look)

    # ---- walls -----------------------------------------------------------------------------

    def join(self) -> Wall:
        """A new wall (the reader starts with the first one). Its first message is the
        snapshot :meth:`welcome` queues; a delta queued before it is for the wall to drop."""
        wall = Wall()
        self._walls.add(wall)
        if self._task is None or self._task.done():
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._run())
        return wall

    async def welcome(self, wall: Wall, timeout_s: float) -> None:
        """Queue the snapshot once the map has been read; TimeoutError if it cannot be."""
        await asyncio.wait_for(self._ready.wait(), timeout_s)
        wall.offer(self.snapshot_message())

    def leave(self, wall: Wall) -> None:
        self._walls.discard(wall)
        if not self._walls and self._task is not None:
            self._task.cancel()
            self._task = None
            self._services.feed.unsubscribe(self)
            self._state = None

    def snapshot_message(self) -> bytes:
        if self._state is None:  # between the last wall leaving and a new reader's read
            return b""
        message = snapshot(self._state)
        message["figures"] = self._state.counts() | self._day
        message["ticker"] = list(self._ticker.latest)
        return _encode(message)

    # ---- the center feed's broker calls these (see server.feed.broker.Subscriber) ----------

    def live(self, entry: FeedEntry) -> None:
        item = item_of_frame(entry.frame)
        if item is not None:
            self._ticker.add(item)

    def close(self, code: int, reason: str) -> None:
        """The process is stopping: the walls' sockets end by themselves."""

    # ---- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        await self._start_ticker()
        while self._walls:
            started = time.monotonic()
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the walls outlive a Redis restart
                if is_outage(exc):
                    self._services.availability.failed("wall map", exc)
                else:
                    log.warning("wall map read failed; retrying", exc_info=True)
            await asyncio.sleep(max(0.05, self._tick_s - (time.monotonic() - started)))

    async def _tick(self) -> None:
        services = self._services
        current = await read_map(services)
        self.reads += 1
        day = self._day
        if services.ledger is not None:
            with contextlib.suppress(Exception):  # the figures wait for the ledger
                day = await self._figures.get(
                    services.ledger.engine, services.city.zone, current.at
                )
        previous, self._state = self._state, current
        if previous is None:
            self._day = day
            self._ready.set()
            return
        message = delta(previous, current)
        figures = current.counts() | day
        if figures != previous.counts() | self._day:
            message["figures"] = figures
        self._day = day
        ticker = self._ticker.take()
        if ticker:
            message["ticker"] = ticker
        encoded = _encode(message)
        for wall in list(self._walls):
            wall.offer(encoded)

    async def _start_ticker(self) -> None:
        """The newest events of every unit (for a wall that has just come on), then live."""
        services = self._services
        units = with_no_unit(services.directory.unit_codes())
        try:
            pipe = services.redis.pipeline(transaction=False)
            for unit in units:
                pipe.xrevrange(keys.events(unit), count=KEPT)
            found: list[tuple[str, str, dict[str, Any]]] = []
            for unit, entries in zip(units, await pipe.execute(), strict=True):
                for stream_id, fields in entries:
                    raw = fields.get(b"e", fields.get("e"))
                    with contextlib.suppress(msgspec.DecodeError):
                        event = msgspec.json.decode(raw or b"")
                        if isinstance(event, dict):
                            found.append((text(stream_id), unit, event))
            found.sort(key=lambda e: tuple(int(p) for p in e[0].split("-")))
            for stream_id, unit, event in found[-KEPT:]:
                item = ticker_item(unit, stream_id, event)
                if item is not None:
                    self._ticker.add(item)
            self._ticker.take()
        except Exception as exc:  # noqa: BLE001 - no history: the ticker starts empty
            log.warning("wall ticker history unreadable: %r", exc)
        services.feed.subscribe(self)


def watcher_of(services: Services, app_state: Any) -> MapWatcher:
    """The process's watcher (made on first use, kept on the app's state)."""
    watcher = getattr(app_state, "map_watcher", None)
    if watcher is None:
        watcher = MapWatcher(services)
        app_state.map_watcher = watcher
    return watcher
