"""A lean WebSocket client codec for the load test: sans-I/O, bytes in and bytes out.

Why not the ``websockets`` asyncio client: each of its connections is a task, a reader and
several futures, and ten thousand of them in one process spend more CPU on themselves than on
the frames. The load generator shares two cores with the hub it measures, so every
microsecond it spends is taken from the hub. This module does only what a squad's phone needs
(RFC 6455): the opening handshake, masked frames out, unmasked frames in (binary, text,
continuation, ping, pong, close). No extension is offered, so none can be negotiated.

Masking uses the ``websockets`` C speed-up when it is built, the pure-Python one otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from typing import Final

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C extension is optional
    from websockets.utils import apply_mask

GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
NO_STATUS: Final = 1005  # a close frame without a code (RFC 6455 §7.1.5)
MAX_MESSAGE: Final = 1 << 20  # hub frames are small; anything bigger is a broken stream

Message = tuple[int, bytes]  # (opcode, payload) of a complete message or control frame


class WebSocketError(Exception):
    """The hub's bytes break the protocol (bad handshake, masked or oversized frame)."""


def new_key() -> str:
    """A fresh ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_value(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def handshake_request(host: str, port: int, path: str, subprotocol: str, key: str) -> bytes:
    """The HTTP/1.1 upgrade request opening a connection."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
    ).encode()


def check_handshake_response(head: bytes, key: str, subprotocol: str) -> None:
    """Raise WebSocketError unless ``head`` (the response up to the blank line) accepts the
    upgrade with ``key`` and ``subprotocol``."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        raise WebSocketError(f"upgrade refused: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get("sec-websocket-accept") != accept_value(key):
        raise WebSocketError("wrong Sec-WebSocket-Accept")
    if headers.get("sec-websocket-protocol") != subprotocol:
        raise WebSocketError(f"subprotocol {headers.get('sec-websocket-protocol')!r} chosen")
    if headers.get("sec-websocket-extensions"):
        raise WebSocketError("an extension was negotiated though none was offered")


def encode_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """One final client frame, masked with the 4-byte ``mask``."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return header + mask + apply_mask(payload, mask)


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def close_code(payload: bytes) -> int:
    """The status code of a close frame's payload."""
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else NO_STATUS


class FrameParser:
    """Feed it the server's bytes; it returns complete messages and control frames in order.

    Server frames are never masked (RFC 6455 §5.1); fragmented messages are reassembled.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0

    def feed(self, data: bytes) -> list[Message]:
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        start = 0
        while True:
            frame = _next_frame(buffer, start)
            if frame is None:
                break
            fin, opcode, payload, start = frame
            message = self._assemble(fin, opcode, payload)
            if message is not None:
                messages.append(message)
        del buffer[:start]
        return messages

    def _assemble(self, fin: bool, opcode: int, payload: bytes) -> Message | None:
        if opcode >= OP_CLOSE:  # control frames may come between fragments
            return opcode, payload
        if opcode == OP_CONT:
            if not self._fragments:
                raise WebSocketError("continuation frame without a message")
            self._fragments.append(payload)
        elif self._fragments:
            raise WebSocketError("new message inside a fragmented one")
        elif fin:
            return opcode, payload
        else:
            self._fragment_opcode, self._fragments = opcode, [payload]
        if not fin:
            return None
        message = b"".join(self._fragments)
        self._fragments = []
        return self._fragment_opcode, message


def _next_frame(buffer: bytearray, start: int) -> tuple[bool, int, bytes, int] | None:
    """(fin, opcode, payload, next start) of the frame at ``start``, or None if incomplete."""
    available = len(buffer) - start
    if available < 2:
        return None
    first, second = buffer[start], buffer[start + 1]
    if first & 0x70:
        raise WebSocketError("reserved bits set: no extension was negotiated")
    if second & 0x80:
        raise WebSocketError("masked frame from the server")
    size, offset = second & 0x7F, 2
    if size == 126:
        if available < 4:
            return None
        size, offset = struct.unpack_from("!H", buffer, start + 2)[0], 4
    elif size == 127:
        if available < 10:
            return None
        size, offset = struct.unpack_from("!Q", buffer, start + 2)[0], 10
    if size > MAX_MESSAGE:
        raise WebSocketError(f"frame of {size} bytes")
    end = start + offset + size
    if len(buffer) < end:
        return None
    return bool(first & 0x80), first & 0x0F, bytes(buffer[start + offset : end]), end
