"""Position ingest: fixes are buffered in memory and written in one pipeline per flush.

A per-frame Redis round trip would exhaust the connection pool and the CPU at 18,000 fixes a
second (SPEC, "lessons"); one GEOADD and one ZADD per unit per flush carry any number of fixes.
Only the latest fix of a squad within a flush window is written.

A fix's time (``fix_times``) is written only once its position is: a squad whose position
Redis refused must not look freshly placed at its old spot. Redis refuses a whole GEOADD for
one bad pair, so a refused unit batch is written again fix by fix, and one bad fix costs only
itself, never the rest of its unit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from redis.asyncio import Redis

from server.guard import Burst
from server.store import keys
from server.store.tracks import TrackRecorder

log = logging.getLogger(__name__)

Fix = tuple[float, float, float]  # lon, lat, fixed_at
REPORT_EVERY_S = 60.0  # refused fixes and failed flushes are logged at most this often


class PositionWriter:
    def __init__(
        self, redis: Redis, flush_interval_s: float, tracks: TrackRecorder | None = None
    ) -> None:
        """``tracks``: keeps samples of the fixes of squads holding work (the center's map);
        None: no tracks."""
        self._redis = redis
        self._tracks = tracks
        self._interval = flush_interval_s
        self._pending: dict[str, dict[str, Fix]] = defaultdict(dict)
        self._wake = asyncio.Event()
        self.written = 0  # fixes written since start (for the benchmark and the health page)
        self.refused = 0  # fixes Redis refused since start
        self._refusals = Burst(REPORT_EVERY_S)
        self._failures = Burst(REPORT_EVERY_S)

    def add(self, unit: str, squad_id: str, lat: float, lon: float, fixed_at: float) -> None:
        """Queue a fix; it reaches Redis within one flush interval."""
        self._pending[unit][squad_id] = (lon, lat, fixed_at)

    async def flush(self) -> int:
        """Write everything queued now; returns the number of fixes written. Fixes Redis
        refuses are dropped (and counted); a lost connection raises."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, defaultdict(dict)
        if self._tracks is not None:  # samples them; writes them in a task of its own
            self._tracks.record(batch)
        pipe = self._redis.pipeline(transaction=False)
        for unit, fixes in batch.items():
            pipe.geoadd(keys.geo(unit), _geo_values(fixes))
        results = await pipe.execute(raise_on_error=False)
        placed: dict[str, dict[str, Fix]] = {}
        refused: list[tuple[str, dict[str, Fix], Exception]] = []
        for (unit, fixes), result in zip(batch.items(), results, strict=True):
            if isinstance(result, Exception):
                refused.append((unit, fixes, result))
            else:
                placed[unit] = fixes
        if refused:
            placed |= await self._one_by_one(refused)
        pipe = self._redis.pipeline(transaction=False)
        for unit, fixes in placed.items():
            if fixes:
                pipe.zadd(keys.fix_times(unit), {sid: fix[2] for sid, fix in fixes.items()})
        await pipe.execute()
        count = sum(len(fixes) for fixes in placed.values())
        self.written += count
        return count

    async def _one_by_one(
        self, refused: list[tuple[str, dict[str, Fix], Exception]]
    ) -> dict[str, dict[str, Fix]]:
        """Write the fixes of refused unit batches one GEOADD each; the fixes placed."""
        pipe = self._redis.pipeline(transaction=False)
        order = [(unit, sid, fix) for unit, fixes, _ in refused for sid, fix in fixes.items()]
        for unit, sid, fix in order:
            pipe.geoadd(keys.geo(unit), _geo_values({sid: fix}))
        results = await pipe.execute(raise_on_error=False)
        placed: dict[str, dict[str, Fix]] = {unit: {} for unit, _, _ in refused}
        bad: list[str] = []
        error: Exception | None = None
        for (unit, sid, fix), result in zip(order, results, strict=True):
            if isinstance(result, Exception):
                bad.append(f"{unit}/{sid} ({fix[1]}, {fix[0]})")
                error = result
            else:
                placed[unit][sid] = fix
        self.refused += len(bad)
        count = self._refusals.note(time.monotonic(), len(bad)) if bad else 0
        if count:
            log.warning("Redis refused %d position fix(es), latest %s: %s", count, bad[-1], error)
        return placed

    async def run(self) -> None:
        """Flush every interval until cancelled; a failed flush is logged (once per burst, with
        the count) and its fixes dropped (a fix is superseded by the next one a second later,
        so retrying would only add load)."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - keep ingesting through a Redis hiccup
                count = self._failures.note(time.monotonic())
                if count:
                    log.warning("%d position flush(es) failed: %r", count, exc)


def _geo_values(fixes: dict[str, Fix]) -> list[float | str]:
    values: list[float | str] = []
    for squad_id, (lon, lat, _) in fixes.items():
        values.extend((lon, lat, squad_id))
    return values
