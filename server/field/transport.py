"""The socket under a squad session, as the session sees it: receive a frame, send one,
close. :class:`WebSocketTransport` carries it over Starlette's WebSocket (frames in straight
from the server's ASGI ``receive``); tests use their own."""

from __future__ import annotations

import contextlib
from typing import Protocol

from starlette.types import Receive, Send
from starlette.websockets import WebSocket, WebSocketState
from uvicorn.protocols.utils import ClientDisconnected

from dispatch_field import protocol
from server.net import INLINE_EXTENSION, Inline


class Disconnected(Exception):
    """The phone went away."""


class Transport(Protocol):
    @property
    def address(self) -> str:
        """The client's address (for per-address limits)."""
        ...

    async def receive(self) -> bytes | str:
        """The next frame; raises :class:`Disconnected` when the phone went away."""
        ...

    async def send(self, frame: bytes) -> None:
        """Send an encoded (MessagePack) frame; raises :class:`Disconnected`."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame, if the socket is still open; never raises."""
        ...

    def set_inline(self, handler: Inline | None) -> None:
        """Where the server can: hand each binary frame that arrives while none waits to be
        received to ``handler`` first, as it arrives; one it handles (``True``) is not
        received. A transport that cannot ignores it (every frame is received)."""
        ...


class WebSocketTransport:
    """A Starlette WebSocket, accepted. Frames are read from ``receive`` and written with
    ``send``, the ASGI server's own (the ones ``ws`` wraps): once the socket is accepted the
    server sends only ``websocket.receive`` and ``websocket.disconnect``, and a frame out is
    always a ``websocket.send``, so Starlette's per-message state checks have nothing to add
    on the hot path. The close goes through ``ws``, which knows whether one was sent.
    ``json_mode``: the phone chose the JSON subprotocol, so every frame goes out as JSON text
    (the hub encodes MessagePack once, for every phone)."""

    def __init__(self, ws: WebSocket, receive: Receive, send: Send, json_mode: bool) -> None:
        self._ws = ws
        self._receive = receive
        self._send = send
        self._json = json_mode
        self.address = ws.client.host if ws.client else ""

    async def receive(self) -> bytes | str:
        message = await self._receive()
        data: bytes | str | None = message.get("bytes")
        if data is not None:  # a binary frame (MessagePack): nearly all of them
            return data
        if message["type"] == "websocket.disconnect":
            raise Disconnected
        return message.get("text") or ""

    async def send(self, frame: bytes) -> None:
        if self._ws.application_state is not WebSocketState.CONNECTED:
            raise Disconnected  # closed by the hub: nothing goes out after the close frame
        message = (
            {"type": "websocket.send", "text": protocol.msgpack_to_json(frame)}
            if self._json
            else {"type": "websocket.send", "bytes": frame}
        )
        try:
            await self._send(message)
        except (ClientDisconnected, OSError):  # OSError: as Starlette's WebSocket.send
            raise Disconnected from None

    def set_inline(self, handler: Inline | None) -> None:
        extension = self._ws.scope.get("extensions", {}).get(INLINE_EXTENSION)
        if extension is not None:  # our uvicorn protocol (server.net); not under a test client
            extension["set"](handler)

    async def close(self, code: int, reason: str) -> None:
        if self._ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):  # the peer may already be gone
                await self._ws.close(code, reason)
