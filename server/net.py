"""The hub's network edge: uvicorn configured with the limits of :mod:`server.guard`.

* :class:`BodyLimit`: an ASGI middleware answering 413 to a request body above
  ``DISPATCH_MAX_BODY_BYTES``, without reading the rest of it.
* :func:`edge_protocols`: uvicorn's HTTP (httptools) and WebSocket (websockets-sansio)
  protocols with a deadline for request headers and for the WebSocket handshake, and a cap on
  concurrent connections, in total and per client address. A connection is counted by its
  transport, which uvicorn hands from the HTTP protocol to the WebSocket protocol on an
  upgrade: counted in the first ``connection_made``, released in the last ``connection_lost``.
* The WebSocket protocol also hands a binary message to the app's inline handler, in its
  read callback, when nothing waits before it (the ``dispatch.inline`` ASGI extension: a
  squad's position fix costs no queue, task wake-up or pause of reading); and an ended
  connection lets go of what held it in reference cycles (freed by refcounting, not by the
  cyclic garbage collector).
* :func:`serve`: runs the app on those protocols, with accept failures (EMFILE) logged.

These subclasses lean on uvicorn's protocol classes (attributes ``transport``, ``client``,
``loop``, ``handshake_complete``, ``frames``, ``curr_msg_data_type``, ``queue``,
``close_sent``, ``scope``, ``parser``, ``conn`` and the httptools parser callbacks); a
uvicorn or websockets upgrade must keep ``tests/test_hostile.py`` and
``tests/test_edge_inline.py`` passing.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from server.guard import Burst, ConnectionLedger, Verdict, default_max_connections
from server.log_filters import uvicorn_log_config
from server.settings import Settings

log = logging.getLogger(__name__)

REPORT_EVERY_S = 60.0  # a burst of refusals or accept failures is logged at most this often

# ---- request bodies -----------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


def _error_body(code: str, message: str) -> bytes:
    return msgspec.json.encode({"error": {"code": code, "message": message, "fields": {}}})


class BodyLimit:
    """Refuse request bodies above ``max_bytes`` with 413 ``too_large`` and close the
    connection: a declared ``Content-Length`` above the cap at once, before the app runs; a
    chunked body as soon as the bytes received pass the cap. Memory per request stays near
    the cap whatever the client sends."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except _BodyTooLarge:
            if started:  # too late for a status: the connection ends mid-response
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = _error_body("too_large", f"the request body is larger than {self.max_bytes} bytes")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),  # the unread rest of the body is not waited for
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser has refused it already
    return None


# ---- connections --------------------------------------------------------------------------


def open_descriptors() -> int:
    """Descriptors this process has open (Linux /proc; -1 if it cannot be read, which at the
    limit itself is the case: listing the directory needs a descriptor too)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def open_files_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class EdgeLimits:
    """What the protocols of one server share: the connection counts and the deadline."""

    connections: ConnectionLedger
    header_timeout_s: float
    close_timeout_s: float = 2.0  # after its app ended, a socket still open is cut off
    refusals: Burst = field(default_factory=lambda: Burst(REPORT_EVERY_S))

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        total = settings.max_connections or default_max_connections(
            open_files_limit(), settings.redis_connections
        )
        return cls(
            ConnectionLedger(total, settings.max_connections_per_address),
            settings.header_timeout_s,
            settings.close_timeout_s,
        )

    def refused(self, verdict: Verdict, address: str) -> None:
        count = self.refusals.note(time.monotonic())
        if count:
            ledger = self.connections
            log.warning(
                "refused %d connection(s) (latest from %s: %s); %d open (cap %d, %d per "
                "address), %d descriptors open",
                count,
                address,
                verdict.value,
                ledger.total,
                ledger.max_total,
                ledger.max_per_address,
                open_descriptors(),
            )


_UNAVAILABLE = _error_body("unavailable", "too many connections: retry later")
_UNAVAILABLE_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: "
    + str(len(_UNAVAILABLE)).encode()
    + b"\r\n\r\n"
    + _UNAVAILABLE
)


class EdgeHttpProtocol(HttpToolsProtocol):
    """httptools HTTP/1.1 with a header deadline and the connection caps."""

    limits: ClassVar[EdgeLimits]
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else ""
        verdict = self.limits.connections.admit(transport, address)
        if verdict is not Verdict.ADMITTED:
            # Answer without reading anything and free the descriptor now.
            self.limits.refused(verdict, address)
            transport.write(_UNAVAILABLE_RESPONSE)
            transport.close()
            return
        self._arm_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_deadline is None:  # the next request on a kept-alive connection
            self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # This protocol is done: the WebSocket protocol has the transport. Its httptools
        # parser holds its callbacks, so the two would wait for the cyclic garbage collector
        # (uvicorn lets go of the parser in connection_lost, which an upgraded connection
        # never reaches here).
        self.parser = None  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        self.limits.connections.release(self.transport)
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(
            self.limits.header_timeout_s, self._headers_late
        )

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        # A client that takes this long for its headers is broken or holding a descriptor on
        # purpose: no answer, just the close.
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


INLINE_EXTENSION = "dispatch.inline"
"""The ASGI extension (``scope["extensions"]``) through which an app hands the WebSocket
protocol a callback for binary messages: see :meth:`EdgeWebSocketProtocol.set_inline`."""

Inline = Callable[[bytes], bool]


class EdgeWebSocketProtocol(WebSocketsSansIOProtocol):
    """websockets-sansio with a handshake deadline; releases the connection's count; takes
    an inline handler for binary messages (``dispatch.inline``)."""

    limits: ClassVar[EdgeLimits]
    _handshake_deadline: asyncio.TimerHandle | None = None
    _cut_off: asyncio.TimerHandle | None = None
    _inline: Inline | None = None

    def set_inline(self, handler: Inline | None) -> None:
        """From now on a complete binary message that arrives while no message waits for
        the app goes first to ``handler``, in the protocol's own read callback; ``True``
        means it was handled and is not queued for the app. Otherwise (or ``False``) it is
        queued as always. uvicorn's way costs each message a queue put and get, a wake-up of
        the app's task and its whole chain of coroutines, and two ``epoll_ctl`` system calls
        (it pauses reading after every message until the app takes it): at 10,000 position
        fixes a second that is most of what a fix costs."""
        self._inline = handler

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # None: the handshake was refused
        if scope is not None:  # the app's task has not run yet: it sees the extension
            scope["extensions"][INLINE_EXTENSION] = {"set": self.set_inline}

    def send_receive_event_to_app(self) -> None:
        inline = self._inline
        if (
            inline is not None
            and self.curr_msg_data_type == "bytes"
            and len(self.frames) == 1
            and not self.close_sent
            and self.queue.empty()  # nothing before it waits: taking it now keeps the order
            and inline(self.frames[0])
        ):
            self.frames = []
            return
        super().send_receive_event_to_app()

    async def run_asgi(self) -> None:
        await super().run_asgi()
        # The app is done with this socket (it closed it, or cut off a slow peer). Closing a
        # transport waits until its buffer drains, which a peer that reads nothing never
        # lets happen: the socket, its buffered frames and its descriptor would stay for
        # good. Whatever is still open after the close timeout is aborted.
        self._cut_off = self.loop.call_later(self.limits.close_timeout_s, self.transport.abort)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # counted by the HTTP protocol that upgraded
        self._handshake_deadline = self.loop.call_later(
            self.limits.header_timeout_s, self._handshake_late
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._inline = None  # lets go of the session it refers to
        if self._handshake_deadline is not None:
            self._handshake_deadline.cancel()
            self._handshake_deadline = None
        if self._cut_off is not None:
            self._cut_off.cancel()
        self.limits.connections.release(self.transport)
        super().connection_lost(exc)
        # Let go of what holds this connection in reference cycles, so that it is freed when
        # its last reference goes, not by the cyclic garbage collector: in a reconnect storm
        # of 10,000 phones that collector took a fifth of the hub's CPU, in stalls of up to
        # a second. websockets' parser is a generator whose frame holds its protocol (after
        # connection_lost uvicorn never feeds it again: its send raises ClientDisconnected
        # first); the scope holds the inline extension, whose methods hold this protocol.
        self.conn.parser = None  # type: ignore[assignment]
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"].pop(INLINE_EXTENSION, None)

    def _handshake_late(self) -> None:
        self._handshake_deadline = None
        if not self.handshake_complete and not self.transport.is_closing():
            self.transport.close()


def edge_protocols(
    limits: EdgeLimits,
) -> tuple[type[EdgeHttpProtocol], type[EdgeWebSocketProtocol]]:
    """Protocol classes bound to ``limits`` (uvicorn instantiates them itself)."""
    http = type("EdgeHttp", (EdgeHttpProtocol,), {"limits": limits})
    ws = type("EdgeWebSocket", (EdgeWebSocketProtocol,), {"limits": limits})
    return http, ws


# ---- accept failures ----------------------------------------------------------------------

_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


def accept_error_handler(previous: ExceptionHandler | None) -> ExceptionHandler:
    """A loop exception handler that turns asyncio's "socket.accept() out of system resource"
    (one per failed accept, retried every second) into one line per burst with the number of
    open descriptors; everything else goes to ``previous`` (or the loop's default)."""
    burst = Burst(REPORT_EVERY_S)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES:
            count = burst.note(time.monotonic())
            if count:
                log.error(
                    "accept failed %d time(s): %s; %d descriptors open, limit %d",
                    count,
                    exc.strerror,
                    open_descriptors(),
                    open_files_limit(),
                )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    return handle


async def watch_descriptors(interval_s: float = 5.0, share: float = 0.95) -> None:
    """Log (once per burst) when this process holds ``share`` of its open-files limit or more.

    uvloop (libuv) handles EMFILE itself, accepting and closing the pending connection without
    telling Python; this is how a hub on uvloop still says that it ran out of descriptors.
    """
    burst = Burst(REPORT_EVERY_S)
    while True:
        await asyncio.sleep(interval_s)
        limit, held = open_files_limit(), open_descriptors()
        if limit > 0 and (held < 0 or held >= limit * share):
            count = burst.note(time.monotonic())
            if count:
                shown = "all" if held < 0 else str(held)
                log.error("%s of %d file descriptors open: new connections fail", shown, limit)


class _Server(uvicorn.Server):
    _watch: asyncio.Task[None] | None = None
    drain: Callable[[Callable[[], None]], Awaitable[None]] | None = None

    async def startup(self, sockets: Any = None) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(accept_error_handler(loop.get_exception_handler()))
        self._watch = loop.create_task(watch_descriptors())
        await super().startup(sockets)

    async def shutdown(self, sockets: Any = None) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self.drain is not None:
            try:
                await self.drain(self._stop_listening)
            except Exception:  # noqa: BLE001 - the shutdown goes on regardless
                log.exception("draining failed; shutting down anyway")
        await super().shutdown(sockets)

    def _stop_listening(self) -> None:
        for server in self.servers:
            server.close()


def serve(
    app: ASGIApp,
    settings: Settings,
    host: str,
    port: int,
    log_level: str,
    drain: Callable[[Callable[[], None]], Awaitable[None]] | None = None,
) -> None:
    """Run ``app`` until a signal stops it: uvloop, httptools for HTTP/1.1 and
    websockets-sansio for the field socket (what uvicorn's "auto" picked, made explicit so
    the limits above apply to the classes that really run). ``drain(stop_listening)``: run
    when a signal asks the server to stop, before the connections are shut."""
    limits = EdgeLimits.from_settings(settings)
    http, ws = edge_protocols(limits)
    log.info(
        "connection caps: %d in total, %d per address; header deadline %.1fs",
        limits.connections.max_total,
        limits.connections.max_per_address,
        limits.header_timeout_s,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        loop="uvloop",
        http=http,
        ws=ws,
        ws_ping_interval=settings.heartbeat_s,
        ws_ping_timeout=settings.heartbeat_s,
        ws_max_size=max(65536, settings.max_frame_bytes * 4),
        backlog=4096,
        proxy_headers=settings.trusted_proxies is not None,
        forwarded_allow_ips=settings.trusted_proxies,
        timeout_graceful_shutdown=5 + math.ceil(settings.drain_spread_s),
        log_config=uvicorn_log_config(settings.log_format),  # no query strings in the access log
    )
    server = _Server(config)
    server.drain = drain
    server.run()
