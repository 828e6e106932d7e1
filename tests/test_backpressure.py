"""A phone that stops reading is cut off; pushing to it never blocks, and others go on.

Pure: the session runs over a fake transport (a phone's socket), no network, no Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace

from dispatch_field import protocol
from dispatch_field.codes import CloseCode
from server.field.session import FieldSession
from server.metrics import Metrics
from server.settings import load_settings
from tests.helpers import ends_by_itself


class FakeSocket:
    """A phone's socket (a :class:`~server.field.transport.Transport`): ``stalled`` phones
    take one frame and then never another."""

    address = "192.0.2.1"

    def __init__(self, stalled: bool) -> None:
        self.stalled = stalled
        self.sent: list[bytes] = []
        self.closed_with: int | None = None
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.inline: Callable[[bytes], bool] | None = None

    def set_inline(self, handler: Callable[[bytes], bool] | None) -> None:
        self.inline = handler

    def arrive(self, data: bytes) -> bool:
        """A frame from the phone, as our uvicorn protocol takes it (server.net): to the
        inline handler if nothing waits to be received and it takes it (True), else to the
        reader."""
        if self.inline is not None and self.incoming.empty() and self.inline(data):
            return True
        self.incoming.put_nowait(data)
        return False

    async def receive(self) -> bytes:
        return await self.incoming.get()

    async def send(self, data: bytes) -> None:
        if self.stalled and self.sent:
            await asyncio.Event().wait()  # the TCP window never opens again
        self.sent.append(data)

    async def close(self, code: int, reason: str = "") -> None:
        if self.stalled:
            await asyncio.Event().wait()  # cannot even take the close frame
        self.closed_with = code


class Hub:
    def __init__(self) -> None:
        self.left: list[FieldSession] = []

    async def left_session(self, session: FieldSession) -> None:
        self.left.append(session)


def _session(socket: FakeSocket, hub: Hub) -> FieldSession:
    settings = load_settings(env={}, send_queue_frames=16, close_timeout_s=0.2, hello_timeout_s=60)
    context = SimpleNamespace(
        settings=settings, presence=SimpleNamespace(left=hub.left_session), metrics=Metrics()
    )
    return FieldSession(socket, context)  # type: ignore[arg-type]


async def test_stalled_phone_is_cut_off_without_blocking_the_pusher_or_others():
    hub = Hub()
    slow_socket, fast_socket = FakeSocket(stalled=True), FakeSocket(stalled=False)
    slow, fast = _session(slow_socket, hub), _session(fast_socket, hub)
    runs = [asyncio.create_task(s.run()) for s in (slow, fast)]
    frame = protocol.Error(code="x", message="y" * 100)
    for _ in range(200):  # never awaits: a push cannot block the pusher
        slow.push(frame)
        fast.push(frame)
        await asyncio.sleep(0)
    assert slow.close_code == CloseCode.SLOW_CONSUMER
    await ends_by_itself(runs[0])  # the stalled session
    assert hub.left == [slow]
    assert fast.close_code is None and len(fast_socket.sent) == 200  # unaffected
    fast.close(CloseCode.SERVER_RESTART, "bye")
    await ends_by_itself(runs[1])
    assert fast_socket.closed_with == CloseCode.SERVER_RESTART


async def test_frames_queued_before_a_close_go_out_before_the_close_frame():
    hub = Hub()
    socket = FakeSocket(stalled=False)
    session = _session(socket, hub)
    run = asyncio.create_task(session.run())
    session.push(protocol.Error(code="auth_failed", message="no"))
    session.close(CloseCode.AUTH_FAILED, "no")  # before the session's task has even started
    await ends_by_itself(run)
    assert [protocol.decode_hub(d).code for d in socket.sent] == ["auth_failed"]  # type: ignore[union-attr]
    assert socket.closed_with == CloseCode.AUTH_FAILED
