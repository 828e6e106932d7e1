"""One squad phone's WebSocket: the reader loop and a writer task with a bounded queue.

Outgoing frames go through the session's own queue and writer, so a slow phone never blocks
the code that pushes to it: when its queue is full it is closed with ``SLOW_CONSUMER`` and
resumes from its outbox later.

Numbered frames carry their outbox ``seq``. The writer sends them in order exactly once per
connection: a frame at or below the last one sent is skipped, and a gap (a frame pushed
through another route arrived first) is filled from the outbox in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from uvicorn.protocols.utils import ClientDisconnected

from dispatch_field import protocol
from dispatch_field.codes import TRY_AGAIN_LATER, CloseCode, ErrorCode
from server.actions import CommandError
from server.assign.ranking import haversine_m
from server.guard import TokenBucket
from server.store.availability import is_outage
from server.store.requests import Actor, request_info

if TYPE_CHECKING:
    from server.hub import Services
    from server.store.squads import Presence

log = logging.getLogger(__name__)

AUTO_ARRIVAL = Actor("system", "auto-arrival")


class Closed(Exception):
    """The connection is ending with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass(slots=True)
class _Replay:
    after: int


@dataclass(slots=True)
class _Numbered:
    seq: int
    body: bytes


@dataclass(slots=True)
class _Scene:
    request: str
    lat: float
    lon: float


@dataclass(slots=True)
class SessionInfo:
    squad: str = ""
    unit: str = ""
    conn_id: str = field(default_factory=lambda: secrets.token_hex(8))


class FieldSession:
    def __init__(self, ws: WebSocket, services: Services, json_mode: bool) -> None:
        self._ws = ws
        self._services = services
        self._settings = services.settings
        self._json = json_mode
        self.info = SessionInfo()
        self._queue: asyncio.Queue[bytes | _Numbered | _Replay] = asyncio.Queue(
            maxsize=self._settings.send_queue_frames
        )
        self._sent_seq = 0
        self._scenes: dict[str, _Scene] = {}
        self._closing: Closed | None = None
        self._reader: asyncio.Task[None] | None = None
        self._positioned = False  # a position was sent on this connection
        self._ack = 0  # the phone's latest acknowledgement not yet recorded in Redis (0: none)
        self._ack_flush: asyncio.TimerHandle | None = None
        self.last_heard = time.monotonic()
        settings = self._settings
        self._frame_rate = TokenBucket(settings.frame_rate, settings.frame_burst)
        self._command_rate = TokenBucket(settings.command_rate, settings.command_burst)

    # ---- pushing (called by the hub; never blocks) ------------------------------------------

    def push_numbered(self, seq: int, body: bytes) -> None:
        self._enqueue(_Numbered(seq, body))

    def push(self, frame: protocol.HubFrame) -> None:
        self._enqueue(protocol.encode(frame))

    def _enqueue(self, item: bytes | _Numbered | _Replay) -> None:
        if self._closing is not None:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.close(CloseCode.SLOW_CONSUMER, "send queue full: reconnect and resume")

    @property
    def close_code(self) -> int | None:
        """The code this session is closing (or closed) with, None while it is open."""
        return self._closing.code if self._closing else None

    def close(self, code: int, reason: str) -> None:
        """End the session with ``code``: the writer sends what was queued before and the
        close frame; the reader stops."""
        if self._closing is None:
            self._closing = Closed(code, reason)
            if self._queue.full():  # a slow phone: drop its backlog, the outbox keeps it
                while not self._queue.empty():
                    self._queue.get_nowait()
            self._queue.put_nowait(b"")  # wake the writer
            reader = self._reader
            if reader is not None and reader is not asyncio.current_task():
                reader.cancel()  # stop reading at once: the session is over

    # ---- the connection ----------------------------------------------------------------------

    async def run(self) -> None:
        self._reader = asyncio.current_task()
        writer = asyncio.create_task(self._writer())
        try:
            await self._greet()
            while self._closing is None:
                frame = await self._receive()
                try:
                    await self._handle(frame)
                except RedisError as exc:
                    # Redis is restarting: the command was not applied; the phone retries it
                    # with the same id. Positions and acks are superseded by the next ones.
                    if not is_outage(exc):
                        raise
                    self._services.availability.failed("field frame", exc)
                    if isinstance(frame, protocol.COMMANDS):
                        self.push(
                            protocol.Error(
                                code=ErrorCode.BUSY,
                                id=frame.id,
                                message="the hub cannot apply this now: retry",
                            )
                        )
        except Closed as closed:
            self.close(closed.code, closed.reason)
        except WebSocketDisconnect:
            pass
        except asyncio.CancelledError:
            if self._closing is None:
                raise  # not our close(): the server is stopping this task
        except Exception:
            log.exception("field session of %s failed", self.info.squad or "?")
            self.close(CloseCode.INTERNAL_ERROR, "internal error: reconnect")
        finally:
            await self._finish(writer)

    async def _finish(self, writer: asyncio.Task[None]) -> None:
        if self._ack_flush is not None:
            self._ack_flush.cancel()
            self._ack_flush = None
        with contextlib.suppress(Exception):  # what the phone acknowledged last, kept
            await self._flush_ack()
        if self._closing is None:
            writer.cancel()
        # A phone that stopped reading cannot take even the close frame: give up after a while.
        done, _ = await asyncio.wait({writer}, timeout=self._settings.close_timeout_s)
        if not done:
            writer.cancel()
        await self._services.hub.left(self)

    async def _greet(self) -> None:
        try:
            frame = await asyncio.wait_for(
                self._receive(greeting=True), self._settings.hello_timeout_s
            )
        except TimeoutError:
            raise Closed(CloseCode.HELLO_TIMEOUT, "no hello in time") from None
        if not isinstance(frame, protocol.Hello):
            self.push(
                protocol.Error(code=ErrorCode.HELLO_FIRST, message="first frame must be hello")
            )
            raise Closed(CloseCode.HELLO_REQUIRED, "first frame must be hello")
        try:
            presence = await self._join(frame)
        except RedisError as exc:
            if not is_outage(exc):
                raise
            # Nothing can be resumed without the live state: the phone tries again shortly
            # (1013 is in its reconnect list) and resumes from its last_seq then.
            self._services.availability.failed("hello", exc)
            raise Closed(TRY_AGAIN_LATER, "live state unreachable: retry") from None
        welcome = protocol.Welcome(
            squad=frame.squad, last_seq=presence.seq, server_time=round(time.time(), 3)
        )
        if presence.trimmed <= frame.last_seq <= presence.seq:
            self._sent_seq = frame.last_seq
            self.push(welcome)
        else:
            # The gap cannot be replayed: frames after last_seq were dropped unacknowledged
            # (retention), or the phone is ahead of the hub (Redis lost data). Say so, and send
            # the complete current work instead of a silent gap.
            reason = "outbox_trimmed" if frame.last_seq < presence.trimmed else "hub_behind"
            self._sent_seq = presence.seq
            self.push(welcome)
            self.push(await self._resync(reason, presence.seq))
        self._enqueue(_Replay(self._sent_seq))
        await self._load_scenes()

    async def _join(self, frame: protocol.Hello) -> Presence:
        """Authenticate the squad and record it online on this hub."""
        unit = await self._authenticate(frame)
        self.info.squad, self.info.unit = frame.squad, unit
        return await self._services.hub.joined(self)

    async def _authenticate(self, hello: protocol.Hello) -> str:
        """The squad's unit. Failed hellos are counted per client address: past
        ``hello_failures_per_min`` every hello from that address is refused, unchecked, until
        its budget refills, so guessing tokens gains nothing from speed."""
        failures = self._services.failed_hellos
        address = self._ws.client.host if self._ws.client else ""
        if not failures.allows(address, time.monotonic()):
            self.push(
                protocol.Error(
                    code=ErrorCode.RATE_LIMITED,
                    message="too many failed hellos from this address: retry later",
                )
            )
            raise Closed(CloseCode.HELLO_THROTTLED, "too many failed hellos")
        unit = await self._services.squads.authenticate(hello.squad, hello.token)
        if unit is None:
            now = time.monotonic()
            if failures.spend(address, now) < 1 and (blocked := failures.emptied.note(now)):
                log.warning(
                    "too many failed hellos: %d address(es) refused for a while (latest %s)",
                    blocked,
                    address,
                )
            self.push(protocol.Error(code=ErrorCode.AUTH_FAILED, message="unknown squad or token"))
            raise Closed(CloseCode.AUTH_FAILED, "authentication failed")
        return unit

    async def _resync(self, reason: str, last_seq: int) -> protocol.Resync:
        services, info = self._services, self.info
        listed = []
        for job in await services.squads.active_jobs(info.unit, info.squad):
            record = await services.requests.read(info.unit, job["request"])
            if record is None:
                continue
            listed.append(
                protocol.Assignment(
                    assignment=job["id"],
                    state=job["state"],
                    respond_by=float(job.get("respond_by") or 0) / 1000,
                    request=request_info(record),
                )
            )
        return protocol.Resync(reason=reason, last_seq=last_seq, assignments=listed)

    async def _receive(self, greeting: bool = False) -> protocol.PhoneFrame:
        """The next valid frame; invalid ones are answered with an error frame and skipped,
        or, while ``greeting``, end the connection (HELLO_REQUIRED) after their error frame.
        A phone past its frame rate is closed (RATE_LIMITED)."""
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            data: bytes | str | None = message.get("bytes")
            if data is None:
                data = message.get("text") or ""
            self.last_heard = now = time.monotonic()
            if not self._frame_rate.take(now):
                raise self._rate_limited("frames")
            limit = self._settings.max_frame_bytes
            if len(data) > limit:
                error = protocol.Error(
                    code=ErrorCode.TOO_LARGE,
                    message=f"frame of {len(data)} bytes; the limit is {limit}",
                )
            else:
                try:
                    return protocol.decode_phone(data)
                except Exception as exc:  # noqa: BLE001 - decoding is pure: whatever it raises
                    # (RecursionError from deep nesting too) the frame is at fault, not the hub
                    error = _decode_error(data, exc)
            self.push(error)
            if greeting:
                raise Closed(CloseCode.HELLO_REQUIRED, "the first frame must be a valid hello")

    def _rate_limited(self, what: str) -> Closed:
        """Tell the phone, and return the close to raise."""
        self.push(
            protocol.Error(
                code=ErrorCode.RATE_LIMITED, message=f"{what} faster than the hub allows"
            )
        )
        return Closed(CloseCode.RATE_LIMITED, f"{what} too fast: reconnect later")

    async def _handle(self, frame: protocol.PhoneFrame) -> None:
        services, info = self._services, self.info
        match frame:
            case protocol.Pos():
                services.positions.add(info.unit, info.squad, frame.lat, frame.lon, time.time())
                if not self._positioned:  # back on the map: waiting requests may be its
                    self._positioned = True
                    services.hub.drain_soon(
                        info.unit, after_s=self._settings.position_flush_ms / 500
                    )
                if self._scenes:
                    await self._check_arrival(frame.lat, frame.lon)
            case protocol.Ack():
                self._note_ack(frame.seq)
            case protocol.Duty():
                owned = await services.squads.set_duty(
                    info.unit, info.squad, frame.on, info.conn_id
                )
                if owned < 0:
                    raise Closed(CloseCode.REPLACED, "another connection took over")
                if owned == 1:
                    services.hub.drain_soon(info.unit)
            case protocol.Hello():
                self.push(protocol.Error(code=ErrorCode.UNEXPECTED, message="already greeted"))
            case _:
                if not self._command_rate.take(time.monotonic()):
                    raise self._rate_limited("commands")
                await self._command(frame)

    async def _command(self, command: protocol.Command, actor: Actor | None = None) -> None:
        services, info = self._services, self.info
        ack, self._ack = self._ack, 0  # the pending ack rides on the command's own call
        try:
            done = await services.actions.apply(info.unit, info.squad, command, actor, ack=ack)
        except CommandError as exc:
            if ack:  # perhaps refused before its script ran: recorded later (harmless twice)
                self._note_ack(ack)
            if actor is None:
                self.push(protocol.Error(code=exc.code, message=exc.message, id=command.id))
            return
        except BaseException:
            if ack:
                self._note_ack(ack)
            raise
        if actor is None:
            self.push(protocol.Ok(id=command.id))
        if done.state.value == "en_route":
            if done.record is not None:
                self._scenes[command.assignment] = _Scene(
                    done.request_id, done.record.lat, done.record.lon
                )
            else:
                await self._track_scene(command.assignment, done.request_id)
        else:
            self._scenes.pop(command.assignment, None)
        if done.squad_available:
            services.hub.drain_soon(info.unit)

    # ---- acknowledgements ----------------------------------------------------------------------

    def _note_ack(self, seq: int) -> None:
        """A phone acknowledges every numbered frame; most are followed at once by a command
        (an offer by its accept), which records the ack in its own script call. One that is
        not is recorded ``ack_flush_ms`` later. Replay never depends on it: a resume starts
        from the phone's ``last_seq``; the ack only lets the outbox drop what it holds."""
        self._ack = max(self._ack, seq)
        if self._ack_flush is None:
            delay = self._settings.ack_flush_ms / 1000
            self._ack_flush = asyncio.get_running_loop().call_later(delay, self._flush_ack_soon)

    def _flush_ack_soon(self) -> None:
        self._ack_flush = None
        if self._ack:
            self._services.hub.spawn(self._flush_ack())

    async def _flush_ack(self) -> None:
        ack, self._ack = self._ack, 0
        if ack:
            try:
                await self._services.squads.ack(self.info.unit, self.info.squad, ack)
            except RedisError as exc:  # superseded by the phone's next ack
                if not is_outage(exc):
                    raise
                self._services.availability.failed("ack", exc)

    # ---- automatic arrival ---------------------------------------------------------------------

    async def _load_scenes(self) -> None:
        """Scenes of this squad's en-route assignments (after a reconnect too)."""
        for job in await self._services.squads.active_jobs(self.info.unit, self.info.squad):
            if job.get("state") == "en_route":
                await self._track_scene(job["id"], job["request"])

    async def _track_scene(self, assignment: str, request_id: str) -> None:
        record = await self._services.requests.read(self.info.unit, request_id)
        if record is not None:
            self._scenes[assignment] = _Scene(request_id, record.lat, record.lon)

    async def _check_arrival(self, lat: float, lon: float) -> None:
        radius = self._settings.arrival_radius_m
        for assignment, scene in list(self._scenes.items()):
            if haversine_m(lat, lon, scene.lat, scene.lon) <= radius:
                self._scenes.pop(assignment, None)
                arrive = protocol.Arrive(assignment=assignment, id=f"auto-arrive-{assignment}")
                await self._command(arrive, AUTO_ARRIVAL)

    # ---- the writer --------------------------------------------------------------------------

    async def _writer(self) -> None:
        try:
            await self._write_loop()
        except (WebSocketDisconnect, ClientDisconnected):
            return  # the phone went away mid-send: the outbox keeps what it missed
        except Exception as exc:
            if self._closing is None:
                if is_outage(exc):  # the outbox is unreachable: resume once Redis is back
                    self._services.availability.failed("outbox replay", exc)
                    self._closing = Closed(TRY_AGAIN_LATER, "live state unreachable")
                else:
                    log.exception("writer of %s failed", self.info.squad or "?")
                    self._closing = Closed(CloseCode.INTERNAL_ERROR, "internal error: reconnect")
            await self._send_close()

    async def _write_loop(self) -> None:
        greeted = False
        while True:
            item = await self._queue.get()
            if isinstance(item, bytes):
                if item:
                    await self._send(item)
            elif self._closing is not None:
                pass  # numbered frames wait in the outbox for the resume
            elif isinstance(item, _Replay):
                await self._send_kept(item.after)
                greeted = True
            elif not greeted:
                pass  # pushed while greeting: already in the outbox, the replay sends it
            elif item.seq > self._sent_seq:
                if item.seq > self._sent_seq + 1:
                    await self._send_kept(self._sent_seq)  # fill the gap from the outbox
                if item.seq > self._sent_seq:
                    await self._send(protocol.stamp_seq(item.body, item.seq))
                    self._sent_seq = item.seq
            if self._closing is not None and self._queue.empty():
                await self._send_close()
                return

    async def _send_kept(self, after: int) -> None:
        frames = await self._services.squads.frames_after(self.info.unit, self.info.squad, after)
        for seq, body in frames:
            if seq > self._sent_seq:
                await self._send(protocol.stamp_seq(body, seq))
                self._sent_seq = seq

    async def _send(self, data: bytes) -> None:
        if self._json:
            await self._ws.send_text(protocol.msgpack_to_json(data))
        else:
            await self._ws.send_bytes(data)

    async def _send_close(self) -> None:
        closing = self._closing
        assert closing is not None
        if self._ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):  # the peer may already be gone
                await self._ws.close(closing.code, closing.reason)


class _Envelope(msgspec.Struct):
    """What an error frame can say about a frame that did not decode: its type and id."""

    t: Any = None
    id: Any = None


_envelope_msgpack = msgspec.msgpack.Decoder(_Envelope)
_envelope_json = msgspec.json.Decoder(_Envelope)


def _decode_error(data: bytes | str, exc: Exception) -> protocol.Error:
    """An error frame for a frame that did not decode, naming the field and its command id.
    ``malformed`` unless the frame is a map that broke the schema (``invalid``,
    ``unknown_type``)."""
    message = str(exc)[:500] or type(exc).__name__
    if not isinstance(exc, msgspec.ValidationError):
        return protocol.Error(code=ErrorCode.MALFORMED, message=message)
    try:
        envelope = (
            _envelope_json.decode(data) if isinstance(data, str) else _envelope_msgpack.decode(data)
        )
    except msgspec.ValidationError:
        return protocol.Error(code=ErrorCode.MALFORMED, message="a frame must be a map")
    except Exception:  # noqa: BLE001 - nested too deep to look at (RecursionError): not a frame
        return protocol.Error(code=ErrorCode.MALFORMED, message=message)
    command_id = envelope.id if isinstance(envelope.id, str) else None
    code = (
        ErrorCode.UNKNOWN_TYPE
        if message.endswith("at `$.t`") and envelope.t is not None
        else ErrorCode.INVALID
    )
    return protocol.Error(code=code, message=message, id=command_id)
