"""The ledger writer under load: how many events it records per second, and how far behind
the units' event streams it is while the load runs (``report["ledger"]``).

- *recorded*: rows added to the ledger's ``events`` table during the measure window (read
  from the SQLite file the writer process fills), per second; *produced*: entries added to
  the streams in the same window, per second.
- *lag*, sampled every ``every_s``: entries not yet committed (delivered to no consumer yet,
  plus those delivered and still pending), and how old the oldest of them is (ms): the
  delay between an event and its row in the ledger, at worst.
- *catch-up*: after the window, how long until nothing is left to record.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from server.ledger.streams import GROUP, with_no_unit
from server.store import keys

BEHIND_CAP = 100_000  # entries counted past the group's position, at most, per unit


@dataclass(frozen=True, slots=True)
class Lag:
    at: float  # monotonic
    entries: int  # not committed yet
    oldest_ms: float  # age of the oldest of them (0: none)


async def lag_now(redis: Redis, units: Sequence[str]) -> Lag:
    """Entries of ``units``' streams the ledger has not committed, and the oldest one's age."""
    now_ms = time.time() * 1000
    entries, oldest = 0, now_ms
    for unit in with_no_unit(units):
        stream = keys.events(unit)
        try:
            groups = await redis.xinfo_groups(stream)
            pending = await redis.xpending(stream, GROUP)
        except ResponseError:  # no stream (or no group) yet: nothing to record there
            continue
        group = next((g for g in groups if _text(g["name"]) == GROUP), None)
        if group is None:
            length = await redis.xlen(stream)
            first = await redis.xrange(stream, count=1)
            entries += length
            if first:
                oldest = min(oldest, _ms(first[0][0]))
            continue
        delivered = _text(group["last-delivered-id"])
        waiting = await redis.xrange(stream, min=f"({delivered}", count=BEHIND_CAP) or []
        entries += len(waiting) + int(pending["pending"])
        if pending["pending"]:
            oldest = min(oldest, _ms(pending["min"]))
        if waiting:
            oldest = min(oldest, _ms(waiting[0][0]))
    return Lag(time.monotonic(), entries, max(0.0, now_ms - oldest) if entries else 0.0)


async def sample_lag(
    redis: Redis, units: Sequence[str], stop: asyncio.Event, every_s: float = 1.0
) -> list[Lag]:
    samples: list[Lag] = []
    while not stop.is_set():
        samples.append(await lag_now(redis, units))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
    return samples


async def stream_entries(redis: Redis, units: Sequence[str]) -> int:
    """Entries in the streams now (none is trimmed during a load test: far below the cap)."""
    total = 0
    for unit in with_no_unit(units):
        total += await redis.xlen(keys.events(unit))
    return total


def recorded_events(database: Path) -> int | None:
    """Rows in the SQLite ledger's ``events`` table (None: no ledger file yet)."""
    if not database.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
        except sqlite3.OperationalError:
            return None


async def catch_up_s(redis: Redis, units: Sequence[str], timeout_s: float = 60.0) -> float | None:
    """Seconds until the ledger has committed everything (None: not within ``timeout_s``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if (await lag_now(redis, units)).entries == 0:
            return round(time.monotonic() - started, 2)
        await asyncio.sleep(0.1)
    return None


def summary(
    samples: Sequence[Lag],
    recorded: tuple[int | None, int | None],
    produced: tuple[int, int],
    window_s: float,
    catch_up: float | None,
) -> dict[str, Any]:
    """``report["ledger"]``."""
    entries = sorted(s.entries for s in samples) or [0]
    ages = sorted(s.oldest_ms for s in samples) or [0.0]
    before, after = recorded
    written = None if before is None or after is None else after - before
    return {
        "events_produced_per_s": round((produced[1] - produced[0]) / window_s, 1),
        "events_recorded_per_s": None if written is None else round(written / window_s, 1),
        "lag_entries_p50": statistics.median(entries),
        "lag_entries_max": entries[-1],
        "lag_oldest_ms_p50": round(statistics.median(ages), 1),
        "lag_oldest_ms_p95": round(ages[min(len(ages) - 1, int(0.95 * len(ages)))], 1),
        "lag_oldest_ms_max": round(ages[-1], 1),
        "catch_up_s": catch_up,
        "samples": len(samples),
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(stream_id: Any) -> float:
    return float(_text(stream_id).split("-")[0])
