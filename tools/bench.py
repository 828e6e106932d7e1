"""Micro-benchmarks of the hub's hot paths, one at a time, on this machine.

    python -m tools.bench [--json out.json] [--quick]

* frames: ``protocol.decode_phone`` of ``pos`` and ``accept`` frames (MessagePack and JSON:
  decode and validate in one pass), ``protocol.encode`` of an offer, ``protocol.stamp_seq``;
* ranking: ``server.assign.ranking.rank`` of ``rank_count`` candidates (geodesic),
  ``haversine_m``;
* position ingest: ``PositionWriter.add`` + ``flush`` against a real (embedded) Redis, in
  batches the size of one 10 ms flush at 18,000 fixes/s, and of 1,000;
* the hub's own code per position: a ``pos`` frame decoded and validated, queued, and its
  share of a flush (180 fixes a flush): everything of a fix but the web server's and the
  WebSocket library's part (the load test's "framework floor");
* Redis round trip: one command through redis-py's asyncio client (the hub's fixed cost per
  command): redis-py's plain and blocking connection pools, and the hub's
  (``server.store.pool``: a bounded pool without a lock per command, packing in C);
* candidate search: ``Dispatcher.candidates`` (the ``candidates`` Lua script) + ``rank``,
  with 1,000 and 10,000 squads of one unit in the GEO index, all available;
* the hub's own code per request lifecycle: ``Intake.create`` (triage, number, create and
  first offer) and the squad's accept (with the offer's ack), en route, arrive and resolve
  through ``SquadActions.apply``, on the hub's own objects and Redis client, without HTTP
  or WebSocket: the part of a lifecycle's cost that is the hub's code and its Redis calls.

Pure code is timed with ``timeit`` (best of three); Redis paths are timed one call after the
other (each waits for its reply), so they give the rate of one coroutine, not of a loaded hub.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis

from dispatch_field import protocol
from server.actions import NewRequest
from server.assign.dispatcher import Dispatcher
from server.assign.ranking import haversine_m, rank
from server.city import load_city
from server.components import Components, build_components
from server.settings import Settings
from server.store import keys
from server.store.embedded import EmbeddedRedis
from server.store.pool import open_redis
from server.store.positions import PositionWriter
from server.store.requests import Actor

SCENE = (34.67, 112.445)  # Xigong district, central Luoyang
UNIT = "water"
CATEGORY = "water_main_burst"


@dataclass(frozen=True)
class Result:
    name: str
    per_s: float
    us: float  # wall microseconds per operation (per call for Redis paths)
    unit: str = "ops"
    python_cpu_us: float | None = None  # CPU of this process per call (Redis paths)
    redis_cpu_us: float | None = None  # CPU of redis-server per call (Redis paths)

    def row(self) -> str:
        split = (
            ""
            if self.redis_cpu_us is None
            else (f"   (python {self.python_cpu_us:.0f} µs + redis {self.redis_cpu_us:.0f} µs CPU)")
        )
        return (
            f"{self.name:<56} {self.per_s:>12,.0f} {self.unit + '/s':<11} {self.us:>9.2f} µs{split}"
        )


def process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_sync(name: str, fn: Callable[[], object], quick: bool) -> Result:
    timer = timeit.Timer(fn)
    loops, _ = timer.autorange()
    best = min(timer.repeat(repeat=1 if quick else 3, number=loops)) / loops
    return Result(name, 1 / best, best * 1e6)


async def time_async(
    name: str,
    fn: Callable[[], Awaitable[int]],
    seconds: float,
    redis_pid: int,
    unit: str = "ops",
    ops_per_call: int = 1,
) -> Result:
    """Call ``fn`` (which returns how many items it handled) for about ``seconds``; times are
    per operation, a call being ``ops_per_call`` operations."""
    await fn()  # warm-up: scripts loaded, connections open
    items = calls = 0
    cpu, redis_cpu, started = time.process_time(), process_cpu_s(redis_pid), time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        items += await fn()
        calls += 1
    cpu, redis_cpu = time.process_time() - cpu, process_cpu_s(redis_pid) - redis_cpu
    per_call = 1e6 / max(calls * ops_per_call, 1)
    return Result(
        name,
        items / elapsed,
        elapsed * per_call,
        unit,
        round(cpu * per_call, 1),
        round(redis_cpu * per_call, 1),
    )


# ---- pure paths ---------------------------------------------------------------------------


def frame_benches(quick: bool) -> list[Result]:
    pos = protocol.Pos(lat=34.6712, lon=112.4431, ts=time.time(), acc=8.5)
    accept = protocol.Accept(assignment="A3f9c2e1b4d5a", id="S00042-17")
    offer = protocol.Offer(
        assignment="A3f9c2e1b4d5a",
        respond_by=time.time() + 60,
        request=protocol.RequestInfo(
            id="20261130-001234",
            category=CATEGORY,
            lat=34.67,
            lon=112.445,
            description="water main burst at the corner",
        ),
    )
    pos_mp, pos_json = protocol.encode(pos), protocol.encode_json(pos)
    accept_mp = protocol.encode(accept)
    body = protocol.encode(offer)
    return [
        time_sync("decode_phone(pos) msgpack", lambda: protocol.decode_phone(pos_mp), quick),
        time_sync("decode_phone(pos) json", lambda: protocol.decode_phone(pos_json), quick),
        time_sync("decode_phone(accept) msgpack", lambda: protocol.decode_phone(accept_mp), quick),
        time_sync("encode(offer) msgpack", lambda: protocol.encode(offer), quick),
        time_sync("stamp_seq(offer body)", lambda: protocol.stamp_seq(body, 123456), quick),
        time_sync(
            "msgpack_to_json(offer) (json subprotocol)",
            lambda: protocol.msgpack_to_json(body),
            quick,
        ),
    ]


def ranking_benches(quick: bool) -> list[Result]:
    rng = random.Random(7)
    count = Settings().rank_count  # as many as the dispatcher ranks per request
    squads = [
        (f"S{i:05d}", SCENE[0] + rng.uniform(-0.05, 0.05), SCENE[1] + rng.uniform(-0.05, 0.05))
        for i in range(count)
    ]
    return [
        time_sync(f"rank({count} candidates) geodesic", lambda: rank(*SCENE, squads), quick),
        time_sync(
            "haversine_m (arrival check per fix)", lambda: haversine_m(*SCENE, 34.68, 112.45), quick
        ),
    ]


# ---- Redis paths --------------------------------------------------------------------------


async def ingest_benches(writer: PositionWriter, seconds: float, redis_pid: int) -> list[Result]:
    units = ["water", "power", "gas", "municipal", "sanitation"]
    rng = random.Random(3)
    squads = [(units[i % len(units)], f"S{i:05d}") for i in range(18_000)]
    results = []
    for batch in (180, 1_000):
        cursor = 0

        async def one_flush(batch: int = batch) -> int:
            nonlocal cursor
            now = time.time()
            for _ in range(batch):
                unit, squad = squads[cursor % len(squads)]
                cursor += 1
                writer.add(unit, squad, 34.6 + rng.random() * 0.1, 112.4 + rng.random() * 0.1, now)
            return await writer.flush()

        results.append(
            await time_async(
                f"PositionWriter add+flush, {batch} fixes/flush (5 units)",
                one_flush,
                seconds,
                redis_pid,
                "fixes",
            )
        )
    sample = squads[:180]
    results.append(Result(*_add_only(writer, sample)))
    await writer.flush()
    return results


def _add_only(writer: PositionWriter, sample: list[tuple[str, str]]) -> tuple[str, float, float]:
    def add_all() -> None:
        for unit, squad in sample:
            writer.add(unit, squad, 34.6, 112.4, 1.0)

    timer = timeit.Timer(add_all)
    loops, _ = timer.autorange()
    per_fix = min(timer.repeat(3, loops)) / loops / len(sample)
    return "PositionWriter.add alone (per fix)", 1 / per_fix, per_fix * 1e6


async def fill_unit(redis: Redis, squads: int, rng: random.Random) -> None:
    """``squads`` available squads of one unit around the scene, fixed now."""
    await redis.flushdb()
    now = time.time()
    pipe = redis.pipeline(transaction=False)
    for i in range(squads):
        squad = f"S{i:05d}"
        lat = SCENE[0] + rng.gauss(0, 0.08)
        lon = SCENE[1] + rng.gauss(0, 0.1)
        pipe.geoadd(keys.geo(UNIT), (lon, lat, squad))
        pipe.zadd(keys.fix_times(UNIT), {squad: now})
        pipe.sadd(keys.available(UNIT), squad)
        pipe.hset(keys.free(UNIT), squad, 1)
        pipe.hset(keys.skills(UNIT), squad, "*")
    await pipe.execute()


async def search_benches(
    dispatcher: Dispatcher, redis: Redis, seconds: float, redis_pid: int
) -> list[Result]:
    rng = random.Random(11)
    results = []
    for squads in (1_000, 10_000):
        await fill_unit(redis, squads, rng)

        async def search() -> list[tuple[str, float, float]]:
            lat, lon = SCENE[0] + rng.uniform(-0.05, 0.05), SCENE[1] + rng.uniform(-0.05, 0.05)
            return await dispatcher.candidates(UNIT, CATEGORY, lat, lon)

        async def lua_only() -> int:
            return 1 if await search() else 0

        async def search_and_rank() -> int:
            found = await search()
            return 1 if rank(*SCENE, found) else 0

        results.append(
            await time_async(
                f"candidates.lua, {squads:,} squads in the index",
                lua_only,
                seconds,
                redis_pid,
                "searches",
            )
        )
        results.append(
            await time_async(
                f"candidates.lua + rank, {squads:,} squads",
                search_and_rank,
                seconds,
                redis_pid,
                "searches",
            )
        )
    return results


async def client_benches(url: str, seconds: float, redis_pid: int) -> list[Result]:
    """One Redis round trip (HGET, ten in flight) through redis-py's asyncio client: the fixed
    cost every command of the hub pays, with redis-py's plain pool, its blocking pool that
    checks connection health (the hub's before issue 9: a condition and an asyncio timeout
    per command), and the hub's own client (``server.store.pool.open_redis``), through its
    pool alone and as the hub runs it, the command on the one multiplexed connection
    (:mod:`server.store.mux`)."""
    clients = {
        "ConnectionPool": Redis(connection_pool=ConnectionPool.from_url(url, max_connections=64)),
        "BlockingConnectionPool + checks": Redis(
            connection_pool=BlockingConnectionPool.from_url(
                url, max_connections=64, timeout=10, health_check_interval=30
            )
        ),
        "open_redis, pool only": _pool_only(open_redis(url, Settings(redis_connections=64))[0]),
        "open_redis (the hub's: multiplexed)": open_redis(url, Settings(redis_connections=64))[0],
    }
    results = []
    for name, client in clients.items():

        async def ten_round_trips(client: Redis = client) -> int:
            await asyncio.gather(*(client.hget("bench", "field") for _ in range(10)))
            return 10

        results.append(
            await time_async(
                f"redis-py round trip, {name}", ten_round_trips, seconds, redis_pid, "commands", 10
            )
        )
        await client.aclose()
    return results


def _pool_only(client: Redis) -> Redis:
    """The hub's client without its multiplexed connection: every command through the pool."""
    client.mux = None  # type: ignore[attr-defined]
    return client


async def position_path_benches(
    writer: PositionWriter, seconds: float, redis_pid: int
) -> list[Result]:
    """The hub's own code per fix: decode and validate the frame, queue it, and its share of
    a flush (180 fixes a flush: 18,000 fixes/s flushed every 10 ms)."""
    rng = random.Random(5)
    units = ["water", "power", "gas", "municipal", "sanitation"]
    squads = [(units[i % len(units)], f"S{i:05d}") for i in range(18_000)]
    frames = [
        protocol.encode(
            protocol.Pos(lat=34.6 + rng.random() * 0.1, lon=112.4 + rng.random() * 0.1, ts=1e9)
        )
        for _ in range(1_000)
    ]
    cursor = 0

    async def one_flush(batch: int = 180) -> int:
        nonlocal cursor
        for _ in range(batch):
            unit, squad = squads[cursor % len(squads)]
            frame = protocol.decode_phone(frames[cursor % len(frames)])
            assert isinstance(frame, protocol.Pos)
            writer.add(unit, squad, frame.lat, frame.lon, time.time())
            cursor += 1
        return await writer.flush()

    return [
        await time_async(
            "hub code per position (decode, queue, flush; 180/flush)",
            one_flush,
            seconds,
            redis_pid,
            "fixes",
            180,
        )
    ]


class _Seqs:
    """Stands in for a squad's session: keeps the seq of the last frame pushed to it."""

    def __init__(self) -> None:
        self.last = 0

    def push_numbered(self, seq: int, body: bytes) -> None:
        self.last = seq


async def lifecycle_benches(
    services: Components, redis: Redis, seconds: float, redis_pid: int
) -> list[Result]:
    """The hub's own code per request lifecycle (see the module's docstring): 1,000 squads
    online on this hub, each request offered to the nearest, then accepted (with the offer's
    ack), en route, arrived and resolved by it. Round trips counted by the hub's client."""
    rng = random.Random(13)
    await fill_unit(redis, 1_000, rng)
    hub = services.hub
    sessions: dict[str, _Seqs] = {}
    pipe = redis.pipeline(transaction=False)
    for i in range(1_000):
        squad = f"S{i:05d}"
        pipe.hset(keys.squad(UNIT, squad), mapping={"hub": hub.id, "online": 1, "duty": 1})
        sessions[squad] = _Seqs()
    await pipe.execute()
    hub.sessions.update(sessions)  # type: ignore[arg-type]
    calltaker = Actor("calltaker", "bench")
    step = 0

    async def one_lifecycle() -> int:
        nonlocal step
        new = NewRequest(
            caller_phone="13800000000",
            category=CATEGORY,
            description="water main burst at the corner",
            lat=SCENE[0] + rng.uniform(-0.03, 0.03),
            lon=SCENE[1] + rng.uniform(-0.03, 0.03),
        )
        created = await services.intake.create(new, calltaker)
        squad, assignment = created["squad"], created["assignment"]
        commands: list[protocol.Command] = [
            protocol.Accept(assignment=assignment, id=f"c{step}a"),
            protocol.Enroute(assignment=assignment, id=f"c{step}e"),
            protocol.Arrive(assignment=assignment, id=f"c{step}r"),
            protocol.Resolve(assignment=assignment, id=f"c{step}z", note="fixed"),
        ]
        step += 1
        ack = sessions[squad].last  # the offer's, riding on the accept as a phone's does
        for command in commands:
            await services.actions.apply(UNIT, squad, command, ack=ack)
            ack = 0
        return 1

    before = services.round_trips.count
    result = await time_async(
        "hub code per request lifecycle (intake + 4 squad steps)",
        one_lifecycle,
        seconds,
        redis_pid,
        "lifecycles",
    )
    print(
        f"  (round trips per lifecycle: {(services.round_trips.count - before) / max(step, 1):.1f},"
        f" warm-up included)",
        file=sys.stderr,
    )
    return [result]


async def redis_benches(seconds: float, only: set[str]) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, EmbeddedRedis(tmp) as server:
        # The hub's own client and objects, built by its composition root: the bench calls
        # what the hub calls, with the arguments it uses, over the connections it uses.
        settings = Settings()
        redis, round_trips = open_redis(server.url, settings)
        assert server.process is not None
        pid = server.process.pid
        try:
            services = build_components(settings, redis, load_city(), round_trips=round_trips)
            await services.scripts.load(redis)
            groups = {
                "client": lambda: client_benches(server.url, seconds, pid),
                "ingest": lambda: ingest_benches(services.positions, seconds, pid),
                "position": lambda: position_path_benches(services.positions, seconds, pid),
                "search": lambda: search_benches(services.dispatcher, redis, seconds, pid),
                "lifecycle": lambda: lifecycle_benches(services, redis, seconds, pid),
            }
            return [r for name, run in groups.items() if name in only for r in await run()]
        finally:
            await redis.aclose()


GROUPS = ("frames", "ranking", "client", "ingest", "position", "search", "lifecycle")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--quick", action="store_true", help="shorter runs (smoke test)")
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated groups to run, of {','.join(GROUPS)} (default: all)",
    )
    args = parser.parse_args(argv)
    seconds = 0.3 if args.quick else 2.0
    only = set(args.only.split(","))
    if only - set(GROUPS):
        parser.error(f"unknown group(s): {', '.join(sorted(only - set(GROUPS)))}")
    results = [
        *(frame_benches(args.quick) if "frames" in only else []),
        *(ranking_benches(args.quick) if "ranking" in only else []),
        *asyncio.run(redis_benches(seconds, only)),
    ]
    print(f"{'benchmark':<56} {'rate':>12} {'':<11} {'per op':>12}")
    for result in results:
        print(result.row())
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
