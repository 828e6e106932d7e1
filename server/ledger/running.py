"""What a process that records the ledger runs: the writer, and the retention sweep when
``DISPATCH_LIVE_RETENTION_H`` is set. One list for the hub (``DISPATCH_LEDGER_IN_HUB``) and
for ``python -m server.ledger``, so both run the same."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from redis.asyncio import Redis

from server.ledger import retention
from server.ledger.writer import Ledger
from server.settings import Settings


def ledger_loops(
    ledger: Ledger, redis: Redis, units: Callable[[], list[str]], consumer: str, settings: Settings
) -> list[Coroutine[Any, Any, None]]:
    """The coroutines to run as tasks until cancelled: record the units' events as
    ``consumer``; drop closed requests' live state after the retention window (if set)."""
    loops = [ledger.consume(redis, units, consumer)]
    window_s = settings.live_retention_h * 3600
    if window_s > 0:
        # A tenth of the window, at most a minute: nothing waits much past its window.
        every_s = min(60.0, max(0.1, window_s / 10))
        loops.append(retention.run(ledger, redis, window_s, consumer, every_s=every_s))
    return loops
