"""Dropping live state from Redis once the ledger holds it (``DISPATCH_LIVE_RETENTION_H``).

Redis keeps every request it ever saw: its hash, timeline, notices, messages, the
assignments it was offered under. Nothing expires them, and Redis holds it all in memory.
A request closed (resolved, cancelled, transferred) for longer than the retention window
is the ledger's to answer for: :func:`sweep` deletes its keys, but only when the ledger has
recorded it, which it checks for each request:

1. the ledger's row is closed, its newest event older than the window, and its live state
   not dropped yet (``requests.live_dropped_at``);
2. the request's hash in Redis is closed too (a request reopened since is left alone);
3. the last event of its timeline in Redis is the newest event the ledger recorded of it
   in that unit (byte for byte: the same JSON text went to both), so no later event is
   missing from the ledger;
4. the writer's position in every stream that carries events of the request is past the
   request's last event there: everything up to it is committed (not merely delivered: an
   entry still pending on a consumer is not recorded yet);
5. no message to the caller is still being delivered.

The keys are then deleted in one MULTI that watches the hash and the timeline: an event
added between the checks and the deletion (a note on a closed request, say) aborts it, and
the next sweep looks again. A request moved between units leaves a copy in the unit it
left; that copy goes with it. The row's ``live_dropped_at`` then says when.

Several processes may sweep at once (every ledger writer does): the checks and deletions
are idempotent, and a short lease in Redis keeps them from doing the same work twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError, WatchError
from sqlalchemy import bindparam, select, update

from server.ledger import tables
from server.ledger.fold import sort_key
from server.ledger.streams import GROUP
from server.ledger.writer import Ledger, stop_if_cancelled
from server.lifecycle import FINAL
from server.store import keys
from server.store.text import text

log = logging.getLogger(__name__)

CLOSED = tuple(sorted(state.value for state in FINAL))
LEASE_KEY = f"{keys.PREFIX}:ledger:retention"


@dataclass
class Sweep:
    """What one :func:`sweep` did."""

    dropped: list[str] = field(default_factory=list)  # request ids whose live state went
    kept: dict[str, str] = field(default_factory=dict)  # request id -> why not yet


async def sweep(
    ledger: Ledger,
    redis: Redis,
    retention_s: float,
    *,
    now: float | None = None,
    batch: int = 500,
) -> Sweep:
    """Drop the live state of up to ``batch`` requests closed before ``now -
    retention_s`` whose every event the ledger has recorded (see the module docstring)."""
    now = time.time() if now is None else now
    result = Sweep()
    rows = await _candidates(ledger, now - retention_s, batch)
    if not rows:
        return result
    recorded = await _recorded_events(ledger, [row["id"] for row in rows])
    frontiers = await _frontiers(redis, {unit for events in recorded.values() for unit in events})
    for row in rows:
        request_id = row["id"]
        reason = await _drop(redis, row, recorded.get(request_id, {}), frontiers)
        if reason:
            result.kept[request_id] = reason
        else:
            result.dropped.append(request_id)
    if result.dropped:
        await _mark_dropped(ledger, result.dropped, now)
    if result.kept:
        log.debug("live state kept for now: %s", result.kept)
    return result


async def run(
    ledger: Ledger,
    redis: Redis,
    retention_s: float,
    owner: str,
    *,
    every_s: float = 60.0,
    batch: int = 500,
) -> None:
    """Sweep every ``every_s`` (at once again while a sweep drops a full ``batch``) until
    cancelled; one process at a time (a lease of ``LEASE_KEY``). A failure is logged and
    the next sweep tries again."""
    while True:
        stop_if_cancelled()  # a cancellation redis-py lost (see there)
        full = False
        try:
            if await redis.set(LEASE_KEY, owner, nx=True, px=int(every_s * 2000)):
                try:
                    done = await sweep(ledger, redis, retention_s, batch=batch)
                    full = len(done.dropped) + len(done.kept) >= batch
                    if done.dropped:
                        log.info("dropped the live state of %d closed requests", len(done.dropped))
                finally:
                    await _release(redis, owner)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - Redis or the database away: the next sweep retries
            log.warning("retention sweep failed; retrying in %.0f s", every_s, exc_info=True)
        await asyncio.sleep(0 if full else every_s)


async def _release(redis: Redis, owner: str) -> None:
    with contextlib.suppress(Exception):
        if text(await redis.get(LEASE_KEY) or b"") == owner:
            await redis.delete(LEASE_KEY)


# ---- the ledger's side ------------------------------------------------------------------------


async def _candidates(ledger: Ledger, cutoff: float, batch: int) -> list[dict[str, Any]]:
    requests = tables.requests
    query = (
        select(requests.c.id, requests.c.unit, requests.c.state)
        .where(
            requests.c.state.in_(CLOSED),
            requests.c.updated_at < cutoff,
            requests.c.live_dropped_at.is_(None),
        )
        .order_by(requests.c.updated_at, requests.c.id)
        .limit(batch)
    )
    async with ledger.engine.connect() as conn:
        return [dict(row) for row in (await conn.execute(query)).mappings()]


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the ledger holds of a request in one unit's stream."""

    last_stream_id: str  # its newest event there
    last_timeline_event: str | None  # the JSON of its newest event that is in its timeline


# Recorded in the stream only, not in the request's timeline.
_STREAM_ONLY_PREFIX = "citizen_message_"


async def _recorded_events(
    ledger: Ledger, request_ids: list[str]
) -> dict[str, dict[str, Recorded]]:
    """Request id -> unit -> what the ledger recorded of it in that unit's stream. A request
    with refused events (a second request under its id) is given no units, which keeps its
    live state."""
    events, conflicts = tables.events, tables.conflicts
    found: dict[str, dict[str, Recorded]] = {}
    async with ledger.engine.connect() as conn:
        rows = await conn.execute(
            select(
                events.c.request_id,
                events.c.unit,
                events.c.stream_id,
                events.c.type,
                events.c.data,
            )
            .where(events.c.request_id.in_(request_ids))
            .order_by(events.c.request_id, events.c.unit, events.c.sort_key)
        )
        for request_id, unit, stream_id, kind, data in rows:  # oldest first: newest wins
            units = found.setdefault(request_id, {})
            before = units.get(unit)
            timeline = before.last_timeline_event if before else None
            if not str(kind).startswith(_STREAM_ONLY_PREFIX):
                timeline = data
            units[unit] = Recorded(stream_id, timeline)
        refused = await conn.execute(
            select(conflicts.c.request_id).where(conflicts.c.request_id.in_(request_ids))
        )
        for (request_id,) in refused:
            found[request_id] = {}
    return found


async def _mark_dropped(ledger: Ledger, request_ids: list[str], now: float) -> None:
    requests = tables.requests
    async with ledger.engine.begin() as conn:
        await conn.execute(
            update(requests)
            .where(requests.c.id == bindparam("b_id"))
            .values(live_dropped_at=bindparam("b_at")),
            [{"b_id": request_id, "b_at": now} for request_id in request_ids],
        )


# ---- Redis's side -----------------------------------------------------------------------------


async def _frontiers(redis: Redis, units: Iterable[str]) -> dict[str, str | None]:
    """Unit -> sort key below which every entry of its stream is committed by the ledger's
    group (None: the group is missing, nothing is known to be recorded)."""
    ordered = sorted(units)
    if not ordered:
        return {}
    pipe = redis.pipeline(transaction=False)
    for unit in ordered:
        pipe.xinfo_groups(keys.events(unit))
        pipe.xpending(keys.events(unit), GROUP)
    replies = await pipe.execute(raise_on_error=False)
    frontiers: dict[str, str | None] = {}
    for i, unit in enumerate(ordered):
        groups, pending = replies[2 * i], replies[2 * i + 1]
        if isinstance(groups, ResponseError) or isinstance(pending, ResponseError):
            frontiers[unit] = None
            continue
        if isinstance(groups, Exception):
            raise groups
        group = next((g for g in groups if text(g["name"]) == GROUP), None)
        if group is None:
            frontiers[unit] = None
            continue
        # Delivered and acknowledged: up to the last delivered entry, and below the oldest
        # entry still pending (read, not committed yet).
        delivered = sort_key(text(group["last-delivered-id"]))
        frontier = _next_key(delivered)
        if isinstance(pending, dict) and pending.get("pending"):
            frontier = min(frontier, sort_key(text(pending["min"])))
        frontiers[unit] = frontier
    return frontiers


def _next_key(key: str) -> str:
    """The sort key just after ``key`` (entries strictly below it are up to ``key``)."""
    ms, seq = key.split("-")
    return f"{ms}-{int(seq) + 1:020d}"


async def _drop(
    redis: Redis,
    row: dict[str, Any],
    recorded: dict[str, Recorded],
    frontiers: dict[str, str | None],
) -> str:
    """Delete the request's live state if the checks pass; "" when done, else why not."""
    request_id, unit = row["id"], row["unit"]
    if not recorded:
        return "no events recorded (or another request's under its id)"
    for stream_unit, held in recorded.items():
        frontier = frontiers.get(stream_unit)
        if frontier is None or sort_key(held.last_stream_id) >= frontier:
            return f"the ledger's writer is not past its last event in {stream_unit}"
    units = [unit, *(u for u in recorded if u != unit)]
    for place in units:
        reason = await _drop_in(redis, place, request_id, row, recorded.get(place))
        if reason:
            return reason
    index = keys.request_units()
    if text(await redis.hget(index, request_id) or b"") in units:
        await redis.hdel(index, request_id)
    return ""


async def _drop_in(
    redis: Redis,
    unit: str,
    request_id: str,
    row: dict[str, Any],
    recorded: Recorded | None,
) -> str:
    """Delete the request's keys in ``unit`` (its own unit, or one it was moved out of) if
    Redis holds nothing the ledger lacks; "" when done (or nothing there), else why not."""
    request_key, timeline_key = keys.request(unit, request_id), keys.timeline(unit, request_id)
    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(request_key, timeline_key, keys.notices(unit, request_id))
            fields = {text(k): text(v) for k, v in (await pipe.hgetall(request_key)).items()}
            last = await pipe.lindex(timeline_key, -1)
            if not fields and last is None:
                return ""  # gone already (another sweep, or Redis lost it)
            moved_away = fields.get("unit", unit) != unit
            if not moved_away and fields.get("state") not in CLOSED:
                return f"open again in Redis ({fields.get('state')})"
            if last is not None and (
                recorded is None or text(last) != recorded.last_timeline_event
            ):
                return f"its last event in {unit} is not recorded yet"
            if await pipe.zscore(keys.citizen_due(unit), request_id) is not None:
                return "a message to the caller is still being delivered"
            notices = [text(n) for n in await pipe.hkeys(keys.notices(unit, request_id))]
            assignments = _assignments(await pipe.lrange(timeline_key, 0, -1), fields)
            pipe.multi()
            pipe.delete(
                request_key,
                timeline_key,
                keys.tried(unit, request_id),
                keys.notices(unit, request_id),
                keys.request_open_notices(unit, request_id),
                keys.citizen_messages(unit, request_id),
                *(keys.assignment(unit, a) for a in assignments),
            )
            if notices:
                pipe.zrem(keys.closed_notices(unit), *notices)
                pipe.zrem(keys.open_notices(unit), *notices)
            await pipe.execute()
        except WatchError:
            return "changed while it was being dropped"
    return ""


def _assignments(timeline: list[Any], fields: dict[str, str]) -> set[str]:
    """The assignments the request was offered under (their hashes are its own)."""
    found = {fields["assignment"]} if fields.get("assignment") else set()
    for raw in timeline:
        with contextlib.suppress(ValueError, TypeError):
            event = json.loads(raw)
            if isinstance(event, dict) and isinstance(event.get("assignment"), str):
                found.add(event["assignment"])
    found.discard("")
    return found
