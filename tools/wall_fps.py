"""Benchmark: the wall map's frames per second in a real browser with 10,000 squads moving.

    python -m tools.wall_fps [--squads 10000] [--moving 1.0] [--seconds 10] [--json]

Starts an embedded Redis and one hub, places ``--squads`` squads straight into Redis (spread
over the city, each unit's share; most on duty, a part busy), and moves ``--moving`` of them
(a share: 1.0 is every squad) a few metres every second, as their phones would. Headless
chromium (Debian's, through Playwright: ``DISPATCH_CHROMIUM`` or ``chromium`` on the PATH)
signs in as a wall account, opens /wall.html at 1920x1080 and waits until every squad is
drawn; then counts ``requestAnimationFrame`` callbacks for ``--seconds``.

Reports the frames per second, the longest frame, the layer's redraws, the bytes the wall
received per second over /ws/map, and the hub's CPU over the window (the map reader included).
Headless chromium renders in software (no GPU): a wall's browser has more to spare.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis as redis_sync

from server.launch import spawn_hub
from server.store import keys
from server.store.embedded import EmbeddedRedis

TOKENS = {"admin": "wall-fps-admin-123456"}
WALL_USER = "wall-fps"
WALL_PASSWORD = "wall-fps-password-0123"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Luoyang's districts lie within this box (lat, lon).
SOUTH_WEST = (34.45, 112.20)
NORTH_EAST = (34.90, 112.95)


@dataclass
class Seeded:
    unit: str
    id: str
    lat: float
    lon: float


Ring = list[tuple[float, float]]  # (lon, lat) corners, as GeoJSON


def inside(lon: float, lat: float, ring: Ring) -> bool:
    """Whether the point is inside the polygon ``ring`` (ray casting)."""
    found = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1], strict=True):
        if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
            found = not found
    return found


def random_point(rng: random.Random, areas: list[Ring] | None) -> tuple[float, float]:
    """(lat, lon) in one of ``areas`` (any, if None: the city's box)."""
    south, west, north, east = (*SOUTH_WEST, *NORTH_EAST)
    if areas:
        corners = [corner for ring in areas for corner in ring]
        west, east = min(c[0] for c in corners), max(c[0] for c in corners)
        south, north = min(c[1] for c in corners), max(c[1] for c in corners)
    while True:
        lat = rng.uniform(south, north)
        lon = rng.uniform(west, east)
        if not areas or any(inside(lon, lat, ring) for ring in areas):
            return lat, lon


def seed_squads(
    client: redis_sync.Redis,
    units: list[str],
    count: int,
    rng: random.Random,
    *,
    busy_share: float = 0.4,
    off_duty_share: float = 0.1,
    free: bool = True,
    areas: list[Ring] | None = None,
) -> list[Seeded]:
    """Place ``count`` squads (ids ``S00001``…) over the city (within ``areas``: the
    districts' outer rings), spread over ``units``. Each is on the map (GEO set); on duty
    unless drawn off duty; busy (no free capacity) with ``busy_share``. ``free=False``:
    every squad is busy, so none is offered work (a squad placed this way has no phone to
    answer)."""
    seeded: list[Seeded] = []
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        unit = units[n % len(units)]
        squad = Seeded(unit, f"S{n + 1:05d}", *random_point(rng, areas))
        seeded.append(squad)
        pipe.geoadd(keys.geo(unit), (squad.lon, squad.lat, squad.id))
        pipe.zadd(keys.fix_times(unit), {squad.id: time.time()})
        if rng.random() >= off_duty_share:
            pipe.sadd(keys.available(unit), squad.id)
        busy = not free or rng.random() < busy_share
        pipe.hset(keys.free(unit), squad.id, 0 if busy else 1)
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return seeded


def district_rings(base_url: str, headers: dict[str, str]) -> list[Ring]:
    """The outer ring of every district (GET /api/v1/districts)."""
    districts = httpx.get(base_url + "/api/v1/districts", headers=headers).json()
    return [[(lon, lat) for lon, lat in d["boundary"]["coordinates"][0]] for d in districts]


def move_squads(
    client: redis_sync.Redis, squads: list[Seeded], share: float, rng: random.Random
) -> int:
    """Move ``share`` of the squads up to ~30 m each, in one pipeline; how many moved."""
    moving = squads if share >= 1 else rng.sample(squads, int(len(squads) * share))
    pipe = client.pipeline(transaction=False)
    for squad in moving:
        squad.lat += rng.uniform(-0.0003, 0.0003)
        squad.lon += rng.uniform(-0.0003, 0.0003)
        pipe.geoadd(keys.geo(squad.unit), (squad.lon, squad.lat, squad.id))
    pipe.execute()
    return len(moving)


class Mover(threading.Thread):
    """Moves the squads every second until stopped."""

    def __init__(self, url: str, squads: list[Seeded], share: float) -> None:
        super().__init__(daemon=True)
        self.client = redis_sync.Redis.from_url(url)
        self.squads, self.share = squads, share
        self.rng = random.Random(7)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(1.0):
            move_squads(self.client, self.squads, self.share, self.rng)


def chromium_path() -> str:
    path = os.environ.get("DISPATCH_CHROMIUM") or shutil.which("chromium")
    if not path:
        raise SystemExit("no chromium: apt-get install chromium (or set DISPATCH_CHROMIUM)")
    return path


# Counts animation frames for the given seconds, in the page (no timer of ours in between).
MEASURE_JS = """async (seconds) => {
  const layer = window.wallView.squads;
  const draws = layer.draws;
  const gaps = [];
  let frames = 0, last = performance.now();
  const started = last;
  await new Promise((done) => {
    function frame(now) {
      frames += 1; gaps.push(now - last); last = now;
      if (now - started < seconds * 1000) requestAnimationFrame(frame); else done();
    }
    requestAnimationFrame(frame);
  });
  const elapsed = (last - started) / 1000;
  const takes = window.wallView.view.takeMs.slice(-Math.ceil(seconds));
  gaps.sort((a, b) => a - b);
  return { fps: frames / elapsed, worst_frame_ms: gaps[gaps.length - 1],
    p99_frame_ms: gaps[Math.floor(gaps.length * 0.99)], redraws: layer.draws - draws,
    elapsed_s: elapsed, squads_drawn: layer.count(), draw_ms: layer.drawMs,
    message_ms: takes.reduce((a, b) => a + b, 0) / Math.max(1, takes.length) };
}"""


def measure(url: str, seconds: float, expected: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    received = {"bytes": 0}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1920, "height": 1080}).new_page()

        def socket(ws: Any) -> None:
            if ws.url.endswith("/ws/map"):
                ws.on(
                    "framereceived",
                    lambda payload: received.update(bytes=received["bytes"] + len(payload)),
                )

        page.on("websocket", socket)
        page.goto(url + "/wall.html")
        page.fill("#username", WALL_USER)
        page.fill("#password", WALL_PASSWORD)
        page.press("#password", "Enter")
        page.wait_for_function(
            "(n) => window.wallView && window.wallView.squads.count() >= n",
            arg=expected,
            timeout=60_000,
        )
        page.wait_for_timeout(2000)  # past the first snapshot's layout
        before = received["bytes"]
        result: dict[str, Any] = page.evaluate(MEASURE_JS, seconds)
        result["ws_bytes_per_s"] = round((received["bytes"] - before) / result["elapsed_s"])
        browser.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squads", type=int, default=10_000)
    parser.add_argument("--moving", type=float, default=1.0, help="share moving each second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="wall-fps-"))
    redis = EmbeddedRedis(tmp / "redis").start()
    hub = None
    mover = None
    try:
        hub = spawn_hub(redis.url, TOKENS, tmp / "var", log_path=tmp / "hub.log")
        headers = {"Authorization": f"Bearer {TOKENS['admin']}"}
        account = {"username": WALL_USER, "name": "Wall", "role": "wall", "password": WALL_PASSWORD}
        httpx.post(hub.http + "/api/v1/accounts", json=account, headers=headers).raise_for_status()
        units = [u["code"] for u in httpx.get(hub.http + "/api/v1/units", headers=headers).json()]
        client = redis_sync.Redis.from_url(redis.url)
        areas = district_rings(hub.http, headers)
        squads = seed_squads(client, units, args.squads, random.Random(1), areas=areas)
        mover = Mover(redis.url, squads, args.moving)
        mover.start()
        cpu_before, clock_before = hub.cpu_seconds(), time.monotonic()
        result = measure(hub.http, args.seconds, args.squads)
        hub_cpu = (hub.cpu_seconds() - cpu_before) / (time.monotonic() - clock_before)
        full_map = httpx.get(hub.http + "/api/v1/map", headers=headers, timeout=30)
        result |= {
            "full_map_bytes": len(full_map.content),
            "squads": args.squads,
            "moving_per_s": math.floor(args.squads * min(1.0, args.moving)),
            "hub_cpu_share_of_a_core": round(hub_cpu, 3),
        }
    finally:
        if mover is not None:
            mover.halt.set()
        if hub is not None:
            hub.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['squads']} squads, {result['moving_per_s']} moving each second: "
            f"{result['fps']:.1f} frames/s (longest frame {result['worst_frame_ms']:.0f} ms, "
            f"p99 {result['p99_frame_ms']:.0f} ms), {result['redraws']} redraws of the squad "
            f"layer in {result['elapsed_s']:.1f} s, {result['ws_bytes_per_s'] / 1000:.0f} kB/s "
            f"over /ws/map (a message applied in {result['message_ms']:.0f} ms, the layer drawn "
            f"in {result['draw_ms']:.0f} ms); "
            f"hub CPU {result['hub_cpu_share_of_a_core']:.0%} of a core; "
            f"the whole map (GET /api/v1/map) is {result['full_map_bytes'] / 1000:.0f} kB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
