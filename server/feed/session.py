"""One socket of the live center feed (``/ws/center``): the center and the unit desks watch
the events of the units they may see, live, and resume after a disconnect without a gap or
a duplicate.

The exchange (JSON text messages; every message the hub sends is an array of frames):

1. The client connects, authenticated by its session cookie or an ``Authorization: Bearer``
   header, or else by the ``token`` of its first frame (never a token in the URL).
2. The client sends ``{"t": "hello", "after": {"<unit>": "<stream id>", ...}}`` (``after``
   may be one stream id for every unit, or absent: live only; a unit it does not name starts
   at the live end) within ``hello_timeout_s``.
3. The hub answers ``[{"t": "welcome", "units": [...], "all_units": bool}]`` then sends
   every event after the cursors that the streams still hold, then live events, as
   ``{"t": "event", "unit", "id", "event"}`` frames, in stream order per unit. The client
   keeps the newest ``id`` per unit: its cursor for the next hello.

Catch-up, then no gap: the session reads the streams from its cursors until it is at their
ends, subscribes to the process's :class:`~server.feed.broker.FeedBroker` (holding live
entries aside), reads once more to the ends, sends that, then the held entries; every entry
at or below the unit's cursor is skipped, so nothing is sent twice. Should more live entries
come than it may hold meanwhile, it drops them and reads once more (they are in the streams).

Backpressure as on the field socket: a bounded queue and a writer; a client whose queue
fills is closed with ``SLOW_CONSUMER`` (4001) and resumes from its cursor. Close codes: see
:mod:`dispatch_field.codes` (4100 no or wrong credentials, 4104 a role that may not watch,
4004 no hello in time, 4101 a first frame that is not a hello).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import Meta
from redis.asyncio import Redis
from sqlalchemy.exc import SQLAlchemyError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from dispatch_field.codes import TRY_AGAIN_LATER, CloseCode
from server.accounts.asgi import authenticate_connection, client_address
from server.accounts.auth import Authenticator, AuthResult
from server.accounts.model import Principal
from server.directory import Directory
from server.feed.broker import FeedBroker, FeedEntry, entry_frame, stream_ends, stream_position
from server.guard import says_nothing_more
from server.ledger.streams import with_no_unit
from server.settings import Settings
from server.store import keys
from server.store.availability import RedisAvailability, is_outage
from server.store.text import text

if TYPE_CHECKING:
    from server.components import Components

log = logging.getLogger(__name__)

StreamId = Annotated[str, Meta(pattern=r"^[0-9]{1,15}-[0-9]{1,20}$")]
UnitCode = Annotated[str, Meta(pattern=r"^([a-z][a-z0-9_]{0,39}|-)$")]
WATCHERS = ("center", "admin", "unit")  # roles that may watch; a unit desk sees its own unit
MAX_HELLO_BYTES = 65_536
CATCH_UP_ROUNDS = 20  # a client still behind the streams after this many is too slow
STALL_FACTOR = 10  # close timeouts a catching-up client may take nothing before it is closed


class FeedHello(msgspec.Struct, tag="hello", tag_field="t", forbid_unknown_fields=True):
    after: dict[UnitCode, StreamId] | StreamId | None = None
    token: Annotated[str, Meta(min_length=1, max_length=200)] | None = None


_hello = msgspec.json.Decoder(FeedHello)
_encoder = msgspec.json.Encoder()


class _Closing(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass(frozen=True, slots=True)
class FeedContext:
    """What a center feed socket may use of its process."""

    settings: Settings
    redis: Redis  # the units' event streams
    feed: FeedBroker  # live entries
    directory: Directory  # which units there are
    auth: Authenticator | None  # None until the accounts are open
    availability: RedisAvailability

    @classmethod
    def of(cls, parts: Components) -> FeedContext:
        return cls(
            parts.settings, parts.redis, parts.feed, parts.directory, parts.auth, parts.availability
        )


class FeedSession:
    def __init__(self, ws: WebSocket, context: FeedContext) -> None:
        self._ws = ws
        self._context = context
        settings = context.settings
        self._batch = max(1, settings.feed_batch)
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=settings.feed_queue_frames)
        self._held: list[FeedEntry] | None = None  # live entries held during the last catch-up
        self._held_overflow = False  # some were dropped: catch up once more
        self._cursor: dict[str, tuple[int, int]] = {}
        self._all_units = False
        self._unit = ""
        self._closing: _Closing | None = None
        self._reader: asyncio.Task[None] | None = None

    # ---- what the broker and the catch-up feed in ----------------------------------------

    def sees(self, unit: str) -> bool:
        return self._all_units or unit == self._unit

    def live(self, entry: FeedEntry) -> None:
        """A live entry from the broker (never blocks)."""
        if not self.sees(entry.unit) or self._closing is not None:
            return
        if self._held is not None:
            if len(self._held) >= self._queue.maxsize:
                # Too many to hold: drop them, they are in the streams; one more catch-up
                # reads them (see run()).
                self._held.clear()
                self._held_overflow = True
            self._held.append(entry)
            return
        self._offer(entry)

    def _offer(self, entry: FeedEntry) -> None:
        if entry.position <= self._cursor.get(entry.unit, (0, 0)):
            return  # sent already (caught up past it)
        try:
            self._queue.put_nowait(entry.frame)
        except asyncio.QueueFull:
            self.close(CloseCode.SLOW_CONSUMER, "send queue full: reconnect and resume")
            return
        self._cursor[entry.unit] = entry.position

    def close(self, code: int, reason: str) -> None:
        if self._closing is not None:
            return
        self._closing = _Closing(code, reason)
        if self._queue.full():  # a slow client's backlog is dropped: it resumes
            while not self._queue.empty():
                self._queue.get_nowait()
        self._queue.put_nowait(b"")  # wake the writer
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()

    # ---- the connection --------------------------------------------------------------------

    async def run(self) -> None:
        self._reader = asyncio.current_task()
        writer = asyncio.create_task(self._writer())
        broker = self._context.feed
        try:
            hello = await self._greet()
            await self._catch_up(hello)
            broker.subscribe(self)
            # The last catch-up must read past where the reader's live entries start; live
            # entries meanwhile are held (and dropped: the catch-up reads them too).
            self._held = []
            await broker.positioned()
            for _ in range(CATCH_UP_ROUNDS):
                self._held, self._held_overflow = [], False
                await self._catch_up_once()
                if not self._held_overflow:
                    break
            else:
                raise _Closing(CloseCode.SLOW_CONSUMER, "too far behind: reconnect and resume")
            held, self._held = self._held or [], None
            for entry in held:
                self._offer(entry)
            stray = says_nothing_more()
            while self._closing is None:  # the client says nothing more; watch for its close
                message = await self._ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if not stray.take(time.monotonic()):
                    raise _Closing(CloseCode.RATE_LIMITED, "the feed takes nothing after hello")
        except _Closing as closing:
            self.close(closing.code, closing.reason)
        except WebSocketDisconnect:
            pass
        except asyncio.CancelledError:
            if self._closing is None:
                raise
        except Exception as exc:
            if is_outage(exc):
                self._context.availability.failed("center feed", exc)
                self.close(TRY_AGAIN_LATER, "live state unreachable: retry")
            else:
                log.exception("center feed session failed")
                self.close(CloseCode.INTERNAL_ERROR, "internal error: reconnect")
        finally:
            broker.unsubscribe(self)
            if self._closing is None:
                writer.cancel()
            done, _ = await asyncio.wait({writer}, timeout=self._context.settings.close_timeout_s)
            if not done:
                writer.cancel()

    async def _greet(self) -> FeedHello:
        context = self._context
        authenticator = context.auth
        if authenticator is None:
            raise _Closing(TRY_AGAIN_LATER, "accounts not open yet: retry")
        try:
            found = await authenticate_connection(self._ws.scope, authenticator)
        except (SQLAlchemyError, OSError):
            raise _Closing(TRY_AGAIN_LATER, "accounts unreachable: retry") from None
        try:
            raw = await asyncio.wait_for(self._ws.receive(), context.settings.hello_timeout_s)
        except TimeoutError:
            raise _Closing(CloseCode.HELLO_TIMEOUT, "no hello in time") from None
        if raw["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(raw.get("code", 1000))
        data = raw.get("text") or raw.get("bytes") or b""
        try:
            if len(data) > MAX_HELLO_BYTES:
                raise ValueError("too large")
            hello = _hello.decode(data)
        except (msgspec.DecodeError, ValueError) as exc:
            self._error("hello_first", f"the first frame must be a hello: {exc}")
            raise _Closing(CloseCode.HELLO_REQUIRED, "the first frame must be a hello") from None
        if found.principal is None and found.failure == "" and hello.token:
            address = client_address(self._ws.scope)
            try:
                found = await authenticator.from_token(hello.token, address)
            except (SQLAlchemyError, OSError):
                raise _Closing(TRY_AGAIN_LATER, "accounts unreachable: retry") from None
        self._admit(found)
        return hello

    def _admit(self, found: AuthResult) -> None:
        principal: Principal | None = found.principal
        if principal is None:
            if found.failure == "throttled":
                raise _Closing(CloseCode.HELLO_THROTTLED, "too many wrong credentials: wait")
            self._error("auth_failed", "a session, a bearer token or a hello token is required")
            raise _Closing(CloseCode.AUTH_FAILED, "not authenticated")
        if principal.role not in WATCHERS:
            self._error("forbidden", f"role {principal.role} may not watch the center feed")
            raise _Closing(CloseCode.FORBIDDEN, f"role {principal.role} may not watch")
        self._all_units = principal.role != "unit"
        self._unit = principal.unit

    def _units(self) -> list[str]:
        if self._all_units:
            return with_no_unit(self._context.directory.unit_codes())
        return [self._unit]

    async def _catch_up(self, hello: FeedHello) -> None:
        """Welcome the client, set its cursors, and send the history after them."""
        units = self._units()
        ends = await stream_ends(self._context.redis, units)
        after = hello.after
        for unit in units:
            if isinstance(after, dict) and unit in after:
                start = after[unit]
            elif isinstance(after, str):
                start = after
            else:
                start = ends[unit]
            self._cursor[unit] = stream_position(start)
        welcome = {
            "t": "welcome",
            "units": units,
            "all_units": self._all_units,
            "cursor": {unit: _stream_id(pos) for unit, pos in self._cursor.items()},
        }
        await self._put(_encoder.encode(welcome))
        await self._catch_up_once()

    async def _catch_up_once(self) -> None:
        """Send every entry after the cursors, up to the streams' ends (paced by the writer)."""
        redis = self._context.redis
        behind = self._units()
        while behind and self._closing is None:
            still: list[str] = []
            for unit in behind:
                start = "(" + _stream_id(self._cursor.get(unit, (0, 0)))
                entries: Any = await redis.xrange(keys.events(unit), min=start, count=self._batch)
                for stream_id, fields in entries:
                    entry = entry_frame(unit, text(stream_id), fields)
                    await self._put(entry.frame)
                    self._cursor[unit] = entry.position
                if len(entries) == self._batch:
                    still.append(unit)
            behind = still

    async def _put(self, frame: bytes) -> None:
        """Queue a frame, waiting for room (the catch-up goes at the client's pace), but not
        for ever: a client that takes nothing for ``STALL_FACTOR`` close timeouts is slow,
        closed like one whose live queue overflows (else a stalled client in catch-up would
        hold its session, and its descriptor, for good)."""
        if self._closing is None:
            stall_s = self._context.settings.close_timeout_s * STALL_FACTOR
            try:
                await asyncio.wait_for(self._queue.put(frame), stall_s)
            except TimeoutError:
                raise _Closing(
                    CloseCode.SLOW_CONSUMER, "not reading: reconnect and resume"
                ) from None

    def _error(self, code: str, message: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(
                _encoder.encode({"t": "error", "code": code, "message": message})
            )

    # ---- the writer ------------------------------------------------------------------------

    async def _writer(self) -> None:
        ws = self._ws
        try:
            while True:
                frame = await self._queue.get()
                batch = [frame] if frame else []
                while frame and len(batch) < self._batch and not self._queue.empty():
                    frame = self._queue.get_nowait()
                    if frame:
                        batch.append(frame)
                if batch:
                    # A client that takes nothing for the stall time is cut off even when no
                    # new frame arrives to overflow its queue (the catch-up may have filled
                    # it, then the streams went quiet).
                    stall_s = self._context.settings.close_timeout_s * STALL_FACTOR
                    try:
                        await asyncio.wait_for(
                            ws.send_text((b"[" + b",".join(batch) + b"]").decode()), stall_s
                        )
                    except TimeoutError:
                        self.close(CloseCode.SLOW_CONSUMER, "not reading: reconnect and resume")
                        return
                if self._closing is not None and self._queue.empty():
                    break
        except Exception:  # noqa: BLE001 - the client went away mid-send: it resumes later
            return
        closing = self._closing
        if closing is not None and ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(closing.code, closing.reason)


def _stream_id(position: tuple[int, int]) -> str:
    return f"{position[0]}-{position[1]}"


async def center_socket(ws: WebSocket) -> None:
    """``/ws/center``: accepted first, so a refusal carries a close code and a reason."""
    await ws.accept()
    await FeedSession(ws, FeedContext.of(ws.app.state.components)).run()
