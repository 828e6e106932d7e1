"""The framework floor: what one position frame costs a bare uvicorn + Starlette app.

    python -m tools.loadtest.floor [--squads 10000] [--pos-interval 1] [--duration 10]

Starts a minimal app in its own process (same uvicorn settings as the hub: uvloop,
websockets-sansio, GC thresholds) that answers ``hello`` with ``welcome`` and then only
decodes and validates frames, drives it with the load test's squad clients, and prints the
app's CPU per frame. Compared with the hub's ``hub_cpu_us_per_position`` (load test with
``--rate 0``), the difference is what the hub itself adds per fix.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from dispatch_field import protocol
from server.embedded_redis import free_port
from tools.loadtest import client as lc
from tools.loadtest.run import proc_cpu_s, wait_healthy_port


async def field(ws: WebSocket) -> None:
    await ws.accept(subprotocol=protocol.SUBPROTOCOL_MSGPACK)
    hello = protocol.decode_phone(await ws.receive_bytes())
    assert isinstance(hello, protocol.Hello)
    await ws.send_bytes(protocol.encode(protocol.Welcome(squad=hello.squad, last_seq=0)))
    try:
        while True:
            protocol.decode_phone(await ws.receive_bytes())
    except WebSocketDisconnect:
        return


def serve(port: int) -> None:
    from starlette.responses import PlainTextResponse

    async def health(_: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[WebSocketRoute("/ws/field", field), Route("/api/v1/health", health)])
    gc.set_threshold(50_000, 50, 100)  # as the hub does
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=4096)


def start_server(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tools.loadtest.floor", "--serve", str(port)]
    )


async def measure(squads: int, pos_interval: float, duration: float) -> dict[str, Any]:
    lc.raise_open_files_limit()
    port = free_port()
    server = start_server(port)
    try:
        await wait_healthy_port(port, server)
        specs = [lc.SquadSpec(f"S{i:05d}", "token", port, 34.67, 112.44) for i in range(squads)]
        runner = lc.Runner(specs, lc.ClientConfig(pos_interval_s=pos_interval), [0] * lc.N_COUNTERS)
        await runner.connect_all()
        wheel = asyncio.create_task(runner.positions())
        await asyncio.sleep(pos_interval + 1.0)
        cpu, sent, started = proc_cpu_s(server.pid), runner.pos_sent, time.monotonic()
        await asyncio.sleep(duration)
        cpu, sent = proc_cpu_s(server.pid) - cpu, runner.pos_sent - sent
        elapsed = time.monotonic() - started
        wheel.cancel()
        runner.close_all()
        return {
            "squads_connected": runner.connected,
            "frames_per_s": round(sent / elapsed, 1),
            "app_cpu_percent": round(100 * cpu / elapsed, 1),
            "app_cpu_us_per_frame": round(1e6 * cpu / sent, 1) if sent else None,
        }
    finally:
        server.terminate()
        server.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.loadtest.floor")
    parser.add_argument("--squads", type=int, default=10_000)
    parser.add_argument("--pos-interval", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    import uvloop

    result = uvloop.run(measure(args.squads, args.pos_interval, args.duration))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
