"""The day's figures of the wall map, from the ledger: requests dispatched today (accepted by
a squad since the city's local midnight) and the median time from intake to a squad's
arrival on the scene, over the arrivals of today.

The ledger is written from the event streams a moment after the fact, which is fine for a
day's figures. A request received up to :data:`LOOKBACK_DAYS` before midnight still counts
when it is accepted or reached today (the received-time index keeps the query cheap).
"""

from __future__ import annotations

import statistics
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.ledger import requests as requests_table

LOOKBACK_DAYS = 7


def local_midnight(now: float, zone: ZoneInfo) -> float:
    """The epoch time of the start of ``now``'s day in ``zone``."""
    day = datetime.fromtimestamp(now, zone).date()
    return datetime.combine(day, time(0), zone).timestamp()


async def day_figures(engine: AsyncEngine, zone: ZoneInfo, now: float) -> dict[str, Any]:
    """``day`` (YYYY-MM-DD, local), ``dispatched_today``, ``arrived_today`` and
    ``median_arrival_s`` (None before the day's first arrival)."""
    midnight = local_midnight(now, zone)
    table = requests_table
    recent = table.c.received_at >= midnight - LOOKBACK_DAYS * 86_400
    dispatched = select(func.count()).where(and_(recent, table.c.accepted_at >= midnight))
    arrivals = select(table.c.arrived_at - table.c.received_at).where(
        and_(recent, table.c.arrived_at >= midnight)
    )
    async with engine.connect() as conn:
        count = (await conn.execute(dispatched)).scalar_one()
        waits = [float(w) for (w,) in (await conn.execute(arrivals)).all() if w is not None]
    return {
        "day": datetime.fromtimestamp(now, zone).date().isoformat(),
        "dispatched_today": int(count),
        "arrived_today": len(waits),
        "median_arrival_s": round(statistics.median(waits), 1) if waits else None,
    }


class FiguresCache:
    """The day's figures, read again at most every ``max_age_s`` (one query per process
    however many walls look)."""

    def __init__(self, max_age_s: float = 10.0) -> None:
        self.max_age_s = max_age_s
        self._value: dict[str, Any] | None = None
        self._read_at = 0.0

    async def get(self, engine: AsyncEngine, zone: ZoneInfo, now: float) -> dict[str, Any]:
        if self._value is None or now - self._read_at >= self.max_age_s:
            self._value = await day_figures(engine, zone, now)
            self._read_at = now
        return self._value
