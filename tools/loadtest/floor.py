"""The bare dispatch: the least any hub must do for the load test's workload, as a floor.

    python -m tools.loadtest --floor ...     (runs the hub, then this, with the same client)

A Starlette app on uvicorn (uvloop, websockets-sansio, ping timers and GC thresholds as the
hub has them) and redis-py with hiredis, that does only:

* ``/ws/field``: ``hello`` -> ``welcome``; ``pos`` -> GEOADD, buffered and flushed every 10 ms
  in one pipeline; ``accept`` ... ``resolve`` -> one Redis round trip that records the step
  (an HSET; ``resolve``: a script that also frees the squad's capacity), then ``ok``: a
  request's lifecycle makes 6 round trips (the hub: 7); ``ack`` and ``duty``: nothing.
* ``POST /api/v1/requests``: district and unit from the city file, GEOSEARCH of the unit's
  nearest squads, one Lua call claiming the first with free capacity, the offer frame written
  to that squad's socket, ``201 {id, squad, assignment}``.

No outbox, timers, events, ledger, accounts or limits: what the hub costs above this is what
its own features and structure cost. Started by the load test as
``python -m tools.loadtest.floor --serve PORT --squads FILE`` with ``FLOOR_REDIS_URL`` in its
environment (a URL with a password stays out of the process list); FILE is JSON
``{squad: unit}``, every squad with capacity 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from dispatch_field import protocol
from server.city import load_city

PREFIX = "floor:"  # its keys, beside nothing else (the hub's Redis is flushed before)
CLAIM = """
for i, squad in ipairs(ARGV) do
  if tonumber(redis.call('HGET', KEYS[1], squad) or '0') > 0 then
    redis.call('HINCRBY', KEYS[1], squad, -1)
    return squad
  end
end
return false
"""
RESOLVE = """
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HDEL', KEYS[2], ARGV[2])
"""
SEARCH_KM = 60
CANDIDATES = 8
FLUSH_S = 0.010


class NewRequest(msgspec.Struct):
    caller_phone: str
    category: str
    description: str
    lat: float
    lon: float


class Floor:
    """The bare dispatch's state: its Redis, the sockets of this process, pending fixes."""

    def __init__(self, redis: Redis, squad_units: dict[str, str]) -> None:
        self.redis = redis
        self.city = load_city()
        self.units = squad_units
        self.sockets: dict[str, WebSocket] = {}
        self.fixes: list[tuple[str, float, float, str]] = []
        self.claim = redis.register_script(CLAIM)
        self.resolve = redis.register_script(RESOLVE)
        self.ids = itertools.count(1)
        self.decode_request = msgspec.json.Decoder(NewRequest).decode

    async def setup(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for squad, unit in self.units.items():
            pipe.hset(f"{PREFIX}free:{unit}", squad, 1)
        await pipe.execute()

    async def flush_positions(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            if not self.fixes:
                continue
            fixes, self.fixes = self.fixes, []
            pipe = self.redis.pipeline(transaction=False)
            for unit, lon, lat, squad in fixes:
                pipe.geoadd(f"{PREFIX}geo:{unit}", (lon, lat, squad))
            await pipe.execute()

    async def field(self, ws: WebSocket) -> None:
        await ws.accept(subprotocol=protocol.SUBPROTOCOL_MSGPACK)
        hello = protocol.decode_phone(await ws.receive_bytes())
        if not isinstance(hello, protocol.Hello) or hello.squad not in self.units:
            await ws.close(4100)
            return
        squad, unit = hello.squad, self.units[hello.squad]
        self.sockets[squad] = ws
        await ws.send_bytes(protocol.encode(protocol.Welcome(squad=squad, last_seq=0)))
        try:
            while True:
                frame = protocol.decode_phone(await ws.receive_bytes())
                if isinstance(frame, protocol.Pos):
                    self.fixes.append((unit, frame.lon, frame.lat, squad))
                elif isinstance(frame, protocol.Resolve):
                    await self.resolve(  # the job ended and the squad freed: one round trip
                        keys=[f"{PREFIX}free:{unit}", f"{PREFIX}step:{unit}"],
                        args=[squad, frame.assignment],
                    )
                    await ws.send_bytes(protocol.encode(protocol.Ok(id=frame.id)))
                elif isinstance(frame, protocol.Accept | protocol.Enroute | protocol.Arrive):
                    # the step recorded: one write, as any hub keeping state in Redis makes
                    await self.redis.hset(
                        f"{PREFIX}step:{unit}", frame.assignment, frame.__struct_config__.tag
                    )
                    await ws.send_bytes(protocol.encode(protocol.Ok(id=frame.id)))
        except WebSocketDisconnect:
            pass
        finally:
            if self.sockets.get(squad) is ws:
                del self.sockets[squad]

    async def intake(self, request: Request) -> Response:
        body = self.decode_request(await request.body())
        district = self.city.district_at(body.lat, body.lon)
        unit = self.city.unit_for(body.category, district.code) if district else None
        if unit is None:
            return Response(b'{"error": {"code": "no_unit"}}', 422)
        near = await self.redis.geosearch(
            f"{PREFIX}geo:{unit.code}",
            longitude=body.lon,
            latitude=body.lat,
            radius=SEARCH_KM,
            unit="km",
            sort="ASC",
            count=CANDIDATES,
        )
        squads = [s.decode() for s in near if isinstance(s, bytes)]
        free = f"{PREFIX}free:{unit.code}"
        claimed = await self.claim(keys=[free], args=squads) if squads else None
        if not claimed:
            return Response(b'{"error": {"code": "no_squad"}}', 503)
        squad = claimed.decode()
        number = next(self.ids)
        request_id, assignment = f"F{number:08d}", f"A{number:08d}"
        offer = protocol.Offer(
            assignment=assignment,
            request=protocol.RequestInfo(
                id=request_id,
                category=body.category,
                description=body.description,
                lat=body.lat,
                lon=body.lon,
            ),
            respond_by=time.time() + 60,
            seq=number,
        )
        ws = self.sockets.get(squad)
        if ws is not None:
            await ws.send_bytes(protocol.encode(offer))
        return Response(
            msgspec.json.encode({"id": request_id, "squad": squad, "assignment": assignment}),
            201,
            media_type="application/json",
        )


def build_app(redis_url: str, squad_units: dict[str, str]) -> Starlette:
    redis = Redis.from_url(redis_url)
    floor = Floor(redis, squad_units)
    tasks: list[asyncio.Task[None]] = []

    async def health(_: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await floor.setup()
        tasks.append(asyncio.create_task(floor.flush_positions()))
        yield
        tasks[0].cancel()
        await redis.aclose()

    return Starlette(
        routes=[
            WebSocketRoute("/ws/field", floor.field),
            Route("/api/v1/requests", floor.intake, methods=["POST"]),
            Route("/api/v1/health", health),
        ],
        lifespan=lifespan,
    )


def serve(port: int, redis_url: str, squads_file: Path) -> None:
    app = build_app(redis_url, json.loads(squads_file.read_text()))
    gc.set_threshold(50_000, 50, 100)  # as the hub does
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_ping_interval=15.0,
        ws_ping_timeout=15.0,
        backlog=4096,
    )


def start(port: int, redis_url: str, squads_file: Path) -> subprocess.Popen[bytes]:
    """Start the bare dispatch in its own process (wait for its health page yourself)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.loadtest.floor",
            "--serve",
            str(port),
            "--squads",
            str(squads_file),
        ],
        env=dict(os.environ, FLOOR_REDIS_URL=redis_url),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.loadtest.floor", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--serve", type=int, metavar="PORT", required=True)
    parser.add_argument("--squads", type=Path, required=True)
    args = parser.parse_args(argv)
    serve(args.serve, os.environ["FLOOR_REDIS_URL"], args.squads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
