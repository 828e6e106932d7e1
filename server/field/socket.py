"""``/ws/field``: a squad phone's socket, in the subprotocol it chose."""

from __future__ import annotations

from starlette.websockets import WebSocket

from dispatch_field import protocol
from dispatch_field.codes import CloseCode
from server.field.context import FieldContext
from server.field.session import FieldSession
from server.field.transport import WebSocketTransport


async def field_socket(ws: WebSocket) -> None:
    offered = ws.scope.get("subprotocols") or []
    chosen = next((p for p in offered if p in protocol.SUBPROTOCOLS), None)
    await ws.accept(subprotocol=chosen)
    if chosen is None:
        await ws.close(
            CloseCode.UNSUPPORTED_SUBPROTOCOL,
            f"use one of the subprotocols {', '.join(protocol.SUBPROTOCOLS)}",
        )
        return
    transport = WebSocketTransport(ws, chosen == protocol.SUBPROTOCOL_JSON)
    context = FieldContext.of(ws.app.state.components)
    await FieldSession(transport, context).run()
