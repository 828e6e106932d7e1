"""The asyncio reference client of the field protocol: what a squad's phone does.

* Connects with ``hello`` carrying the last ``seq`` it received, so the hub replays the gap.
* Acknowledges numbered frames (cumulative ``ack``) and drops duplicates by ``seq``.
* Sends commands with an ``id`` and waits for ``ok``/``error`` of that id. Commands made while
  disconnected are queued, stamped with the time they happened (``at``), and sent on resume;
  the ids make the replay idempotent.
* Reconnects after a transient close (4000-4099, 1001, 1006, ...) with exponential backoff
  and jitter, to the next of its hub URLs (failover); stops on a terminal close (4100-4199).
* A ``resync`` (the hub could not replay the gap) replaces the phone's view of its work.
* A command refused with ``busy`` (the hub's Redis is restarting) is sent again later.

Frames the app should see (``welcome``, ``offer``, ``revoke``, ``notice``, uncorrelated
``error``) go to
``frames``, an asyncio queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dispatch_field import protocol
from dispatch_field.codes import should_reconnect

log = logging.getLogger(__name__)
F = TypeVar("F", bound=protocol.HubFrame)


class CommandRejected(Exception):
    """The hub refused a command with an ``error`` frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class TerminalClose(Exception):
    """The hub closed the connection with a code that says not to reconnect."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code, self.reason = code, reason


_ids = itertools.count(1)


def new_command_id(squad: str) -> str:
    return f"{squad}-{int(time.time() * 1000):x}-{next(_ids)}"


class FieldClient:
    def __init__(
        self,
        url: str | Sequence[str],
        squad: str,
        token: str,
        *,
        json: bool = False,
        reconnect: bool = True,
        auto_ack: bool = True,
        backoff_s: tuple[float, float] = (0.2, 10.0),
        on_frame: Callable[[protocol.HubFrame], Awaitable[None] | None] | None = None,
        keepalive_s: float = 15.0,
    ) -> None:
        self.keepalive_s = keepalive_s  # an idle phone re-sends its ack this often (the hub
        # closes a squad it has not heard from for DISPATCH_OFFLINE_AFTER_S)
        self._last_sent = time.monotonic()
        self.urls = [url] if isinstance(url, str) else list(url)
        self._url_index = 0
        self.squad, self.token = squad, token
        self.json = json
        self.reconnect = reconnect
        self.auto_ack = auto_ack
        self.backoff_s = backoff_s
        self.on_frame = on_frame
        self.last_seq = 0
        self.frames: asyncio.Queue[protocol.HubFrame] = asyncio.Queue()
        self.welcomes = 0  # how many times the hub greeted us (1 + reconnects)
        self.close_codes: list[int] = []
        self.duplicates = 0  # numbered frames received again (absorbed)
        self.resyncs = 0
        self._ws: ClientConnection | None = None
        self._pending: dict[str, tuple[protocol.Command, asyncio.Future[protocol.Ok]]] = {}
        self._connected = asyncio.Event()
        self._welcomed: asyncio.Future[protocol.Welcome] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self.terminal: TerminalClose | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self, timeout_s: float = 10.0) -> protocol.Welcome:
        """Connect and wait for the first ``welcome``."""
        self._welcomed = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run())
        waiting: set[asyncio.Future[Any]] = {self._welcomed, self._runner}
        done, _ = await asyncio.wait(
            waiting, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if self._welcomed in done:
            return self._welcomed.result()
        if self._runner in done:
            self._runner.result()  # raises TerminalClose or the connect error
        raise TimeoutError("no welcome from the hub")

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(BaseException):
                await self._runner

    async def drop(self) -> None:
        """Cut the connection abruptly (as a phone entering a tunnel); it reconnects if
        ``reconnect`` is on."""
        if self._ws is not None:
            self._ws.transport.abort()  # type: ignore[union-attr]

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ---- sending ---------------------------------------------------------------------------

    async def send(self, frame: protocol.PhoneFrame | Any) -> None:
        """Send a frame now (dropped if disconnected: positions and duty are not queued)."""
        if self._ws is None or not self._connected.is_set():
            return
        data: bytes | str = protocol.encode_json(frame) if self.json else protocol.encode(frame)
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(data)
            self._last_sent = time.monotonic()

    async def _keep_alive(self) -> None:
        """Say something (a repeated ``ack``, harmless) whenever the phone has been quiet."""
        while True:
            quiet = time.monotonic() - self._last_sent
            if quiet >= self.keepalive_s:
                await self.send(protocol.Ack(seq=self.last_seq))
                quiet = 0.0
            await asyncio.sleep(self.keepalive_s - quiet)

    async def send_raw(self, data: bytes | str) -> None:
        """Send bytes as they are (tests of bad frames)."""
        assert self._ws is not None
        await self._ws.send(data)

    async def pos(self, lat: float, lon: float, acc: float | None = None) -> None:
        await self.send(protocol.Pos(lat=lat, lon=lon, ts=time.time(), acc=acc))

    async def duty(self, on: bool) -> None:
        await self.send(protocol.Duty(on=on))

    async def command(self, frame: protocol.Command, timeout_s: float = 30.0) -> protocol.Ok:
        """Send a command and wait for its ``ok``; raises CommandRejected on ``error``.

        While disconnected the command waits and is sent on resume.
        """
        future: asyncio.Future[protocol.Ok] = asyncio.get_running_loop().create_future()
        self._pending[frame.id] = (frame, future)
        try:
            if self._connected.is_set():
                await self.send(frame)
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        finally:
            if future.done():
                self._pending.pop(frame.id, None)

    def _stamped(self, kind: type[protocol.Command], **fields: Any) -> protocol.Command:
        return kind(id=new_command_id(self.squad), at=round(time.time(), 3), **fields)

    async def accept(self, assignment: str) -> protocol.Ok:
        return await self.command(self._stamped(protocol.Accept, assignment=assignment))

    async def enroute(self, assignment: str) -> protocol.Ok:
        return await self.command(self._stamped(protocol.Enroute, assignment=assignment))

    async def arrive(self, assignment: str) -> protocol.Ok:
        return await self.command(self._stamped(protocol.Arrive, assignment=assignment))

    async def resolve(self, assignment: str, note: str = "") -> protocol.Ok:
        return await self.command(self._stamped(protocol.Resolve, assignment=assignment, note=note))

    async def defer(self, assignment: str, until: float, reason: str) -> protocol.Ok:
        return await self.command(
            self._stamped(protocol.Defer, assignment=assignment, until=until, reason=reason)
        )

    async def dispute(self, assignment: str, reason: str) -> protocol.Ok:
        return await self.command(
            self._stamped(protocol.Dispute, assignment=assignment, reason=reason)
        )

    # ---- receiving -------------------------------------------------------------------------

    async def next_frame(self, kind: type[F], timeout_s: float = 10.0) -> F:
        """The next frame of ``kind``; frames of other kinds before it are discarded."""
        async with asyncio.timeout(timeout_s):
            while True:
                frame = await self.frames.get()
                if isinstance(frame, kind):
                    return frame

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                await self._session()
                attempt = 0
            except TerminalClose as exc:
                self.terminal = exc
                if self._welcomed and not self._welcomed.done():
                    self._welcomed.set_exception(exc)
                raise
            except (OSError, ConnectionClosed, TimeoutError) as exc:
                log.debug("%s could not connect: %r", self.squad, exc)
            finally:
                self._connected.clear()
                self._ws = None
            if not self.reconnect or self._closing:
                return
            self._url_index = (self._url_index + 1) % len(self.urls)  # fail over
            attempt += 1
            low, high = self.backoff_s
            await asyncio.sleep(random.uniform(0, min(high, low * 2 ** min(attempt, 10))))

    async def _session(self) -> None:
        subprotocol = protocol.SUBPROTOCOL_JSON if self.json else protocol.SUBPROTOCOL_MSGPACK
        async with connect(
            self.urls[self._url_index],
            subprotocols=[subprotocol],  # type: ignore[list-item]
            open_timeout=10,
            max_size=2**20,
            ping_interval=20,
        ) as ws:
            self._ws = ws
            hello = protocol.Hello(squad=self.squad, token=self.token, last_seq=self.last_seq)
            await ws.send(protocol.encode_json(hello) if self.json else protocol.encode(hello))
            keep_alive = asyncio.create_task(self._keep_alive())
            try:
                async for data in ws:
                    await self._received(protocol.decode_hub(data))
            except ConnectionClosed:
                pass
            except msgspec.DecodeError:
                log.exception("undecodable frame from the hub")
                raise
            finally:
                keep_alive.cancel()
            code = ws.close_code if ws.close_code is not None else 1006
            self.close_codes.append(code)
            if code != 1000 and not should_reconnect(code):
                raise TerminalClose(code, ws.close_reason or "")

    async def _received(self, frame: protocol.HubFrame) -> None:
        match frame:
            case protocol.Welcome():
                await self._welcome(frame)
            case protocol.Offer() | protocol.Revoke() | protocol.Notice():
                if frame.seq <= self.last_seq:
                    self.duplicates += 1
                else:
                    self.last_seq = frame.seq
                    await self._deliver(frame)
                if self.auto_ack:
                    await self.send(protocol.Ack(seq=self.last_seq))
            case protocol.Ok(id=command_id) if command_id in self._pending:
                _, future = self._pending.pop(command_id)
                if not future.done():
                    future.set_result(frame)
            case protocol.Error(code="busy", id=command_id) if command_id in self._pending:
                command, _ = self._pending[command_id]
                loop = asyncio.get_running_loop()
                loop.call_later(0.5, lambda: asyncio.ensure_future(self.send(command)))
            case protocol.Resync():
                self.last_seq = frame.last_seq
                self.resyncs += 1
                await self._deliver(frame)
            case protocol.Error(id=command_id) if command_id in self._pending:
                _, future = self._pending.pop(command_id)
                if not future.done():
                    future.set_exception(CommandRejected(frame.code, frame.message))
            case _:
                await self._deliver(frame)

    async def _welcome(self, frame: protocol.Welcome) -> None:
        # A hub behind our count lost frames (its Redis lost data): take its count.
        self.last_seq = min(self.last_seq, frame.last_seq)
        self.welcomes += 1
        self._connected.set()
        if self._welcomed is not None and not self._welcomed.done():
            self._welcomed.set_result(frame)
        await self._deliver(frame)
        for command, future in list(self._pending.values()):  # resume queued commands
            if not future.done():
                await self.send(command)

    async def _deliver(self, frame: protocol.HubFrame) -> None:
        await self.frames.put(frame)
        if self.on_frame is not None:
            result = self.on_frame(frame)
            if result is not None:
                await result
