"""Simulated time: the run's clock, ``speed`` times faster than the real one.

Simulated time ``t`` is seconds since the run started, on the simulated clock; real time is
the epoch seconds the hub sees. Everything the people of the simulation do (delays, driving,
work) is planned in simulated seconds and slept in real ones divided by ``speed``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo


def local_hour_now(timezone: str) -> float:
    """The current hour of day (0-24, fractional) in ``timezone``, e.g. "Asia/Shanghai"."""
    try:
        now = datetime.now(ZoneInfo(timezone))
    except Exception:  # noqa: BLE001 - no tz database on the machine: UTC is close enough
        now = datetime.now().astimezone()
    return now.hour + now.minute / 60 + now.second / 3600


class SimClock:
    def __init__(
        self, speed: float, start_hour: float = 8.0, real_now: Callable[[], float] = time.time
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.start_hour = start_hour % 24
        self._real_now = real_now
        self.start_real = real_now()

    def now(self) -> float:
        """Simulated seconds since the start."""
        return (self._real_now() - self.start_real) * self.speed

    def real_at(self, t: float) -> float:
        """The real epoch time at simulated time ``t``."""
        return self.start_real + t / self.speed

    def sim_duration(self, real_s: float) -> float:
        return real_s * self.speed

    def real_duration(self, sim_s: float) -> float:
        return sim_s / self.speed

    def hour_at(self, t: float) -> float:
        """The local hour of day (0-24) at simulated time ``t``."""
        return (self.start_hour + t / 3600.0) % 24

    def label(self, t: float | None = None) -> str:
        """``HH:MM`` of the simulated day (``+Nd`` once it runs past midnight)."""
        t = self.now() if t is None else t
        minutes = int(self.start_hour * 60 + t / 60)
        days, minutes = divmod(minutes, 24 * 60)
        text = f"{minutes // 60:02d}:{minutes % 60:02d}"
        return f"{text} +{days}d" if days else text

    async def sleep(self, sim_s: float) -> None:
        if sim_s > 0:
            await asyncio.sleep(sim_s / self.speed)

    async def sleep_until(self, t: float) -> None:
        await self.sleep(t - self.now())
