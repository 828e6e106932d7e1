"""``/ws/field``: a squad phone's socket, in the subprotocol it chose."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from dispatch_field import protocol
from dispatch_field.codes import CloseCode
from server.field.context import FieldContext
from server.field.session import FieldSession
from server.field.transport import WebSocketTransport


class FieldSocket:
    """The ASGI app of ``/ws/field`` (an app, not a Starlette endpoint function, so that the
    session's reader takes each frame from the server's own ``receive``: Starlette's
    ``WebSocket.receive`` would add a coroutine and a state check to every position fix).
    The handshake, sends and the close still go through Starlette's ``WebSocket``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await field_socket(WebSocket(scope, receive, send), receive)


async def field_socket(ws: WebSocket, receive: Receive) -> None:
    offered = ws.scope.get("subprotocols") or []
    chosen = next((p for p in offered if p in protocol.SUBPROTOCOLS), None)
    await ws.accept(subprotocol=chosen)
    if chosen is None:
        await ws.close(
            CloseCode.UNSUPPORTED_SUBPROTOCOL,
            f"use one of the subprotocols {', '.join(protocol.SUBPROTOCOLS)}",
        )
        return
    transport = WebSocketTransport(ws, receive, chosen == protocol.SUBPROTOCOL_JSON)
    context = FieldContext.of(ws.app.state.components)
    await FieldSession(transport, context).run()
