"""A lean keep-alive HTTP/1.1 client for the timed intake requests of the load test.

Why not httpx here: when the hub falls behind, an open-loop load piles requests up, and
httpx's connection pool spends CPU in proportion to the queue on every state change, taking
the CPU from the hub it is measuring. Here a waiting request costs one deque entry.

Only what the hub's API needs: JSON bodies, ``Content-Length`` responses (no chunking), one
request at a time per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

# uvicorn closes a keep-alive connection idle for 5 s (its default); a request written on it
# just then would fail. Idle connections older than this are closed instead of reused.
MAX_IDLE_S = 4.0


class HttpError(Exception):
    """The connection failed or the response could not be read."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes


def request_bytes(method: str, path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content length, keep-alive) of a response head (up to the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"bad status line {lines[0]!r}")
    length, keep_alive = 0, parts[0] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            keep_alive = value != "close"
        elif name == "transfer-encoding":
            raise HttpError("chunked responses are not supported")
    return int(parts[1]), length, keep_alive


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = time.monotonic()

    async def exchange(self, data: bytes) -> tuple[Response, bool]:
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, length, keep_alive = parse_head(head[:-4])
        body = await self.reader.readexactly(length) if length else b""
        return Response(status, body), keep_alive

    def close(self) -> None:
        self.writer.close()


class HttpPool:
    """Up to ``max_connections`` keep-alive connections to one server; beyond that, requests
    wait in order for a connection to come free."""

    def __init__(self, host: str, port: int, max_connections: int = 256) -> None:
        self.host, self.port = host, port
        self.max_connections = max_connections
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiting: deque[asyncio.Future[_Connection | None]] = deque()

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> Response:
        data = request_bytes(method, path, f"{self.host}:{self.port}", headers, body)
        connection = await self._acquire()
        try:
            response, keep_alive = await connection.exchange(data)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            HttpError,
            ValueError,
        ) as exc:
            self._discard(connection)
            raise HttpError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            self._discard(connection)
            raise
        if keep_alive:
            self._release(connection)
        else:
            self._discard(connection)
        return response

    async def _acquire(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if time.monotonic() - connection.idle_since < MAX_IDLE_S:
                return connection
            connection.close()
            self._open -= 1
        if self._open >= self.max_connections:
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                self._pass_on(waiter)
                raise
            if handed is not None:
                return handed
        self._open += 1  # a slot was freed (None) or is free: open a connection
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except BaseException as exc:
            self._discard_slot()
            if isinstance(exc, OSError):
                raise HttpError(f"connect: {exc}") from exc
            raise
        return _Connection(reader, writer)

    def _release(self, connection: _Connection) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    def _discard(self, connection: _Connection) -> None:
        """Close a connection; its slot goes to the first waiter, which opens a new one."""
        connection.close()
        self._discard_slot()

    def _pass_on(self, waiter: asyncio.Future[_Connection | None]) -> None:
        """A cancelled waiter may have been handed a connection or a slot: pass it on."""
        if not waiter.done() or waiter.cancelled():
            return
        handed = waiter.result()
        if handed is not None:
            self._release(handed)
        else:
            self._open += 1
            self._discard_slot()

    def _discard_slot(self) -> None:
        self._open -= 1
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        for connection in self._idle:
            connection.close()
            with contextlib.suppress(Exception):
                await connection.writer.wait_closed()
        self._idle.clear()
