"""A hello's resume, over a fake phone socket: the frames read with the hello are sent in
order, and a frame numbered while the hello is being checked is not lost.

Pure: the session's collaborators are fakes (the hello's round trip is one awaited call).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from dataclasses import dataclass
from types import SimpleNamespace

import msgspec

from dispatch_field import protocol
from server.field.session import FieldSession
from server.hub import Hub
from server.metrics import Metrics
from server.settings import load_settings
from server.store.squads import Presence
from tests.helpers import ends_by_itself
from tests.test_backpressure import FakeSocket


def _body(seq: int) -> bytes:
    return protocol.encode(protocol.Error(code="frame", message=str(seq)))


class Outbox:
    """The squad's outbox, as the session reads it after the hello (a gap fill)."""

    def __init__(self, frames: dict[int, bytes]) -> None:
        self.frames = frames
        self.reads: list[int] = []

    async def frames_after(self, unit: str, squad: str, after: int) -> list[tuple[int, bytes]]:
        self.reads.append(after)
        return sorted((seq, body) for seq, body in self.frames.items() if seq > after)

    async def unit_of(self, squad: str) -> str:
        return "water"


class Presences:
    """The hello's one round trip: while it is under way, the hub numbers frame 4 (written to
    the outbox after the hello read it) and hands it to the squad's sessions."""

    def __init__(self, hub: Hub, outbox: Outbox, pushed_meanwhile: bool) -> None:
        self.hub, self.outbox, self.pushed_meanwhile = hub, outbox, pushed_meanwhile
        self.left_sessions: list[FieldSession] = []

    async def joined(self, session: FieldSession, token: str, last_seq: int) -> Presence:
        assert (token, last_seq) == ("t", 1)
        self.hub.expect(session)
        read = tuple((seq, _body(seq)) for seq in (2, 3))  # the outbox as the hello read it
        await asyncio.sleep(0)
        if self.pushed_meanwhile:
            self.outbox.frames[4] = _body(4)
            self.hub.deliver(session.squad, 4, _body(4))
        self.hub.register(session)
        return Presence(seq=3, acked=1, on_duty=False, frames=read)

    async def left(self, session: FieldSession) -> None:
        self.left_sessions.append(session)


@dataclass
class Setup:
    hub: Hub
    outbox: Outbox
    presences: Presences
    socket: FakeSocket
    session: FieldSession


def _setup(pushed_meanwhile: bool) -> Setup:
    """A session over a fake socket, its squad's outbox holding frames 2 and 3."""
    hub = Hub("hub-test")
    outbox = Outbox({seq: _body(seq) for seq in (2, 3)})
    presences = Presences(hub, outbox, pushed_meanwhile)
    context = SimpleNamespace(
        settings=load_settings(env={}, hello_timeout_s=5, close_timeout_s=0.2),
        presence=presences,
        squads=outbox,
        metrics=Metrics(),
        failed_hellos=SimpleNamespace(allows=lambda address, now: True),
    )
    socket = FakeSocket(stalled=False)
    session = FieldSession(socket, context)  # type: ignore[arg-type]
    return Setup(hub, outbox, presences, socket, session)


async def _greet_and_close(setup: Setup) -> None:
    """The phone says hello having seen frame 1; the session runs, then is closed."""
    run = asyncio.create_task(setup.session.run())
    hello = protocol.Hello(squad="S1", token="t", last_seq=1)
    await setup.socket.incoming.put(protocol.encode(hello))
    for _ in range(50):
        await asyncio.sleep(0)
    setup.session.close(1000, "done")
    await ends_by_itself(run)


async def _resume(pushed_meanwhile: bool) -> tuple[list[dict[str, object]], Outbox]:
    setup = _setup(pushed_meanwhile)
    await _greet_and_close(setup)
    return [msgspec.msgpack.decode(data) for data in setup.socket.sent], setup.outbox


def _seqs(frames: list[dict[str, object]]) -> list[object]:
    return [f["seq"] for f in frames]


async def test_the_frames_read_with_the_hello_are_sent_after_the_welcome_without_a_read():
    frames, outbox = await _resume(pushed_meanwhile=False)
    assert frames[0]["t"] == "welcome" and frames[0]["last_seq"] == 3
    assert _seqs(frames[1:]) == [2, 3]
    assert outbox.reads == []  # the hello's own read was enough


async def test_a_frame_numbered_while_the_hello_is_checked_follows_the_replay():
    frames, outbox = await _resume(pushed_meanwhile=True)
    assert frames[0]["t"] == "welcome"
    assert _seqs(frames[1:]) == [2, 3, 4]  # in order, each once
    assert outbox.reads == [3]  # the frame after what the hello read, from the outbox


def test_a_session_whose_hello_is_being_checked_gets_the_squads_frames_but_closes_no_one():
    hub = Hub("hub-test")
    current = SimpleNamespace(squad="S1", unit="water", got=[], closed=None)
    current.push_numbered = lambda seq, body: current.got.append(seq)
    current.close = lambda code, reason: setattr(current, "closed", code)
    joining = SimpleNamespace(squad="S1", unit="water", got=[])
    joining.push_numbered = lambda seq, body: joining.got.append(seq)
    hub.register(current)  # type: ignore[arg-type]
    hub.expect(joining)  # type: ignore[arg-type]
    hub.deliver("S1", 7, b"x")
    assert (current.got, joining.got, current.closed) == ([7], [7], None)
    hub.unexpect(joining)  # type: ignore[arg-type]  # refused: nothing more reaches it
    hub.deliver("S1", 8, b"x")
    assert (current.got, joining.got) == ([7, 8], [7])
    assert hub.joining == {} and hub.sessions["S1"] is current


async def test_an_ended_session_is_freed_without_the_garbage_collector():
    """A reconnect storm ends 10,000 sessions at once: each must go when its last reference
    does, not wait for a full collection (which walks every object of the process)."""
    setup = _setup(pushed_meanwhile=True)
    gc.collect()
    gc.disable()
    try:
        await _greet_and_close(setup)
        assert len(setup.socket.sent) == 4  # welcome, 2, 3, 4
        gone = weakref.ref(setup.session)
        setup.hub.sessions.clear()
        setup.presences.left_sessions.clear()
        del setup
        assert gone() is None
    finally:
        gc.enable()
