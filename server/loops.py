"""The hub's background loops: timers, queue sweeps, the hub channel, presence.

Each loop survives failures (Redis restarting): it logs and carries on; it stops only when
cancelled, even if a client library swallowed the cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from server.ledger.streams import with_no_unit
from server.store import keys, timers
from server.store.availability import is_outage
from server.store.timers import TimerKind

if TYPE_CHECKING:
    from server.hub import Services

log = logging.getLogger(__name__)


async def _every(
    interval_s: float, name: str, job: Any, services: Services, *, redis: bool = True
) -> None:
    """Run ``job()`` every interval; the loop goes on through failures. A Redis outage is
    reported to ``services.availability`` (one warning for the whole outage); anything else
    is logged with its traceback. ``redis``: the job talks to Redis, so its success says
    Redis is back."""
    availability = services.availability
    while True:
        await asyncio.sleep(interval_s)
        try:
            await job()
        except Exception as exc:  # noqa: BLE001
            if _cancelling():
                pass
            elif is_outage(exc):
                availability.failed(name, exc)
            else:
                log.exception("%s failed", name)
        else:
            if redis:
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


async def _fire_due_timers(services: Services) -> None:
    lease_ms = int(services.settings.timer_lease_s * 1000)
    for unit in services.directory.unit_codes():
        for _ in range(TIMER_BATCHES_PER_POLL):
            now_ms = int(time.time() * 1000)
            due = await services.scripts.due(
                keys=[keys.timers(unit)], args=[now_ms, lease_ms, TIMER_BATCH]
            )
            await _fire(services, unit, due)
            if len(due) < TIMER_BATCH:
                break


async def _fire(services: Services, unit: str, due: list[bytes]) -> None:
    """Carry out the timers claimed of ``unit``: offers and presence one by one, supervision
    timers (deadlines, escalations) as one concurrent batch."""
    supervision: list[tuple[TimerKind, str]] = []
    for member in due:
        kind, ident = timers.parse(member)
        if kind is TimerKind.OFFER:
            freed = await services.dispatcher.expire_offer(unit, ident)
        elif kind in (TimerKind.DEADLINE, TimerKind.ESCALATE):
            supervision.append((kind, ident))
            continue
        elif kind is not None:
            freed = await services.presence.on_timer(unit, kind, ident)
        else:  # scheduled by a newer version: leave it to a process that knows it
            continue
        if freed:
            services.hub.drain_soon(unit)
    if supervision:
        await services.notices.on_timers(unit, supervision)


async def _deliver_citizen(services: Services) -> None:
    """Send the messages to callers that are due, in every unit's outbox (and the outbox of
    requests passed to 110/119/120)."""
    units = with_no_unit(services.directory.unit_codes())
    await services.citizen.outbox.deliver_due(services.sender, units)


async def _sweep_queues(services: Services) -> None:
    for unit in services.directory.unit_codes():
        if await services.redis.zcard(keys.queue(unit)):
            await services.dispatcher.drain(unit)


async def _listen(services: Services) -> None:
    """Pushes for squads on this process, published by other processes."""
    while True:
        try:
            pubsub = services.redis.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(keys.hub_channel(services.hub.id))
            async for message in pubsub.listen():
                if message["type"] == "message":
                    services.hub.receive_channel_message(message["data"])
                if _cancelling():
                    raise asyncio.CancelledError
        except Exception as exc:  # noqa: BLE001 - reconnect after a Redis restart
            if _cancelling():
                raise asyncio.CancelledError from None
            if is_outage(exc):
                services.availability.failed("hub channel", exc)
            else:
                log.warning("hub channel lost; resubscribing", exc_info=True)
            await asyncio.sleep(0.5)


def background_loops(services: Services) -> list[Coroutine[Any, Any, None]]:
    s = services.settings
    return [
        services.positions.run(),
        _listen(services),
        _every(s.timer_poll_ms / 1000, "timers", lambda: _fire_due_timers(services), services),
        _every(s.queue_sweep_s, "queue sweep", lambda: _sweep_queues(services), services),
        _every(5.0, "unit directory", services.directory.refresh, services),
        _every(
            min(5.0, s.offline_after_s / 3),
            "silent sessions",
            lambda: _async(services.hub.close_silent(s.offline_after_s)),
            services,
            redis=False,
        ),
        _every(s.hub_beat_s, "hub heartbeat", services.presence.beat, services),
        _every(s.hub_beat_s * 2, "dead hubs", services.presence.reap_dead_hubs, services),
        _every(15.0, "reconcile", services.hub.reconcile, services),
        _every(s.citizen_poll_s, "citizen messages", lambda: _deliver_citizen(services), services),
        services.webpush.run(),
    ]


async def _async(value: object) -> object:
    return value
