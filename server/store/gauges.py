"""Figures read from Redis for the metrics (:mod:`server.metrics`), each in one round trip:
sampled every few seconds, never on a frame's way."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from server.store import keys
from server.store.scripts import ScriptCall, Scripts
from server.store.text import text


async def round_trip_s(redis: Redis) -> float:
    started = time.perf_counter()
    await redis.ping()
    return time.perf_counter() - started


async def outbox_frames(redis: Redis, scripts: Scripts, squads: Iterable[tuple[str, str]]) -> int:
    """Frames kept, not yet acknowledged, in the outboxes of ``(unit, squad)``: one
    ``outbox_count.lua`` call per unit, all in one round trip."""
    outboxes: dict[str, list[str]] = defaultdict(list)
    for unit, squad in squads:
        outboxes[unit].append(keys.outbox(unit, squad))
    if not outboxes:
        return 0
    calls = [
        ScriptCall(scripts.outbox_count, unit_outboxes, []) for unit_outboxes in outboxes.values()
    ]
    pipe = redis.pipeline(transaction=False)
    for call in calls:
        call.queue(pipe)
    answers = await pipe.execute(raise_on_error=False)
    return sum([int(await call.settle(a)) for call, a in zip(calls, answers, strict=True)])


async def citizen_backlog(redis: Redis, units: Iterable[str]) -> int:
    """Requests with a message to their caller waiting to be sent."""
    pipe = redis.pipeline(transaction=False)
    count = 0
    for unit in units:
        pipe.zcard(keys.citizen_due(unit))
        count += 1
    return sum(await pipe.execute()) if count else 0


def _ms(stream_id: object) -> int:
    return int(text(stream_id).split("-", 1)[0] or 0)


async def ledger_lag_s(redis: Redis, units: Iterable[str], group: str) -> float:
    """Age of the oldest event of ``units``' streams that ``group`` (the ledger) has not
    recorded: delivered and not acknowledged, or not delivered yet. 0 when it is level."""
    units = list(units)
    pipe = redis.pipeline(transaction=False)
    for unit in units:
        pipe.xinfo_groups(keys.events(unit))
        pipe.xpending(keys.events(unit), group)
    try:
        replies = await pipe.execute(raise_on_error=False)
    except ResponseError:
        return 0.0
    oldest: int | None = None
    reads = redis.pipeline(transaction=False)
    asked = 0
    for unit, groups, pending in zip(units, replies[::2], replies[1::2], strict=True):
        if isinstance(groups, Exception) or isinstance(pending, Exception):
            continue  # no stream or no group yet: nothing recorded, nothing waiting
        if pending and pending.get("pending") and pending.get("min"):
            at = _ms(pending["min"])
            oldest = at if oldest is None else min(oldest, at)
        delivered = next((g for g in groups if text(g.get("name")) == group), None)
        if delivered is not None:
            reads.xrange(keys.events(unit), f"({text(delivered['last-delivered-id'])}", "+", 1)
            asked += 1
    if asked:
        for entries in await reads.execute(raise_on_error=False):
            if entries and not isinstance(entries, Exception):
                at = _ms(entries[0][0])
                oldest = at if oldest is None else min(oldest, at)
    return 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)
