"""The hub's background loops: timers, queue sweeps, the hub channel, presence.

Each loop survives failures (Redis restarting): it logs and carries on; it stops only when
cancelled, even if a client library swallowed the cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from server.ledger.streams import GROUP as LEDGER_GROUP
from server.ledger.streams import with_no_unit
from server.metrics import watch_event_loop
from server.reports.policy import load_policy
from server.reports.service import Reports
from server.store import gauges, keys, timers
from server.store.availability import RedisAvailability, is_outage
from server.store.timers import TimerKind

if TYPE_CHECKING:
    from server.components import Components

log = logging.getLogger(__name__)


# What a job returns on a turn it did not reach Redis (a draining process fires no timer):
# its success says nothing of Redis. Counted as a success, it made an outage during a restart
# log "Redis reachable again" and "unreachable" by turns, every timer poll.
SKIPPED: Final = object()


async def _every(
    interval_s: float, name: str, job: Any, availability: RedisAvailability, *, redis: bool = True
) -> None:
    """Run ``job()`` every interval; the loop goes on through failures. A Redis outage is
    reported to ``availability`` (one warning for the whole outage); anything else
    is logged with its traceback. ``redis``: the job talks to Redis, so its success says
    Redis is back (unless it returns :data:`SKIPPED`)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            answer = await job()
        except Exception as exc:  # noqa: BLE001
            if _cancelling():
                pass
            elif is_outage(exc):
                availability.failed(name, exc)
            else:
                log.exception("%s failed", name)
        else:
            if redis and answer is not SKIPPED:
                availability.succeeded()
        if _cancelling():  # the job's client library may have swallowed the cancellation
            raise asyncio.CancelledError


def _cancelling() -> bool:
    """Whether this task is being cancelled: some client libraries turn the CancelledError
    raised inside a read into their own connection error, which must not keep a loop alive."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


TIMER_BATCH = 100  # timers claimed at once
TIMER_BATCHES_PER_POLL = 20  # a full batch claims again at once: a backlog (thousands of
# deadlines falling due together) is worked off now, not one batch per poll


async def _fire_due_timers(parts: Components) -> object:
    if parts.readiness.draining:
        # A draining process is busy closing its phones and about to go: a timer claimed
        # now could wait for its hand-on at shutdown. The other processes take them.
        return SKIPPED
    lease_ms = int(parts.settings.timer_lease_s * 1000)
    for unit in parts.directory.unit_codes():
        for _ in range(TIMER_BATCHES_PER_POLL):
            now_ms = int(time.time() * 1000)
            reply = await parts.scripts.due(
                keys=[keys.timers(unit)], args=[now_ms, lease_ms, TIMER_BATCH]
            )
            due = timers.claimed(reply)
            parts.metrics.timers_fired(((timers.kind_of(m), at) for m, at in due), now_ms)
            members = [member for member, _ in due]
            parts.held_timers.claimed(unit, due)
            await _fire(parts, unit, members)
            parts.held_timers.finished(unit, members)
            if len(due) < TIMER_BATCH:
                break
    return None


async def _fire(parts: Components, unit: str, due: list[bytes]) -> None:
    """Carry out the timers claimed of ``unit``: offers and presence one by one, supervision
    timers (deadlines, escalations) as one concurrent batch."""
    supervision: list[tuple[TimerKind, str]] = []
    for member in due:
        kind, ident = timers.parse(member)
        if kind is TimerKind.OFFER:
            freed = await parts.dispatcher.expire_offer(unit, ident)
        elif kind in (TimerKind.DEADLINE, TimerKind.ESCALATE):
            supervision.append((kind, ident))
            continue
        elif kind is not None:
            freed = await parts.presence.on_timer(unit, kind, ident)
        else:  # scheduled by a newer version: leave it to a process that knows it
            continue
        if freed:
            parts.dispatcher.drain_soon(unit)
    if supervision:
        await parts.notices.on_timers(unit, supervision)


async def _deliver_citizen(parts: Components) -> None:
    """Send the messages to callers that are due, in every unit's outbox (and the outbox of
    requests passed to 110/119/120)."""
    units = with_no_unit(parts.directory.unit_codes())
    await parts.citizen.outbox.deliver_due(parts.sender, units)


async def _reconcile(parts: Components) -> object:
    if parts.presence.handing_over:  # draining: it reads nothing (see its docstring)
        return SKIPPED
    return await parts.presence.reconcile()


async def _sweep_queues(parts: Components) -> None:
    for unit in parts.directory.unit_codes():
        if await parts.redis.zcard(keys.queue(unit)):
            await parts.dispatcher.drain(unit)


async def _sample_metrics(parts: Components) -> None:
    """The figures that need Redis to know (see :mod:`server.metrics`)."""
    metrics, redis = parts.metrics, parts.redis
    units = parts.directory.unit_codes()
    metrics.redis_rtt.observe(await gauges.round_trip_s(redis))
    here = [(s.unit, s.squad) for s in parts.hub.sessions.values()]
    kept = await gauges.outbox_frames(redis, parts.scripts, here)
    metrics.outbox_frames.labels("squads").set(kept)
    metrics.outbox_frames.labels("citizens").set(
        await gauges.citizen_backlog(redis, with_no_unit(units))
    )
    metrics.ledger_lag.set(await gauges.ledger_lag_s(redis, with_no_unit(units), LEDGER_GROUP))


async def _weekly_spot_checks(parts: Components) -> None:
    """Draw last week's spot checks if nobody has (any process may: the first one wins)."""
    if parts.ledger is None:
        return
    policy = load_policy(parts.settings.reports_policy)
    drawn = await Reports(parts.ledger.engine, parts.city, policy).draw_last_week(time.time())
    if drawn is not None:
        log.warning("spot checks of %s drawn: %d requests", drawn[0], len(drawn[1]))


def background_loops(parts: Components) -> list[Coroutine[Any, Any, None]]:
    s, up = parts.settings, parts.availability
    return [
        parts.positions.run(),
        parts.broker.listen(),
        _every(s.timer_poll_ms / 1000, "timers", lambda: _fire_due_timers(parts), up),
        _every(s.queue_sweep_s, "queue sweep", lambda: _sweep_queues(parts), up),
        _every(5.0, "unit directory", parts.directory.refresh, up),
        _every(
            min(5.0, s.offline_after_s / 3),
            "silent sessions",
            lambda: _async(parts.hub.close_silent(s.offline_after_s)),
            up,
            redis=False,
        ),
        _every(s.hub_beat_s, "hub heartbeat", parts.presence.beat, up),
        _every(s.hub_beat_s * 2, "dead hubs", parts.presence.reap_dead_hubs, up),
        _every(15.0, "reconcile", lambda: _reconcile(parts), up),
        _every(s.citizen_poll_s, "citizen messages", lambda: _deliver_citizen(parts), up),
        _every(s.metrics_sample_s, "metrics", lambda: _sample_metrics(parts), up),
        watch_event_loop(parts.metrics),
        parts.webpush.run(),
        *(
            [
                _every(
                    s.spot_check_poll_s,
                    "weekly spot checks",
                    lambda: _weekly_spot_checks(parts),
                    up,
                    redis=False,  # the ledger's database: no news of Redis
                )
            ]
            if s.spot_check_poll_s
            else []
        ),
    ]


async def _async(value: object) -> object:
    return value
