"""A load-generator process: thousands of squad connections on one event loop.

Each connection is an :class:`asyncio.Protocol` (no task, no stream reader per connection)
around the sans-I/O codec of :mod:`tools.loadtest.ws`; the behaviour is
:class:`tools.loadtest.squad.SquadAgent`. Positions go out from one timer wheel: every
squad has a random phase within the position interval, and each tick sends the squads whose
slot it is.

Each squad knows every hub's port, its own first. A squad whose connection ends (a draining
hub's close 1012, a refused or failed connection) reconnects to the next port after a jittered
backoff, as the reference client does, resumes from its ``last_seq`` and sends its unanswered
commands again (same ids); the gap from the loss to the next welcome is recorded (``moves``).

The orchestrator talks to the process through shared counters (read at any time), three
events (``go``: start positions, ``storm``: drop every connection and say hello again at once,
``stop``) and a result queue (one message at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import resource
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any, TypeVar, cast

import msgspec

from dispatch_field import protocol
from tools.loadtest import ws
from tools.loadtest.squad import SquadAgent, Tally

# Shared counters (a multiprocessing Array of int64 per client process).
CONNECTED, POS_SENT, OFFERS, PENDING, DISCONNECTS, FAILED, BACK = range(7)
N_COUNTERS = 7
WHEEL_SLOTS = 100
JITTER_DEG = 0.0002  # a fix wanders about 20 m around the squad's home
# Reconnecting: as dispatch_field.client.FieldClient, a random delay in [0, min(cap, base *
# 2**attempt)], attempt 1 right after a lost connection; a phone keeps trying this many times.
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.2, 10.0
CONNECT_ATTEMPTS, RECONNECT_ATTEMPTS = 5, 12
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SquadSpec:
    squad: str
    token: str
    ports: tuple[int, ...]  # every hub's port, the squad's own first: where it fails over to
    lat: float
    lon: float

    @property
    def port(self) -> int:
        return self.ports[0]


def backoff_s(attempt: int) -> float:
    """The jittered delay before connection attempt ``attempt`` (1: right after a loss)."""
    return random.uniform(0.0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(attempt, 10)))


@dataclass(frozen=True, slots=True)
class ClientConfig:
    host: str = "127.0.0.1"
    pos_interval_s: float = 1.0
    connect_concurrency: int = 64
    connect_timeout_s: float = 60.0
    reconnect: bool = True
    hold: bool = False  # squads acknowledge and answer nothing (the storm's set-up)
    ignore_share: float = 0.0  # share of offers acknowledged and left to expire (timers fire)
    storm_concurrency: int = 1000  # handshakes in flight at once during the storm
    # Handshakes in flight at once after lost connections. Phones reconnect on their own,
    # spread only by the hub's drain and their jittered backoff; this is a guard for this
    # process, not a pacing (a cap of 64 made a move of 2,000 phones wait on the cap).
    resume_concurrency: int = 1000


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to the hard limit; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """Keep the garbage collector out of the measurement: a full collection in a load
    generator holding thousands of connections takes tens of milliseconds, and would be
    counted against the hub. What is allocated at set-up is frozen; cycles made meanwhile
    are collected afterwards."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


class Connection(asyncio.Protocol):
    """One squad's socket: handshake, hello, then frames both ways."""

    def __init__(self, link: Link, runner: Runner, port: int) -> None:
        self.link = link
        self.runner = runner
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.key = ws.new_key()
        self.mask = os.urandom(4)
        self.parser = ws.FrameParser()
        self.head = b""
        self.upgraded = False
        self.ready = False  # welcomed and open
        self.welcomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        cfg = self.runner.config
        self.transport.write(
            ws.handshake_request(
                cfg.host, self.port, "/ws/field", protocol.SUBPROTOCOL_MSGPACK, self.key
            )
        )

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        try:
            if not self.upgraded:
                data = self._upgrade(data)
            for opcode, payload in self.parser.feed(data):
                self._message(opcode, payload, now)
        except (ws.WebSocketError, msgspec.DecodeError) as exc:
            self._fail(exc)

    def _upgrade(self, data: bytes) -> bytes:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return b""
        head, rest = self.head[:end], self.head[end + 4 :]
        ws.check_handshake_response(head, self.key, protocol.SUBPROTOCOL_MSGPACK)
        self.upgraded = True
        self.send([self.link.agent.hello()])
        return rest

    def _message(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == ws.OP_BINARY or opcode == ws.OP_TEXT:
            frame = protocol.decode_hub(payload if opcode == ws.OP_BINARY else payload.decode())
            self.send(self.link.agent.handle(frame, now))
            if isinstance(frame, protocol.Welcome):
                self._welcome(now)
            if self.runner.storming and self.link.back_at is None:
                self.runner.check_back(self.link, now)
        elif opcode == ws.OP_PING:
            self._write(ws.encode_frame(ws.OP_PONG, payload, self.mask))
        elif opcode == ws.OP_CLOSE:
            self.runner.close_codes[ws.close_code(payload)] += 1
            self._write(ws.encode_frame(ws.OP_CLOSE, payload[:2], self.mask))
            if self.transport is not None:
                self.transport.close()

    def _welcome(self, now: float) -> None:
        self.ready = True
        link = self.link
        if link.lost_at is not None:  # back after a lost connection: how long it took
            self.runner.moves.append((link.lost_at, now, link.lost_port, self.port))
            self.runner.squad_moves.append((link.agent.squad, link.lost_at, now))
            link.lost_at = None
        self.send_position(time.time())
        if not self.welcomed.done():
            self.welcomed.set_result(None)

    def send(self, frames: Sequence[protocol.PhoneFrame]) -> None:
        if frames:
            self._write(
                b"".join(
                    ws.encode_frame(ws.OP_BINARY, protocol.encode(f), self.mask) for f in frames
                )
            )

    def send_position(self, wall_now: float) -> None:
        spec = self.link.spec
        frame = protocol.Pos(
            lat=spec.lat + (random.random() - 0.5) * JITTER_DEG,
            lon=spec.lon + (random.random() - 0.5) * JITTER_DEG,
            ts=wall_now,
        )
        self._write(ws.encode_frame(ws.OP_BINARY, protocol.encode(frame), self.mask))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, exc: Exception) -> None:
        self.runner.failures[type(exc).__name__] += 1
        if not self.welcomed.done():
            self.welcomed.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.welcomed.done():
            self.welcomed.set_exception(exc or ConnectionError("closed before welcome"))
        was_ready, self.ready = self.ready, False
        self.runner.lost(self.link, self, was_ready)


def _factory(conn: Connection) -> Callable[[], Connection]:
    return lambda: conn


@dataclass(eq=False, slots=True)
class Link:
    """A squad of this process and its current connection."""

    spec: SquadSpec
    agent: SquadAgent
    conn: Connection | None = None
    back_at: float | None = None  # storm: when it was welcomed again with every frame
    port_index: int = 0  # the port of spec.ports to connect to next
    lost_at: float | None = None  # when its last connection ended, until it is welcomed again
    lost_port: int = 0  # the port of that connection


class Runner:
    """The squads of one client process."""

    def __init__(self, specs: Sequence[SquadSpec], config: ClientConfig, counters: Any) -> None:
        self.config = config
        self.tally = Tally()
        self.links = [
            Link(s, SquadAgent(s.squad, s.token, self.tally, config.hold, config.ignore_share))
            for s in specs
        ]
        self.counters = counters
        self.connected = 0
        self.pos_sent = 0
        self.disconnects = 0
        self.failed = 0
        self.stopping = False
        self.storming = False
        self.back = 0
        self._back_wanted = 0
        self._all_back = asyncio.Event()
        self.storm_result: dict[str, Any] = {}
        self.failures: Counter[str] = Counter()
        self.close_codes: Counter[int] = Counter()
        # (lost at, welcomed again at, port lost, port welcomed on) of each reconnection
        self.moves: list[tuple[float, float, int, int]] = []
        self.squad_moves: list[tuple[str, float, float]] = []  # squad, lost at, welcomed at
        self.tick_late_ms: list[float] = []  # how late each position tick left (ms)
        self._handshakes = asyncio.Semaphore(config.connect_concurrency)
        self._resumes = asyncio.Semaphore(config.resume_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(
        self, link: Link, attempts: int = CONNECT_ATTEMPTS, after_loss: bool = False
    ) -> None:
        """Connect and wait for the welcome; a failed attempt moves on to the next port.
        ``after_loss``: the squad just lost a connection, so it waits a first jittered delay
        (the phones of a draining hub do not all come back at the same moment)."""
        loop = asyncio.get_running_loop()
        ports = link.spec.ports
        for attempt in range(attempts):
            if after_loss or attempt:
                await asyncio.sleep(backoff_s(attempt + after_loss))
            if self.stopping:
                return
            port = ports[link.port_index]
            conn = Connection(link, self, port)
            link.conn = conn
            try:
                async with self._resumes if after_loss else self._handshakes:
                    await loop.create_connection(_factory(conn), self.config.host, port)
                    await asyncio.wait_for(conn.welcomed, self.config.connect_timeout_s)
                self.connected += 1
                return
            except (TimeoutError, OSError, ws.WebSocketError, ConnectionError) as exc:
                self.failures[type(exc).__name__] += 1
                if conn.transport is not None:
                    conn.transport.abort()
                link.port_index = (link.port_index + 1) % len(ports)
        self.failed += 1

    def lost(self, link: Link, conn: Connection, was_ready: bool) -> None:
        if link.conn is not conn or not was_ready:
            return
        self.connected -= 1
        if self.stopping:
            return
        self.disconnects += 1
        link.lost_at, link.lost_port = time.monotonic(), conn.port
        link.port_index = (link.port_index + 1) % len(link.spec.ports)  # fail over
        if self.config.reconnect:
            self._spawn(self.connect(link, RECONNECT_ATTEMPTS, after_loss=True))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def connect_all(self) -> None:
        await asyncio.gather(*(self.connect(link) for link in self.links))

    async def positions(self) -> None:
        """Send every squad's position once per interval, spread over ``WHEEL_SLOTS`` ticks."""
        slots: list[list[Link]] = [[] for _ in range(WHEEL_SLOTS)]
        for link in self.links:
            slots[random.randrange(WHEEL_SLOTS)].append(link)
        tick = self.config.pos_interval_s / WHEEL_SLOTS
        next_at = time.monotonic()
        index = 0
        late = self.tick_late_ms
        while True:
            wall = time.time()
            late.append((time.monotonic() - next_at) * 1000)
            for link in slots[index]:
                conn = link.conn
                if conn is not None and conn.ready:
                    conn.send_position(wall)
                    self.pos_sent += 1
            index = (index + 1) % WHEEL_SLOTS
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def publish(self) -> None:
        c = self.counters
        c[CONNECTED], c[POS_SENT], c[OFFERS] = self.connected, self.pos_sent, len(self.tally.offers)
        c[PENDING], c[DISCONNECTS], c[FAILED] = self.tally.pending, self.disconnects, self.failed
        c[BACK] = self.back

    # ---- the reconnect storm ---------------------------------------------------------------

    async def storm(self, timeout_s: float) -> None:
        """Drop every connection, then say hello again at once with ``last_seq`` 0 (at most
        ``storm_concurrency`` handshakes in flight); wait until each squad is back with every
        frame the hub numbered, or ``timeout_s``."""
        for link in self.links:
            link.agent.start_replay()
            link.back_at = None
        self.back = 0
        self._all_back = asyncio.Event()
        self._back_wanted = len(self.links)
        self.close_all()
        dropped_at = time.monotonic()
        for _ in range(100):  # the aborted connections report their loss on the next turns
            if self.connected == 0:
                break
            await asyncio.sleep(0)
        self.stopping, self.storming = False, True
        self._handshakes = asyncio.Semaphore(self.config.storm_concurrency)
        failed_before = self.failed
        await asyncio.gather(*(self.connect(link) for link in self.links))
        self._back_wanted = len(self.links) - (self.failed - failed_before)
        if self.back >= self._back_wanted:
            self._all_back.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_back.wait(), timeout_s)
        self.storming = False
        agents = [link.agent for link in self.links]
        self.storm_result = {
            "dropped_at": dropped_at,
            "back_after_s": [
                link.back_at - dropped_at for link in self.links if link.back_at is not None
            ],
            "squads": len(self.links),
            "back": self.back,
            "frames_before": sum(len(a.before) for a in agents),
            "frames_replayed": sum(len(a.seqs) for a in agents),
            "frames_missing": sum(len(a.before - a.seqs) for a in agents),
            "failed": self.failed - failed_before,
        }

    def check_back(self, link: Link, now: float) -> None:
        if link.agent.replayed():
            link.back_at = now
            self.back += 1
            if self.back >= self._back_wanted:
                self._all_back.set()

    async def publish_every(self, interval_s: float) -> None:
        while True:
            self.publish()
            await asyncio.sleep(interval_s)

    def close_all(self) -> None:
        self.stopping = True
        for link in self.links:
            if link.conn is not None and link.conn.transport is not None:
                link.conn.transport.abort()

    def result(self) -> dict[str, Any]:
        tally = asdict(self.tally)
        tally["errors"] = dict(self.tally.errors)
        return (
            tally
            | {
                "connected": self.connected,
                "pos_sent": self.pos_sent,
                "disconnects": self.disconnects,
                "failed": self.failed,
                "failures": dict(self.failures),
                "close_codes": dict(self.close_codes),
                "moves": self.moves,
                "squad_moves": self.squad_moves,
                "tick_late_ms": self.tick_late_ms,
                # (lost at, port) of squads still away from every hub
                "away": [(k.lost_at, k.lost_port) for k in self.links if k.lost_at is not None],
            }
            | ({"storm": self.storm_result} if self.storm_result else {})
        )


async def _wait(event: Event) -> None:
    """Wait for a multiprocessing event without blocking the loop (one thread waits)."""
    await asyncio.to_thread(event.wait)


async def _wait_first(*events: Event) -> None:
    while not any(e.is_set() for e in events):  # noqa: ASYNC110 - multiprocessing events
        await asyncio.sleep(0.01)


async def run_client(
    specs: Sequence[SquadSpec],
    config: ClientConfig,
    counters: Any,
    go: Event,
    stop: Event,
    storm: Event | None = None,
) -> dict[str, Any]:
    runner = Runner(specs, config, counters)
    reporter = asyncio.create_task(runner.publish_every(0.1))
    await runner.connect_all()
    with no_gc_pauses():
        await _wait(go)
        wheel = asyncio.create_task(runner.positions())
        if storm is not None:
            await _wait_first(storm, stop)
            if storm.is_set():
                await runner.storm(timeout_s=120 + len(specs) / 50)
        await _wait(stop)
        wheel.cancel()
    reporter.cancel()
    runner.publish()
    result = runner.result()
    runner.close_all()
    for task in (wheel, reporter):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return result


def _run_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def client_main(
    specs: Sequence[SquadSpec],
    config: ClientConfig,
    counters: Any,
    go: Event,
    stop: Event,
    results: Queue[Any],
    index: int,
    storm: Event | None = None,
) -> None:
    """Entry point of a client process: runs until ``stop``, then puts its result."""
    raise_open_files_limit()
    try:
        result = _run_loop(run_client(specs, config, counters, go, stop, storm))
    except BaseException as exc:  # noqa: BLE001 - the orchestrator must hear of it
        results.put((index, {"crashed": repr(exc)}))
        raise
    results.put((index, result))
