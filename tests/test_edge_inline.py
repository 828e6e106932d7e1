"""The WebSocket protocol's inline handler (``server.net``, the ``dispatch.inline`` ASGI
extension): a binary message that arrives while nothing waits for the app goes to the handler
in the protocol's read callback; one it declines, and everything after it until the app has
taken it, is queued for the app as always, in order.

Pure: uvicorn's protocol class, our subclass of it, fed bytes through a fake transport; the
client's side is websockets' own sans-I/O client (handshake and masked frames).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import uvicorn
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from server.guard import ConnectionLedger
from server.net import INLINE_EXTENSION, EdgeLimits, edge_protocols


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.paused = 0  # pause_reading calls
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.7", 5000), "sockname": ("127.0.0.1", 80)}.get(name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol: asyncio.BaseProtocol | None = protocol

    def lose(self) -> None:
        """The peer went away: as uvloop's transport, tell the protocol and let go of it."""
        protocol, self.protocol = self.protocol, None
        assert protocol is not None
        protocol.connection_lost(None)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def is_reading(self) -> bool:
        return True


class App:
    """Accepts, installs the handler (it takes binary messages starting with ``in``), then
    receives what the test lets it."""

    def __init__(self) -> None:
        self.handled: list[bytes] = []
        self.received: list[bytes | str] = []
        self.ready = asyncio.Event()
        self.take = asyncio.Semaphore(0)  # one release: the app receives one message

    def inline(self, data: bytes) -> bool:
        if data.startswith(b"in"):
            self.handled.append(data)
            return True
        return False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        scope["extensions"][INLINE_EXTENSION]["set"](self.inline)
        self.ready.set()
        while True:
            await self.take.acquire()
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            self.received.append(message.get("bytes") or message.get("text") or "")


async def _connected(app: App) -> tuple[Any, FakeTransport, ClientProtocol]:
    limits = EdgeLimits(ConnectionLedger(10, 10), header_timeout_s=5)
    _, ws = edge_protocols(limits)
    config = uvicorn.Config(app, ws=ws, ws_ping_interval=None, log_level="warning")
    config.load()
    server = ws(config=config, server_state=ServerState(), app_state={})
    transport = FakeTransport()
    limits.connections.admit(transport, "192.0.2.7")  # as the HTTP protocol did
    server.connection_made(transport)
    client = ClientProtocol(parse_uri("ws://hub/ws/field"))
    client.send_request(client.connect())
    server.data_received(b"".join(client.data_to_send()))
    await asyncio.wait_for(app.ready.wait(), 5)
    client.receive_data(b"".join(transport.written))  # the 101
    assert client.handshake_exc is None
    return server, transport, client


def _frames(client: ClientProtocol, *messages: bytes | str) -> bytes:
    for message in messages:
        if isinstance(message, bytes):
            client.send_binary(message)
        else:
            client.send_text(message.encode())
    return b"".join(client.data_to_send())


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_messages_go_inline_while_nothing_waits_and_in_order_after_one_declined():
    app = App()
    server, transport, client = await _connected(app)
    # One read: the first is taken inline; "out2" is declined and queued, so "in3" (after
    # it) must wait its turn behind it, and so must the text.
    server.data_received(_frames(client, b"in1", b"out2", b"in3", "text"))
    await _settle()
    assert app.handled == [b"in1"]
    for _ in range(3):
        app.take.release()
    await _settle()
    assert app.received == [b"out2", b"in3", "text"]
    # The queue is empty again: the next binary message is taken inline, without a pause
    # of reading (uvicorn pauses after every message it queues for the app).
    paused = transport.paused
    server.data_received(_frames(client, b"in4", b"in5"))
    await _settle()
    assert app.handled == [b"in1", b"in4", b"in5"] and transport.paused == paused
    server.connection_lost(None)
    app.take.release()
    await _settle()


async def test_without_a_handler_every_message_is_queued():
    app = App()
    app.inline = lambda data: False  # type: ignore[method-assign]
    server, _, client = await _connected(app)
    server.data_received(_frames(client, b"in1"))
    app.take.release()
    await _settle()
    assert app.received == [b"in1"] and app.handled == []
    server.connection_lost(None)
    app.take.release()
    await _settle()


async def test_a_text_message_never_goes_inline():
    app = App()
    server, _, client = await _connected(app)
    server.data_received(_frames(client, "in-text"))
    app.take.release()
    await _settle()
    assert app.received == ["in-text"] and app.handled == []
    server.connection_lost(None)
    app.take.release()
    await _settle()


async def test_an_ended_connection_is_freed_without_the_cyclic_garbage_collector():
    """Upgraded from HTTP, used and lost, a connection's protocols go with their last
    reference: in a reconnect storm the cyclic collector took a fifth of the hub's CPU."""
    app = App()
    limits = EdgeLimits(ConnectionLedger(10, 10), header_timeout_s=5)
    http_class, _ = edge_protocols(limits)
    config = uvicorn.Config(app, ws=edge_protocols(limits)[1], ws_ping_interval=None)
    config.load()
    gc.collect()
    gc.disable()
    try:
        http = http_class(config=config, server_state=ServerState(), app_state={})
        transport = FakeTransport()
        http.connection_made(transport)
        client = ClientProtocol(parse_uri("ws://hub/ws/field"))
        client.send_request(client.connect())
        http.data_received(b"".join(client.data_to_send()))  # the upgrade
        await asyncio.wait_for(app.ready.wait(), 5)
        ws = transport.get_protocol()
        assert ws is not http
        client.receive_data(b"".join(transport.written))  # the 101
        client.events_received()
        ws.data_received(_frames(client, b"in1", b"out2"))
        app.take.release()
        await _settle()
        assert app.handled == [b"in1"] and app.received == [b"out2"]
        gone = [weakref.ref(http), weakref.ref(ws), weakref.ref(ws.conn)]
        transport.lose()
        app.take.release()  # the app reads the disconnect and returns
        await _settle()
        del http, ws, transport
        assert [ref() for ref in gone] == [None, None, None]
    finally:
        gc.enable()
