"""Position ingest: fixes are buffered in memory and written in one pipeline per flush.

A per-frame Redis round trip would exhaust the connection pool and the CPU at 18,000 fixes a
second (SPEC, "lessons"); one GEOADD and one ZADD per unit per flush carry any number of fixes.
Only the latest fix of a squad within a flush window is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from redis.asyncio import Redis

from server import keys

log = logging.getLogger(__name__)


class PositionWriter:
    def __init__(self, redis: Redis, flush_interval_s: float) -> None:
        self._redis = redis
        self._interval = flush_interval_s
        self._pending: dict[str, dict[str, tuple[float, float, float]]] = defaultdict(dict)
        self._wake = asyncio.Event()
        self.written = 0  # fixes written since start (for the benchmark and the health page)

    def add(self, unit: str, squad_id: str, lat: float, lon: float, fixed_at: float) -> None:
        """Queue a fix; it reaches Redis within one flush interval."""
        self._pending[unit][squad_id] = (lon, lat, fixed_at)

    async def flush(self) -> int:
        """Write everything queued now; returns the number of fixes written."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, defaultdict(dict)
        pipe = self._redis.pipeline(transaction=False)
        count = 0
        for unit, fixes in batch.items():
            geo_values: list[float | str] = []
            for squad_id, (lon, lat, _) in fixes.items():
                geo_values.extend((lon, lat, squad_id))
            pipe.geoadd(keys.geo(unit), geo_values)
            pipe.zadd(keys.fix_times(unit), {sid: fix[2] for sid, fix in fixes.items()})
            count += len(fixes)
        await pipe.execute()
        self.written += count
        return count

    async def run(self) -> None:
        """Flush every interval until cancelled; a failed flush is logged and its fixes dropped
        (a fix is superseded by the next one a second later, so retrying would only add load)."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - keep ingesting through a Redis hiccup
                log.exception("position flush failed")
