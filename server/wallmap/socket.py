"""``/ws/map``: one wall's live map.

The wall connects with its session cookie (a program: an ``Authorization: Bearer`` header)
and says nothing; the hub sends JSON text messages:

* ``{"t": "snapshot", "at", "squads": [[id, unit, lat, lon, flags], …], "requests": [{…}],
  "figures": {…}, "ticker": [{…}]}`` first, and again whenever the wall fell behind;
* ``{"t": "delta", "at", "squads"?, "gone"?, "requests"?, "closed"?, "figures"?,
  "ticker"?}`` about once a second (a quiet second is ``{"t": "delta", "at"}``: the wall
  knows the feed is alive). A delta before the first snapshot is to be dropped.

``flags``: 1 on duty, 2 busy. ``figures``: ``open``, ``overdue``, ``dispatched_today``,
``arrived_today``, ``median_arrival_s`` (null before the day's first arrival), ``day``.
See :mod:`server.wallmap.watch` for the cost on the hub. The session is checked again every
:data:`RECHECK_S`: a wall signed out elsewhere (or whose account was disabled) is closed
with 4100 and goes to the sign-in page.

Roles: wall, center, calltaker (and admin). Close codes as on the center feed (4100 not
signed in, 4104 a role that may not watch, 1013 try again later, 4001 too slow to send to).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from dispatch_field.codes import TRY_AGAIN_LATER, CloseCode
from server.accounts.asgi import authenticate_connection
from server.guard import says_nothing_more
from server.wallmap.watch import RESYNC, MapWatcher, Wall, watcher_of

if TYPE_CHECKING:
    from server.components import Components as Services

WATCHERS = ("wall", "center", "calltaker", "admin")
RECHECK_S = 60.0
FIRST_READ_S = 10.0  # the first map read must be done by then (else: try again later)
SEND_STALL_S = 20.0  # a wall that takes nothing this long is cut off


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


async def _check(ws: WebSocket, services: Services) -> None:
    """Raise _Refused unless the connection's credentials name a person who may watch."""
    if services.auth is None:
        raise _Refused(TRY_AGAIN_LATER, "accounts not open yet: retry")
    try:
        found = await authenticate_connection(ws.scope, services.auth)
    except (SQLAlchemyError, OSError):
        raise _Refused(TRY_AGAIN_LATER, "accounts unreachable: retry") from None
    if found.principal is None:
        if found.failure == "throttled":
            raise _Refused(CloseCode.HELLO_THROTTLED, "too many wrong credentials: wait")
        raise _Refused(CloseCode.AUTH_FAILED, "not signed in")
    if found.principal.role not in WATCHERS:
        raise _Refused(CloseCode.FORBIDDEN, f"role {found.principal.role} may not watch")


async def _send(ws: WebSocket, watcher: MapWatcher, wall: Wall) -> None:
    while True:
        message = await wall.queue.get()
        if message == RESYNC:
            message = watcher.snapshot_message()
            if not message:
                continue
        try:
            await asyncio.wait_for(ws.send_text(message.decode()), SEND_STALL_S)
        except TimeoutError:
            raise _Refused(CloseCode.SLOW_CONSUMER, "not reading: reconnect") from None


async def _listen(ws: WebSocket) -> None:
    """The wall says nothing; this notices it going away (or saying too much)."""
    stray = says_nothing_more()
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if not stray.take(time.monotonic()):
            raise _Refused(CloseCode.RATE_LIMITED, "the map takes nothing after hello")


async def _recheck(ws: WebSocket, services: Services) -> None:
    while True:
        await asyncio.sleep(RECHECK_S)
        try:
            await _check(ws, services)
        except _Refused as refused:
            if refused.code in (CloseCode.AUTH_FAILED, CloseCode.FORBIDDEN):
                raise


async def map_socket(ws: WebSocket) -> None:
    """Accepted first, so that a refusal carries a close code and a reason."""
    await ws.accept()
    services: Services = ws.app.state.components
    try:
        await _check(ws, services)
    except _Refused as refused:
        await ws.close(refused.code, refused.reason)
        return
    watcher = watcher_of(services, ws.app.state)
    wall = watcher.join()
    tasks: list[asyncio.Task[None]] = []
    closing: _Refused | None = None
    try:
        await watcher.welcome(wall, FIRST_READ_S)
        tasks = [
            asyncio.create_task(_send(ws, watcher, wall)),
            asyncio.create_task(_listen(ws)),
            asyncio.create_task(_recheck(ws, services)),
        ]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            error = task.exception()
            if isinstance(error, _Refused):
                closing = error
    except TimeoutError:
        closing = _Refused(TRY_AGAIN_LATER, "the map cannot be read now: retry")
    finally:
        watcher.leave(wall)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
    if closing is not None and ws.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(closing.code, closing.reason)
