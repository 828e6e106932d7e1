"""The WebSocket under a squad session (``server.field.transport``): frames out through the
ASGI server's own ``send``, in the subprotocol the phone chose, and nothing after the close.
Pure: a recording ``send`` stands in for the server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.websockets import WebSocket
from uvicorn.protocols.utils import ClientDisconnected

from dispatch_field import protocol
from server.field.transport import Disconnected, WebSocketTransport


async def _accepted(sent: list[dict[str, Any]], *, json_mode: bool = False) -> WebSocketTransport:
    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        if message.get("bytes") == b"gone":
            raise ClientDisconnected
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws/field", "headers": [], "client": ("10.0.0.7", 5)}
    ws = WebSocket(scope, receive, send)
    await ws.accept()
    return WebSocketTransport(ws, receive, send, json_mode)


async def test_frames_go_out_through_the_servers_send_until_the_close() -> None:
    sent: list[dict[str, Any]] = []
    transport = await _accepted(sent)
    assert transport.address == "10.0.0.7"
    frame = protocol.encode(protocol.Ok(id="c1"))
    await transport.send(frame)
    assert sent[-1] == {"type": "websocket.send", "bytes": frame}
    await transport.close(4000, "bye")
    assert sent[-1]["type"] == "websocket.close" and sent[-1]["code"] == 4000
    count = len(sent)
    with pytest.raises(Disconnected):
        await transport.send(frame)  # nothing after the close frame
    await transport.close(4000, "again")  # and no second close
    assert len(sent) == count


async def test_a_json_phone_gets_text_and_a_gone_phone_is_disconnected() -> None:
    sent: list[dict[str, Any]] = []
    transport = await _accepted(sent, json_mode=True)
    await transport.send(protocol.encode(protocol.Ok(id="c1")))
    assert sent[-1]["type"] == "websocket.send" and "bytes" not in sent[-1]
    assert json.loads(sent[-1]["text"]) == {"t": "ok", "id": "c1"}
    binary = await _accepted(sent)
    with pytest.raises(Disconnected):
        await binary.send(b"gone")
