"""What the squads' tracks cost the position path (server/store/tracks.py).

    python -m tools.track_bench [--squads 18000] [--flushes 2000] [--busy 0.3] [--rounds 3]

Feeds ``PositionWriter.add`` + ``flush`` on an embedded Redis exactly as the hub does (batches
of one 10 ms flush at 18,000 fixes/s: 180 fixes), with no track recorder, with the hub's
default recorder (a point per squad holding work every 10 s), and with a point for every fix
(interval 0: the worst case). ``--busy``: the share of squads holding work (their points are
appended; the others' samples are dropped by ``track.lua``). Reports fixes per second of one
coroutine, this process's CPU per fix (the hub's side) and Redis's CPU per fix: each
configuration ``--rounds`` times, interleaved, the median run by CPU shown.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from server.settings import Settings
from server.store import keys
from server.store.embedded import EmbeddedRedis
from server.store.positions import PositionWriter
from server.store.tracks import TrackRecorder

UNITS = ("water", "power", "gas", "municipal", "sanitation")
BATCH = 180


@dataclass
class Run:
    name: str
    fixes: int
    wall_s: float
    cpu_s: float
    redis_cpu_s: float
    appended: int

    def row(self) -> str:
        per_fix_us = self.cpu_s / self.fixes * 1e6
        redis_us = self.redis_cpu_s / self.fixes * 1e6
        rate = self.fixes / self.wall_s
        return (
            f"{self.name:<44} {rate:>10,.0f} fixes/s  {per_fix_us:>6.2f} µs CPU/fix  "
            f"{redis_us:>6.2f} µs Redis/fix  {self.appended:>7,} points"
        )


def redis_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


async def one_run(
    redis: Redis, pid: int, name: str, tracks: TrackRecorder | None, squads: int, flushes: int
) -> Run:
    writer = PositionWriter(redis, 0.01, tracks)
    rng = random.Random(7)
    members = [(UNITS[i % len(UNITS)], f"S{i:05d}") for i in range(squads)]
    cursor = 0
    redis_before, cpu_before, wall_before = redis_cpu_s(pid), time.process_time(), time.monotonic()
    for _ in range(flushes):
        now = time.time()
        for _ in range(BATCH):
            unit, squad = members[cursor % squads]
            cursor += 1
            writer.add(unit, squad, 34.6 + rng.random() * 0.1, 112.4 + rng.random() * 0.1, now)
        await writer.flush()
        await asyncio.sleep(0)  # the recorder's write task gets its turn, as in the hub
    if tracks is not None:
        await tracks.write_now()
    wall = time.monotonic() - wall_before
    return Run(
        name,
        flushes * BATCH,
        wall,
        time.process_time() - cpu_before,
        redis_cpu_s(pid) - redis_before,
        tracks.appended if tracks is not None else 0,
    )


async def main_async(squads: int, flushes: int, busy: float, rounds: int) -> list[Run]:
    """Each configuration ``rounds`` times, interleaved (a shared machine drifts); the
    median run of each by hub CPU per fix."""
    with tempfile.TemporaryDirectory(prefix="track-bench-") as tmp, EmbeddedRedis(tmp) as server:
        assert server.process is not None
        pid = server.process.pid
        redis = Redis.from_url(server.url)
        try:
            pipe = redis.pipeline(transaction=False)
            for i in range(int(squads * busy)):
                pipe.sadd(keys.jobs(UNITS[i % len(UNITS)], f"S{i:05d}"), "A1")
            await pipe.execute()
            settings = Settings()
            default = settings.track_interval_s

            def recorders() -> list[tuple[str, TrackRecorder | None]]:
                return [
                    ("no tracks", None),
                    (
                        f"tracks, a point per {default:g} s (default)",
                        TrackRecorder(redis, default, settings.track_points, settings.track_keep_s),
                    ),
                    ("tracks, a point per fix (worst case)", TrackRecorder(redis, 0, 360, 3600, 0)),
                ]

            by_name: dict[str, list[Run]] = {}
            for _ in range(rounds):
                for name, tracks in recorders():
                    run = await one_run(redis, pid, name, tracks, squads, flushes)
                    by_name.setdefault(name, []).append(run)
            return [
                sorted(runs, key=lambda r: r.cpu_s)[len(runs) // 2] for runs in by_name.values()
            ]
        finally:
            await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.track_bench")
    parser.add_argument("--squads", type=int, default=18_000)
    parser.add_argument("--flushes", type=int, default=2000)
    parser.add_argument("--busy", type=float, default=0.3, help="share of squads holding work")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each (the median shown)")
    args = parser.parse_args(argv)
    runs = asyncio.run(main_async(args.squads, args.flushes, args.busy, args.rounds))
    print(f"{args.squads:,} squads, {BATCH} fixes per flush, {args.busy:.0%} holding work")
    for run in runs:
        print(run.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
