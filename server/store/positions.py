"""Position ingest: fixes are buffered in memory and written in one round trip per flush.

A per-frame Redis round trip would exhaust the connection pool and the CPU at 18,000 fixes a
second (SPEC, "lessons"); one ``positions.lua`` call per unit, all of a flush's calls in one
pipeline, carries any number of fixes. Only the latest fix of a squad within a flush window
is written. The Python side per fix is next to nothing: a unit's fixes go as one string of
binary doubles and their ids (packed in C, server.store.pool), and the script writes the GEO
index and the fix times itself.

A fix's time (``fix_times``) is written only once its position is: a squad whose position
Redis refused must not look freshly placed at its old spot. Redis refuses a whole GEOADD for
one bad pair, so the script writes a refused batch again fix by fix, and one bad fix costs
only itself, never the rest of its unit.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from array import array
from collections import defaultdict
from itertools import chain

from redis.asyncio import Redis

from server.guard import Burst
from server.store import keys
from server.store.scripts import HubScript, ScriptCall, source
from server.store.text import text
from server.store.tracks import TrackRecorder

log = logging.getLogger(__name__)

Fix = tuple[float, float, float]  # lon, lat, fixed_at
REPORT_EVERY_S = 60.0  # refused fixes and failed flushes are logged at most this often
_BIG_ENDIAN = sys.byteorder == "big"  # positions.lua reads little-endian doubles


class PositionWriter:
    def __init__(
        self, redis: Redis, flush_interval_s: float, tracks: TrackRecorder | None = None
    ) -> None:
        """``tracks``: keeps samples of the fixes of squads holding work (the center's map);
        None: no tracks."""
        self._redis = redis
        self._tracks = tracks
        self._interval = flush_interval_s
        # The hub loads it with the others at start (server.store.scripts.Scripts.positions).
        self._script = HubScript(redis, source("positions"))
        self._pending: dict[str, dict[str, Fix]] = defaultdict(dict)
        self._wake = asyncio.Event()
        self.written = 0  # fixes written since start (for the benchmark and the health page)
        self.refused = 0  # fixes Redis refused since start
        self._refusals = Burst(REPORT_EVERY_S)
        self._failures = Burst(REPORT_EVERY_S)

    def add(self, unit: str, squad_id: str, lat: float, lon: float, fixed_at: float) -> None:
        """Queue a fix; it reaches Redis within one flush interval."""
        self._pending[unit][squad_id] = (lon, lat, fixed_at)

    def forget(self, unit: str, squad_id: str) -> None:
        """Drop the squad's fix not written yet: it is being recorded offline, and a flush
        after that would put it back on the map (a flush already sent goes first: both use
        the same connection, in order)."""
        pending = self._pending.get(unit)
        if pending is not None:
            pending.pop(squad_id, None)

    async def flush(self) -> int:
        """Write everything queued now, in one round trip; returns the number of fixes
        written. Fixes Redis refuses are dropped (and counted); a lost connection raises, and
        so does a unit's batch that failed whole (after the other units' are counted)."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, defaultdict(dict)
        if self._tracks is not None:  # samples them; writes them in a task of its own
            self._tracks.record(batch)
        calls = [self._call(unit, fixes) for unit, fixes in batch.items()]
        pipe = self._redis.pipeline(transaction=False)
        for call in calls:
            call.queue(pipe)
        answers = await pipe.execute(raise_on_error=False)
        count, bad, failure = 0, [], None
        for (unit, fixes), call, answer in zip(batch.items(), calls, answers, strict=True):
            try:
                placed, error, *refused = await call.settle(answer)
            except Exception as exc:  # noqa: BLE001 - raised below, once the rest is counted
                failure = exc
                continue
            count += placed
            for squad in refused:
                lon, lat, _ = fixes[text(squad)]
                bad.append(f"{unit}/{text(squad)} ({lat}, {lon}): {text(error)}")
        self.written += count
        if bad:
            self.refused += len(bad)
            noted = self._refusals.note(time.monotonic(), len(bad))
            if noted:
                log.warning("Redis refused %d position fix(es), latest %s", noted, bad[-1])
        if failure is not None:
            raise failure
        return count

    def _call(self, unit: str, fixes: dict[str, Fix]) -> ScriptCall:
        """positions.lua's call for one unit: the fixes' numbers as binary doubles (no number
        formatted as text here), then their squads' ids."""
        numbers = array("d", chain.from_iterable(fixes.values()))
        if _BIG_ENDIAN:
            numbers.byteswap()
        return ScriptCall(
            self._script, [keys.geo(unit), keys.fix_times(unit)], [numbers.tobytes(), *fixes]
        )

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
