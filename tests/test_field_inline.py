"""A squad's position fixes done inline (``FieldSession._inline``): a fix that arrives while
the session's reader waits for a frame, and needs nothing awaited, is done in the socket's
read callback, exactly as the reader would do it; anything else goes to the reader, in order.

Pure: the session over a fake socket that hands frames over as our uvicorn protocol does
(``tests.test_backpressure.FakeSocket.arrive``); its collaborators are fakes.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import msgspec

from dispatch_field import protocol
from dispatch_field.codes import CloseCode
from server.field.router import AUTO_ARRIVAL
from server.field.session import FieldSession
from server.metrics import Metrics
from server.settings import load_settings
from server.store.squads import Presence
from tests.helpers import ends_by_itself
from tests.test_backpressure import FakeSocket

SCENE = (34.2656, 108.9479)
AWAY = (34.30, 108.90)


class Context:
    """What the session reaches: the hello's round trip, the position writer, the squad's
    commands (held back while ``busy`` is clear), the requests' scenes."""

    def __init__(self, jobs: tuple[dict[str, str], ...] = (), **settings: Any) -> None:
        self.settings = load_settings(env={}, hello_timeout_s=5, close_timeout_s=0.2, **settings)
        self.metrics = Metrics()
        self.failed_hellos = SimpleNamespace(allows=lambda address, now: True)
        self.fixes: list[tuple[str, float, float]] = []
        self.commands: list[tuple[str, object]] = []
        self.drains: list[str] = []
        self.go_on = asyncio.Event()
        self.go_on.set()
        self.jobs = jobs
        self.positions = SimpleNamespace(add=self._add)
        self.dispatcher = SimpleNamespace(drain_soon=self._drain_soon)
        self.squads = SimpleNamespace(unit_of=self._unit_of)
        self.presence = SimpleNamespace(joined=self._joined, left=self._left)
        self.requests = SimpleNamespace(read=self._read)
        self.actions = SimpleNamespace(apply=self._apply)

    def _drain_soon(self, unit: str, after_s: float = 0) -> None:
        self.drains.append(unit)

    def _add(self, unit: str, squad: str, lat: float, lon: float, fixed_at: float) -> None:
        self.fixes.append((squad, lat, lon))

    async def _unit_of(self, squad: str) -> str:
        return "water"

    async def _joined(self, session: FieldSession, token: str, last_seq: int) -> Presence:
        return Presence(seq=0, acked=0, on_duty=True, jobs=self.jobs)

    async def _left(self, session: FieldSession) -> None:
        pass

    async def _read(self, unit: str, request_id: str) -> Any:
        return SimpleNamespace(lat=SCENE[0], lon=SCENE[1])

    async def _apply(
        self, unit: str, squad: str, command: Any, actor: Any, ack: int, window: Any = None
    ) -> Any:
        self.commands.append((type(command).__name__, actor))
        await self.go_on.wait()
        return SimpleNamespace(
            state=SimpleNamespace(value="on_scene"),
            record=None,
            request_id="R-1",
            squad_available=False,
        )


def _pos(lat: float, lon: float) -> bytes:
    return protocol.encode(protocol.Pos(lat=lat, lon=lon, ts=time.time()))


async def _settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


async def _greeted(context: Context) -> tuple[FakeSocket, FieldSession, asyncio.Task[None]]:
    socket = FakeSocket(stalled=False)
    session = FieldSession(socket, context)  # type: ignore[arg-type]
    run = asyncio.create_task(session.run())
    assert socket.inline is None  # nothing inline before the hello is checked
    socket.arrive(protocol.encode(protocol.Hello(squad="S1", token="t")))
    await _settle()
    assert msgspec.msgpack.decode(socket.sent[0])["t"] == "welcome"
    assert socket.inline is not None
    return socket, session, run


async def _end(session: FieldSession, run: asyncio.Task[None]) -> None:
    session.close(CloseCode.SERVER_RESTART, "done")
    await ends_by_itself(run)


def _frames_in(context: Context, kind: type) -> int:
    return context.metrics.live.frames_in[kind]


async def test_a_fix_while_the_reader_waits_is_done_inline_and_a_command_goes_to_it():
    context = Context()
    socket, session, run = await _greeted(context)
    assert socket.arrive(_pos(*AWAY)) is True  # done in the read callback
    assert context.fixes == [("S1", *AWAY)] and socket.incoming.empty()
    assert context.drains == ["water"]  # back on the map: the unit's waiting requests
    assert _frames_in(context, protocol.Pos) == 1
    assert socket.arrive(protocol.encode(protocol.Accept(assignment="A-1", id="c1"))) is False
    await _settle()
    assert context.commands == [("Accept", None)]
    assert msgspec.msgpack.decode(socket.sent[-1]) == {"t": "ok", "id": "c1"}
    await _end(session, run)


async def test_a_fix_while_the_reader_is_busy_waits_behind_the_frame_before_it():
    context = Context()
    socket, session, run = await _greeted(context)
    context.go_on.clear()  # the command's round trip takes a while
    socket.arrive(protocol.encode(protocol.Accept(assignment="A-1", id="c1")))
    await _settle()
    assert context.commands == [("Accept", None)]
    assert socket.arrive(_pos(*AWAY)) is False  # the reader is not waiting: it queues
    await _settle()
    assert context.fixes == []  # not before the command it followed is done
    context.go_on.set()
    await _settle()
    assert context.fixes == [("S1", *AWAY)]
    assert socket.arrive(_pos(*AWAY)) is True  # waiting again: inline again
    await _end(session, run)


async def test_with_a_scene_to_watch_fixes_go_to_the_reader_and_arrival_is_recorded():
    jobs = ({"id": "A-1", "request": "R-1", "state": "en_route"},)
    context = Context(jobs=jobs)
    socket, session, run = await _greeted(context)
    assert socket.arrive(_pos(*AWAY)) is False  # to the reader: it checks the geofence
    await _settle()
    assert context.fixes == [("S1", *AWAY)] and context.commands == []
    assert socket.arrive(_pos(*SCENE)) is False
    await _settle()
    assert context.commands == [("Arrive", AUTO_ARRIVAL)]
    told = msgspec.msgpack.decode(socket.sent[-1])
    assert (told["t"], told["assignment"]) == ("arrived", "A-1")  # the phone is told
    assert socket.arrive(_pos(*SCENE)) is True  # on scene: no scene left to watch
    await _end(session, run)


async def test_fixes_past_the_frame_rate_close_the_session():
    context = Context(frame_rate=1, frame_burst=4)
    socket, session, run = await _greeted(context)  # the hello took one token
    taken = [socket.arrive(_pos(*AWAY)) for _ in range(4)]
    assert taken == [True, True, True, False]
    await ends_by_itself(run)
    assert session.close_code == CloseCode.RATE_LIMITED
    assert msgspec.msgpack.decode(socket.sent[-1])["code"] == "rate_limited"
    assert len(context.fixes) == 3


async def test_bad_frames_go_to_the_reader_and_are_answered():
    context = Context(max_frame_bytes=64)
    socket, session, run = await _greeted(context)
    assert socket.arrive(b"\xc1 not msgpack") is False
    await _settle()
    assert msgspec.msgpack.decode(socket.sent[-1])["code"] == "malformed"
    assert socket.arrive(b"\x90" * 65) is False
    await _settle()
    assert msgspec.msgpack.decode(socket.sent[-1])["code"] == "too_large"
    assert socket.arrive(_pos(91.0, 0.0)) is False  # not a valid fix: the reader says so
    await _settle()
    assert msgspec.msgpack.decode(socket.sent[-1])["t"] == "error"
    assert context.fixes == [] and session.close_code is None
    assert socket.arrive(_pos(*AWAY)) is True
    await _end(session, run)
