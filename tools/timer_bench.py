"""Benchmark: deadline timers firing under load, and the hub CPU they cost.

    python -m tools.timer_bench [--timers 10000] [--window 20] [--poll-ms 200]

Seeds ``--timers`` linkage requests straight into an embedded Redis (no squad, out of the
queue so the queue sweep does not work on them), each with an accept deadline spread evenly
over ``--window`` seconds a little in the future, and arrive/resolve deadlines hours away
(so about 3x ``--timers`` timers are pending). One hub process then fires them: each accept
deadline issues a ``waiting`` notice (notice.lua, an event in the stream and the ledger).

Reports the firing lateness (notice ``issued_at`` - deadline) p50/p99/max, that every
notice was issued exactly once, and the hub's CPU during the window beyond its idle rate
(per timer fired); with deadlines denser than the hub can fire (``--window 2``), the rate it
sustains. Lateness has a floor of about one poll interval (``DISPATCH_TIMER_POLL_MS``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from redis.asyncio import BlockingConnectionPool, Redis

from server.launch import spawn_hub
from server.lifecycle import RequestView, State, Triaged, transition
from server.notices import decode_notice
from server.store import keys
from server.store.embedded import EmbeddedRedis
from server.store.requests import Actor, RequestStore, event_json
from server.store.scripts import Scripts

UNIT = "gas"
CATEGORY = "gas_leak_smell"
SCENE = (34.670, 112.445)
TOKENS = {"admin": "bench-admin-123456"}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _seed(redis: Redis, count: int, first_due: float, window_s: float) -> list[str]:
    store = RequestStore(
        redis,
        Scripts.register(redis),
        events_maxlen=1_000_000,
        command_memory_s=60,
        outbox_max_frames=100,
        zone=ZoneInfo("Asia/Shanghai"),
    )
    step = transition(RequestView(State.RECEIVED), Triaged("linkage"))
    ids = [f"20991231-{i + 1:06d}" for i in range(count)]
    now = time.time()

    async def one(i: int, request_id: str) -> None:
        due = first_due + window_s * i / count
        fields = (
            {
                "id": request_id,
                "category": CATEGORY,
                "description": "bench",
                "unit": UNIT,
                "lat": repr(SCENE[0]),
                "lon": repr(SCENE[1]),
                "received_at": repr(now),
                "route": "linkage",
                "accept_by": repr(due),
                "arrive_by": repr(now + 36_000),
                "resolve_by": repr(now + 72_000),
            }
            | step.fields
            | {"state": step.state.value}
        )
        await redis.hset(keys.request_units(), request_id, UNIT)
        await store.create(
            request_id,
            UNIT,
            fields,
            [event_json("queued", request_id, now, Actor("bench"))],
            step,
            received_at=now,
        )

    for start in range(0, count, 200):
        await asyncio.gather(*(one(i, ids[i]) for i in range(start, min(count, start + 200))))
    await redis.delete(keys.queue(UNIT))  # waiting, but no dispatch work for the sweep
    return ids


async def run(count: int, window_s: float, poll_ms: float, lead_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = EmbeddedRedis(Path(tmp) / "redis").start()
        hub = None
        redis = Redis(
            connection_pool=BlockingConnectionPool.from_url(redis_server.url, max_connections=32)
        )
        try:
            seeded_at = time.time()
            first_due = seeded_at + lead_s
            ids = await _seed(redis, count, first_due, window_s)
            seed_s = time.time() - seeded_at
            pending = await redis.zcard(keys.timers(UNIT))
            hub = spawn_hub(
                redis_server.url,
                TOKENS,
                Path(tmp) / "var",
                {"timer_poll_ms": poll_ms, "notice_escalate_s": 86_400},
            )
            # Idle rate (the ledger catching up with the seeded events included) just before
            # the window, measured over the last seconds before the first deadline.
            await asyncio.sleep(max(0.0, first_due - 4.0 - time.time()))
            idle_from, idle_cpu = time.time(), hub.cpu_seconds()
            await asyncio.sleep(max(0.0, first_due - time.time()))
            idle_rate = (hub.cpu_seconds() - idle_cpu) / (time.time() - idle_from)
            window_from, window_cpu = time.time(), hub.cpu_seconds()
            await asyncio.sleep(window_s)
            # Until every notice is out (a burst beyond the hub's rate drains after the
            # window), at most a minute more.
            until = time.time() + 60
            for _ in range(600):
                if await redis.zcard(keys.open_notices(UNIT)) >= count or time.time() > until:
                    break
                await asyncio.sleep(0.1)
            window_cpu = hub.cpu_seconds() - window_cpu
            window_wall = time.time() - window_from
            lateness = []
            issued = 0
            pipe = redis.pipeline(transaction=False)
            for request_id in ids:
                pipe.hgetall(keys.notices(UNIT, request_id))
            for stored in await pipe.execute():
                issued += len(stored)
                for raw in stored.values():
                    notice = decode_notice(raw)
                    lateness.append((notice.issued_at - notice.due_at) * 1000)
        finally:
            if hub is not None:
                hub.stop()
            await redis.aclose()
            redis_server.stop()
    busy = max(0.0, window_cpu - idle_rate * window_wall)
    return {
        "timers_fired": count,
        "timers_pending_at_start": pending,
        "seed_s": round(seed_s, 1),
        "poll_ms": poll_ms,
        "window_s": window_s,
        "notices_issued": issued,
        "lateness_ms": {
            "p50": round(statistics.median(lateness), 1) if lateness else None,
            "p99": round(_percentile(lateness, 0.99), 1) if lateness else None,
            "max": round(max(lateness), 1) if lateness else None,
            "min": round(min(lateness), 1) if lateness else None,
        },
        "hub_cpu_percent_window": round(100 * window_cpu / window_wall, 1),
        "hub_cpu_percent_idle": round(100 * idle_rate, 1),
        "fired_per_s": round(issued / window_wall, 1),
        "hub_cpu_us_per_timer": round(busy / max(1, issued) * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timers", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=20.0, help="seconds the deadlines span")
    parser.add_argument("--poll-ms", type=float, default=200.0, help="DISPATCH_TIMER_POLL_MS")
    parser.add_argument(
        "--lead",
        type=float,
        default=40.0,
        help="seconds from seeding to the first deadline (hub start-up)",
    )
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args()
    report = asyncio.run(run(args.timers, args.window, args.poll_ms, args.lead))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
