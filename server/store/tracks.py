"""Squads' recent tracks: where a squad holding work has been, for the center's map.

The GEO set keeps only each squad's latest fix. The position flush hands every fix it writes
to :meth:`TrackRecorder.record`, which keeps a sample per squad at most every ``interval_s``
and writes the samples (at most once per ``write_every_s``, one script call per unit) to a
capped stream per squad, ``keys.track``: only for squads that hold work (``track.lua`` checks
the squad's jobs set), so an idle city costs no memory. A stream keeps its newest
``keep_points`` samples and expires ``keep_s`` after its last one.

A stream id is the time (Redis's clock, ms), so a request's track is the range of its squad's
stream between the squad taking the request and leaving it (:func:`track_between`).

Cost on the position path: a dict lookup per fix, nothing awaited by the flush; one round
trip per ``write_every_s`` per process, in a task of its own, and a failed write is logged
(with a count, at most once a minute), never raised into the flush.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from server.guard import Burst
from server.store import keys
from server.store.scripts import HubScript, source
from server.store.text import text

log = logging.getLogger(__name__)

Fix = tuple[float, float, float]  # lon, lat, fixed_at (as the position writer keeps them)
Point = tuple[float, float, float]  # lat, lon, at (epoch s)
SQUADS_PER_CALL = 500  # one script call checks at most this many squads (Redis runs it alone)
REPORT_EVERY_S = 60.0


class TrackRecorder:
    def __init__(
        self,
        redis: Redis,
        interval_s: float,
        keep_points: int,
        keep_s: float,
        write_every_s: float | None = None,
    ) -> None:
        """``write_every_s``: how often samples are written (default: every second, or every
        ``interval_s`` if shorter); a squad's samples between two writes become one point."""
        self._redis = redis
        self._interval = interval_s
        self._keep_points = keep_points
        self._keep_s = max(1, int(keep_s))
        self._write_every = min(1.0, interval_s) if write_every_s is None else write_every_s
        # The hub loads it with the others at start (server.store.scripts.Scripts.track).
        self._script = HubScript(redis, source("track"))
        self._sampled: dict[str, dict[str, float]] = {}  # unit -> squad -> last sample's time
        self._sampled_count = 0
        self._prune_above = 1024
        self._due: dict[str, dict[str, tuple[float, float]]] = {}  # unit -> squad -> lat, lon
        self._written_at = -math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Task[None] | None = None
        self._one_write = asyncio.Lock()  # points of a squad go out in order
        self._failures = Burst(REPORT_EVERY_S)
        self.appended = 0  # points appended since start (squads holding work only)

    def record(self, placed: Mapping[str, Mapping[str, Fix]]) -> None:
        """Take the fixes a flush writes (unit -> squad -> fix). Never blocks or raises: the
        samples due are written by a task of their own, at most once per ``write_every_s``
        (the first at once)."""
        for unit, fixes in placed.items():
            sampled = self._sampled.get(unit)
            if sampled is None:
                sampled = self._sampled[unit] = {}
            for squad, (lon, lat, at) in fixes.items():
                last = sampled.get(squad)
                if last is not None and at - last < self._interval:
                    continue
                if last is None:
                    self._sampled_count += 1
                sampled[squad] = at
                self._due.setdefault(unit, {})[squad] = (lat, lon)
        if self._due and self._timer is None:
            delay = max(0.0, self._written_at + self._write_every - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._start_writing)

    def _start_writing(self) -> None:
        self._timer = None
        if self._writing is not None and not self._writing.done():
            # The last write is still out (Redis is slow): one at a time, in order.
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._write_every, self._start_writing)
            return
        self._writing = asyncio.create_task(self.write_now())

    async def write_now(self) -> None:
        """Write the samples due now, after any write under way (the recorder's own task
        calls it; so may a test). Never raises: a failure is logged, with a count, at most
        once a minute."""
        async with self._one_write:
            self._written_at = time.monotonic()
            batch, self._due = self._due, {}
            if batch:
                try:
                    await self._write(batch)
                except Exception as exc:  # noqa: BLE001 - a track is a convenience
                    count = self._failures.note(time.monotonic())
                    if count:
                        log.warning("%d track write(s) failed: %r", count, exc)
            if self._sampled_count > self._prune_above:
                self._prune(time.time())

    async def _write(self, batch: dict[str, dict[str, tuple[float, float]]]) -> None:
        calls: list[tuple[list[str], list[Any]]] = []
        for unit, squads in batch.items():
            items = list(squads.items())
            for start in range(0, len(items), SQUADS_PER_CALL):
                call_keys: list[str] = []
                args: list[Any] = [self._keep_points, self._keep_s]
                for squad, (lat, lon) in items[start : start + SQUADS_PER_CALL]:
                    call_keys += [keys.jobs(unit, squad), keys.track(unit, squad)]
                    args.append(f"{lat:.6f},{lon:.6f}")  # one argument: half the encoding
                calls.append((call_keys, args))
        pipe = self._redis.pipeline(transaction=False)
        for call_keys, args in calls:
            # execute_command: a cluster pipeline refuses evalsha() (see ScriptCall.queue)
            pipe.execute_command("EVALSHA", self._script.sha, len(call_keys), *call_keys, *args)
        answers = await pipe.execute(raise_on_error=False)
        for (call_keys, args), answer in zip(calls, answers, strict=True):
            if isinstance(answer, NoScriptError):  # Redis lost its scripts: the call loads it
                answer = await self._script(keys=call_keys, args=args)
            elif isinstance(answer, Exception):
                raise answer
            self.appended += int(answer)

    def _prune(self, now: float) -> None:
        """Forget squads that sent nothing for a while (gone offline, or moved elsewhere)."""
        horizon = now - max(60.0, 10 * self._interval)
        count = 0
        for unit, sampled in self._sampled.items():
            self._sampled[unit] = kept = {s: at for s, at in sampled.items() if at >= horizon}
            count += len(kept)
        self._sampled_count = count
        self._prune_above = max(1024, 2 * count)


def _point(entry: Any) -> Point:
    stream_id, fields = entry
    ms = text(stream_id).partition("-")[0]
    lat, _, lon = text(fields.get(b"p", fields.get("p", b""))).partition(",")
    return float(lat), float(lon), int(ms) / 1000


async def track_between(
    redis: Redis, unit: str, squad: str, since: float, until: float, limit: int
) -> list[Point]:
    """The squad's points from ``since`` to ``until`` (epoch s), oldest first; at most the
    newest ``limit`` of them."""
    entries: Any = await redis.xrevrange(
        keys.track(unit, squad), max=str(int(until * 1000)), min=str(int(since * 1000)), count=limit
    )
    return [_point(entry) for entry in reversed(entries)]


async def last_points(redis: Redis, squads: list[tuple[str, str]]) -> list[Point | None]:
    """The newest point of each (unit, squad)'s track, or None (none kept)."""
    if not squads:
        return []
    pipe = redis.pipeline(transaction=False)
    for unit, squad in squads:
        pipe.xrevrange(keys.track(unit, squad), count=1)
    found = await pipe.execute()
    return [_point(entries[0]) if entries else None for entries in found]
