"""``/ws/field``: a squad phone's socket, in the subprotocol it chose."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from dispatch_field import protocol
from dispatch_field.codes import CloseCode
from server.field.context import FieldContext
from server.field.session import FieldSession
from server.field.transport import WebSocketTransport

if TYPE_CHECKING:
    from server.components import Components


class FieldSocket:
    """The ASGI app of ``/ws/field`` (an app, not a Starlette endpoint function, so that the
    session's reader takes each frame from the server's own ``receive``: Starlette's
    ``WebSocket.receive`` would add a coroutine and a state check to every position fix;
    frames out likewise go to the server's own ``send``). The handshake and the close still
    go through Starlette's ``WebSocket``."""

    def __init__(self) -> None:
        self._context: tuple[object, FieldContext] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        await field_socket(ws, receive, send, self._context_of(ws.app.state.components))

    def _context_of(self, components: Components) -> FieldContext:
        """The sessions' context, made once per process's components (not per phone)."""
        cached = self._context
        if cached is None or cached[0] is not components:
            cached = self._context = (components, FieldContext.of(components))
        return cached[1]


async def field_socket(ws: WebSocket, receive: Receive, send: Send, context: FieldContext) -> None:
    offered = ws.scope.get("subprotocols") or []
    chosen = next((p for p in offered if p in protocol.SUBPROTOCOLS), None)
    await ws.accept(subprotocol=chosen)
    if chosen is None:
        await ws.close(
            CloseCode.UNSUPPORTED_SUBPROTOCOL,
            f"use one of the subprotocols {', '.join(protocol.SUBPROTOCOLS)}",
        )
        return
    transport = WebSocketTransport(ws, receive, send, chosen == protocol.SUBPROTOCOL_JSON)
    await FieldSession(transport, context).run()
