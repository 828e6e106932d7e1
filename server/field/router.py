"""What a greeted squad's frames do: positions to the position writer (and the arrival
geofence), acknowledgements batched, duty, and commands to :class:`SquadActions`, each
answered ``ok`` or with an error frame naming its id."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from redis.exceptions import RedisError

from dispatch_field import protocol
from dispatch_field.codes import CloseCode, ErrorCode
from server.actions import CommandError, StepWindow
from server.field.context import FieldContext
from server.field.core import Closed, Geofence, PendingAck
from server.guard import TokenBucket
from server.store.availability import is_outage
from server.store.requests import Actor
from server.store.squads import Presence

AUTO_ARRIVAL = Actor("system", "auto-arrival")


class Reply(Protocol):
    """The session, as the router answers through it."""

    @property
    def unit(self) -> str: ...

    @property
    def squad(self) -> str: ...

    @property
    def conn_id(self) -> str: ...

    def push(self, frame: protocol.HubFrame) -> None: ...


class _Ended:
    """The session of a router whose session ended: nothing may reach it any more."""

    unit = squad = conn_id = ""

    def push(self, frame: protocol.HubFrame) -> None:
        pass


_ENDED: Reply = _Ended()


class FieldRouter:
    def __init__(self, context: FieldContext, session: Reply) -> None:
        self._context = context
        self._settings = settings = context.settings
        self._session = session
        self._positioned = False  # a position was sent on this connection
        self._ack = PendingAck()
        self._ack_flush: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the first ack's (see _note_ack)
        self._geofence = Geofence(settings.arrival_radius_m)
        self._window: StepWindow | None = None  # set when the squad is greeted
        self._command_rate = TokenBucket(settings.command_rate, settings.command_burst)

    def detach(self) -> None:
        """The session ended: let go of it (it holds this router)."""
        if self._ack_flush is not None:
            self._ack_flush.cancel()
            self._ack_flush = None
        self._session = _ENDED

    async def joined(self, presence: Presence) -> None:
        """The squad is greeted: track the scenes of its en-route assignments (after a
        reconnect too)."""
        self._window = StepWindow(time.time(), presence.offline_since)
        for job in presence.jobs:
            if job.get("state") == "en_route":
                await self._track_scene(job["id"], job["request"])

    async def handle(self, frame: protocol.PhoneFrame) -> None:
        context, session = self._context, self._session
        match frame:
            case protocol.Pos():
                self.position(frame)
                if self._geofence.scenes:
                    await self._check_arrival(frame.lat, frame.lon)
            case protocol.Ack():
                self._note_ack(frame.seq)
            case protocol.Duty():
                owned = await context.squads.set_duty(
                    session.unit, session.squad, frame.on, session.conn_id
                )
                if owned < 0:
                    raise Closed(CloseCode.REPLACED, "another connection took over")
                if owned == 1:
                    context.dispatcher.drain_soon(session.unit)
            case protocol.Hello():
                session.push(protocol.Error(code=ErrorCode.UNEXPECTED, message="already greeted"))
            case _:
                if not self._command_rate.take(time.monotonic()):
                    raise rate_limited(session, "commands")
                await self._command(frame)

    @property
    def positions_inline(self) -> bool:
        """A position fix needs nothing awaited: no scene to check for an arrival."""
        return not self._geofence.scenes

    def position(self, frame: protocol.Pos) -> None:
        """A fix's part that awaits nothing: queued for the position writer."""
        context, session = self._context, self._session
        now = time.time()
        context.positions.add(session.unit, session.squad, frame.lat, frame.lon, now)
        window = self._window
        if window is not None:
            window.saw_position(frame.ts, now)
        if not self._positioned:  # back on the map: waiting requests may be its
            self._positioned = True
            context.dispatcher.drain_soon(
                session.unit, after_s=self._settings.position_flush_ms / 500
            )

    async def _command(self, command: protocol.Command, actor: Actor | None = None) -> bool:
        """Carry out ``command`` (the phone's, or the hub's own for ``actor``); whether it
        was applied."""
        context, session = self._context, self._session
        ack = self._ack.take()  # the pending ack rides on the command's own call
        try:
            done = await context.actions.apply(
                session.unit, session.squad, command, actor, ack=ack, window=self._window
            )
        except CommandError as exc:
            if ack:  # perhaps refused before its script ran: recorded later (harmless twice)
                self._note_ack(ack)
            if actor is None:
                session.push(protocol.Error(code=exc.code, message=exc.message, id=command.id))
            return False
        except BaseException:
            if ack:
                self._note_ack(ack)
            raise
        if actor is None:
            session.push(protocol.Ok(id=command.id))
        if done.state.value == "en_route":
            if done.record is not None:
                self._geofence.track(
                    command.assignment, done.request_id, done.record.lat, done.record.lon
                )
            else:
                await self._track_scene(command.assignment, done.request_id)
        else:
            self._geofence.forget(command.assignment)
        if done.squad_available:
            context.dispatcher.drain_soon(session.unit)
        return True

    # ---- acknowledgements ----------------------------------------------------------------

    def _note_ack(self, seq: int) -> None:
        """A phone acknowledges every numbered frame; most are followed at once by a command
        (an offer by its accept), which records the ack in its own script call. One that is
        not is recorded ``ack_flush_ms`` later. Replay never depends on it: a resume starts
        from the phone's ``last_seq``; the ack only lets the outbox drop what it holds."""
        self._ack.note(seq)
        if self._ack_flush is None:
            delay = self._settings.ack_flush_ms / 1000
            # Kept: asking for the running loop at each ack costs a getpid system call on
            # Python 3.11.
            loop = self._loop or asyncio.get_running_loop()
            self._loop = loop
            self._ack_flush = loop.call_later(delay, self._flush_soon)

    def _flush_soon(self) -> None:
        self._ack_flush = None
        if self._ack.seq:
            self._context.background.spawn(self.flush_ack())

    async def flush_ack(self) -> None:
        """Record the pending acknowledgement now (also when the session ends)."""
        if self._ack_flush is not None:
            self._ack_flush.cancel()
            self._ack_flush = None
        ack = self._ack.take()
        if ack:
            try:
                await self._context.squads.ack(self._session.unit, self._session.squad, ack)
            except RedisError as exc:  # superseded by the phone's next ack
                if not is_outage(exc):
                    raise
                self._context.availability.failed("ack", exc)

    # ---- automatic arrival ---------------------------------------------------------------

    async def _track_scene(self, assignment: str, request_id: str) -> None:
        record = await self._context.requests.read(self._session.unit, request_id)
        if record is not None:
            self._geofence.track(assignment, request_id, record.lat, record.lon)

    async def _check_arrival(self, lat: float, lon: float) -> None:
        for assignment in self._geofence.arrived(lat, lon):
            arrive = protocol.Arrive(assignment=assignment, id=f"auto-arrive-{assignment}")
            if await self._command(arrive, AUTO_ARRIVAL):  # the phone shows it on scene
                self._session.push(protocol.Arrived(assignment=assignment, at=time.time()))


def rate_limited(session: Reply, what: str) -> Closed:
    """Tell the phone, and return the close to raise."""
    session.push(
        protocol.Error(code=ErrorCode.RATE_LIMITED, message=f"{what} faster than the hub allows")
    )
    return Closed(CloseCode.RATE_LIMITED, f"{what} too fast: reconnect later")
