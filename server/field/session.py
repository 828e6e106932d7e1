"""One squad phone's connection: the reader loop and a writer task with a bounded queue,
over a :class:`~server.field.transport.Transport`.

Outgoing frames go through the session's own queue and writer, so a slow phone never blocks
the code that pushes to it: when its queue is full it is closed with ``SLOW_CONSUMER`` and
resumes from its outbox later.

Numbered frames carry their outbox ``seq``; the writer sends them in order exactly once per
connection (:class:`~server.field.core.Sequencer`), filling a gap from the outbox in Redis.
What a frame does once the squad is greeted is :class:`~server.field.router.FieldRouter`'s.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from redis.exceptions import RedisError

from dispatch_field import protocol
from dispatch_field.codes import TRY_AGAIN_LATER, CloseCode, ErrorCode
from server.field.context import FieldContext
from server.field.core import Closed, Sequencer, Step, decode_error, plan_resume
from server.field.router import FieldRouter, rate_limited
from server.field.transport import Disconnected, Transport
from server.guard import TokenBucket
from server.metrics import frame_type
from server.store.availability import is_outage
from server.store.requests import request_info
from server.store.squads import Presence

log = logging.getLogger(__name__)
monotonic = time.monotonic
decode_phone = protocol.decode_phone


@dataclass(slots=True)
class _Replay:
    frames: tuple[tuple[int, bytes], ...]  # read with the hello: (seq, body), in order


@dataclass(slots=True)
class _Numbered:
    seq: int
    body: bytes


_CONNECTIONS = itertools.count(1)
_PROCESS_TAG = secrets.token_hex(4)


def _connection_id() -> str:
    """Unique across processes and restarts (a random tag per process, then a count): a
    connection id only tells a squad's connections apart, it grants nothing, and a reconnect
    storm makes 10,000 of them at once."""
    return f"{_PROCESS_TAG}{next(_CONNECTIONS):x}"


class FieldSession:
    def __init__(self, transport: Transport, context: FieldContext) -> None:
        self._transport = transport
        self._context = context
        self._settings = settings = context.settings
        self.unit = ""
        self.squad = ""
        self.conn_id = _connection_id()
        self._queue: asyncio.Queue[bytes | _Numbered | _Replay] = asyncio.Queue(
            maxsize=settings.send_queue_frames
        )
        self._sequencer = Sequencer()
        self._closing: Closed | None = None
        self._reader: asyncio.Task[None] | None = None
        self._router = FieldRouter(context, self)
        self.last_heard = time.monotonic()
        self._frame_rate = TokenBucket(settings.frame_rate, settings.frame_burst)
        self._max_frame_bytes = settings.max_frame_bytes
        self._parked = False  # the reader waits for the next frame, having done the last

    # ---- pushing (called by the hub; never blocks) ---------------------------------------

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

    # ---- the connection ------------------------------------------------------------------

    async def run(self) -> None:
        self._reader = asyncio.current_task()
        writer = asyncio.create_task(self._writer())
        try:
            if self._closing is None:  # closed before it ran: send what is queued, and end
                await self._greet()
                self._transport.set_inline(self._inline)
            while self._closing is None:
                frame = await self._receive()
                try:
                    await self._router.handle(frame)
                except RedisError as exc:
                    # Redis is restarting: the command was not applied; the phone retries it
                    # with the same id. Positions and acks are superseded by the next ones.
                    if not is_outage(exc):
                        raise
                    self._context.availability.failed("field frame", exc)
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
        except Disconnected:
            pass
        except asyncio.CancelledError:
            if self._closing is None:
                raise  # not our close(): the server is stopping this task
        except Exception:
            log.exception("field session of %s failed", self.squad or "?")
            self.close(CloseCode.INTERNAL_ERROR, "internal error: reconnect")
        finally:
            self._transport.set_inline(None)
            await self._finish(writer)
            # Nothing of this session refers back to it any more: it goes with its last
            # reference, not at the next full garbage collection.
            self._reader = None
            self._router.detach()

    async def _finish(self, writer: asyncio.Task[None]) -> None:
        try:  # what the phone acknowledged last, kept
            await self._router.flush_ack()
        except Exception:  # noqa: BLE001 - the next resume's acks supersede it
            log.debug("last ack of %s not recorded", self.squad, exc_info=True)
        if self._closing is None:
            writer.cancel()
        # A phone that stopped reading cannot take even the close frame: give up after a while.
        done, _ = await asyncio.wait({writer}, timeout=self._settings.close_timeout_s)
        if not done:
            writer.cancel()
        await self._context.presence.left(self)

    async def _greet(self) -> None:
        try:
            async with asyncio.timeout(self._settings.hello_timeout_s):  # no task of its own
                frame = await self._receive(greeting=True)
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
            self._context.availability.failed("hello", exc)
            raise Closed(TRY_AGAIN_LATER, "live state unreachable: retry") from None
        welcome = protocol.Welcome(
            squad=frame.squad, last_seq=presence.seq, server_time=round(time.time(), 3)
        )
        plan = plan_resume(frame.last_seq, presence.seq, presence.trimmed, presence.acked)
        self._sequencer.sent = plan.sent_seq
        self.push(welcome)
        if plan.resync is not None:
            # Say so, and send the complete current work instead of a silent gap.
            self.push(await self._resync(plan.resync, presence))
        self._enqueue(_Replay(presence.frames))
        await self._router.joined(presence)

    async def _join(self, hello: protocol.Hello) -> Presence:
        """Authenticate the squad and record it online on this hub: one round trip once this
        process knows the squad's unit. Failed hellos are counted per client address: past
        ``hello_failures_per_min`` every hello from that address is refused, unchecked, until
        its budget refills, so guessing tokens gains nothing from speed."""
        context = self._context
        failures = context.failed_hellos
        address = self._transport.address
        if not failures.allows(address, time.monotonic()):
            self.push(
                protocol.Error(
                    code=ErrorCode.RATE_LIMITED,
                    message="too many failed hellos from this address: retry later",
                )
            )
            raise Closed(CloseCode.HELLO_THROTTLED, "too many failed hellos")
        unit = await context.squads.unit_of(hello.squad)
        presence = None
        if unit is not None:
            self.unit, self.squad = unit, hello.squad
            presence = await context.presence.joined(self, hello.token, hello.last_seq)
        if presence is None:
            self.unit = self.squad = ""  # nothing to record when the connection ends
            now = time.monotonic()
            if failures.spend(address, now) < 1 and (blocked := failures.emptied.note(now)):
                log.warning(
                    "too many failed hellos: %d address(es) refused for a while (latest %s)",
                    blocked,
                    address,
                )
            self.push(protocol.Error(code=ErrorCode.AUTH_FAILED, message="unknown squad or token"))
            raise Closed(CloseCode.AUTH_FAILED, "authentication failed")
        return presence

    async def _resync(self, reason: str, presence: Presence) -> protocol.Resync:
        context = self._context
        listed = []
        for job in presence.jobs:
            record = await context.requests.read(self.unit, job["request"])
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
        return protocol.Resync(reason=reason, last_seq=presence.seq, assignments=listed)

    async def _receive(self, greeting: bool = False) -> protocol.PhoneFrame:
        """The next valid frame; invalid ones are answered with an error frame and skipped,
        or, while ``greeting``, end the connection (HELLO_REQUIRED) after their error frame.
        A phone past its frame rate is closed (RATE_LIMITED)."""
        while True:
            self._parked = not greeting
            try:
                data = await self._transport.receive()
            finally:
                self._parked = False
            self.last_heard = now = monotonic()
            if not self._frame_rate.take(now):
                raise rate_limited(self, "frames")
            limit = self._max_frame_bytes
            if len(data) > limit:
                error = protocol.Error(
                    code=ErrorCode.TOO_LARGE,
                    message=f"frame of {len(data)} bytes; the limit is {limit}",
                )
            else:
                try:
                    frame = decode_phone(data)
                except Exception as exc:  # noqa: BLE001 - decoding is pure: whatever it raises
                    # (RecursionError from deep nesting too) the frame is at fault, not the hub
                    error = decode_error(data, exc)
                else:
                    self._context.metrics.frame_in(frame)
                    return frame
            self.push(error)
            if greeting:
                raise Closed(CloseCode.HELLO_REQUIRED, "the first frame must be a valid hello")

    def _inline(self, data: bytes) -> bool:
        """A binary frame that arrived while the reader waits for one (the transport's inline
        handler): a position fix that needs nothing awaited is done here, exactly as the
        reader would do it (frame rate, decoding, the router), without waking the reader;
        anything else (``False``) goes to the reader, which decodes it again. Positions are
        nearly every frame, commands and acks a few a minute."""
        router = self._router
        if (
            not self._parked
            or self._closing is not None
            or not router.positions_inline  # a scene to watch: no fix is done here
            or len(data) > self._max_frame_bytes
        ):
            return False
        try:
            frame = decode_phone(data)
        except Exception:  # noqa: BLE001 - the reader answers it
            return False
        if type(frame) is not protocol.Pos:
            return False
        now = monotonic()
        if not self._frame_rate.take(now):
            return False  # the reader closes the session: the bucket is as empty for it
        self.last_heard = now
        try:
            router.position(frame)
        except Exception:  # noqa: BLE001 - the reader does it again, and fails as it should
            return False
        self._context.metrics.frame_in(frame)
        return True

    # ---- the writer ----------------------------------------------------------------------

    async def _writer(self) -> None:
        try:
            await self._write_loop()
        except Disconnected:
            return  # the phone went away mid-send: the outbox keeps what it missed
        except Exception as exc:
            if self._closing is None:
                if is_outage(exc):  # the outbox is unreachable: resume once Redis is back
                    self._context.availability.failed("outbox replay", exc)
                    self._closing = Closed(TRY_AGAIN_LATER, "live state unreachable")
                else:
                    log.exception("writer of %s failed", self.squad or "?")
                    self._closing = Closed(CloseCode.INTERNAL_ERROR, "internal error: reconnect")
            await self._send_close()

    async def _write_loop(self) -> None:
        greeted = False
        held = 0  # the highest numbered frame pushed before the replay
        while True:
            item = await self._queue.get()
            if isinstance(item, bytes):
                if item:
                    await self._send(item)
            elif self._closing is not None:
                pass  # numbered frames wait in the outbox for the resume
            elif isinstance(item, _Replay):
                await self._send_numbered(item.frames)
                if held > self._sequencer.sent:  # numbered after the hello read the outbox
                    await self._send_kept(self._sequencer.sent)
                greeted = True
            elif not greeted:
                held = max(held, item.seq)  # the replay sends it, from the outbox
            else:
                step = self._sequencer.step(item.seq)
                if step is Step.FILL:
                    await self._send_kept(self._sequencer.sent)  # the gap, from the outbox
                if step is not Step.SKIP and self._sequencer.sent_up_to(item.seq):
                    await self._send(protocol.stamp_seq(item.body, item.seq))
            if self._closing is not None and self._queue.empty():
                await self._send_close()
                return

    async def _send_kept(self, after: int) -> None:
        await self._send_numbered(
            await self._context.squads.frames_after(self.unit, self.squad, after)
        )

    async def _send_numbered(self, frames: Iterable[tuple[int, bytes]]) -> None:
        """Outbox frames (seq, body), in order, each unless sent already on this connection."""
        for seq, body in frames:
            if self._sequencer.sent_up_to(seq):
                await self._send(protocol.stamp_seq(body, seq))

    async def _send(self, frame: bytes) -> None:
        await self._transport.send(frame)
        self._context.metrics.frame_out(frame_type(frame))

    async def _send_close(self) -> None:
        closing = self._closing
        assert closing is not None
        await self._transport.close(closing.code, closing.reason)
