"""Retention: the live state of requests closed long ago leaves Redis once the ledger holds
it, and only then. Real Redis, real database (SQLite and PostgreSQL, the fixtures of
tests/conftest.py); the requests are driven by the server's own code.

``now`` is moved forward instead of waiting: the sweep is asked about a moment an hour
ahead, with a retention of half an hour, so what closed before the test counts as old.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select

from server.actions import NewRequest
from server.citizen.senders import MemorySender
from server.city import load_city
from server.components import build_components
from server.ledger import Ledger, archived_request, find_requests, request_events, tables
from server.ledger.retention import LEASE_KEY, run, sweep
from server.ledger.streams import ack
from server.lifecycle import Disputed, Offered
from server.settings import Settings
from server.store import keys
from server.store.requests import Actor
from server.store.timers import TimerKind
from tests.helpers import XIGONG
from tests.test_ledger import Desk, drain, eventually

CENTER = Actor("center", "li")
UNITS = ["water", "gas", "power"]
HOUR = 3600.0
RETENTION_S = HOUR / 2


async def _live_keys(redis: Redis, unit: str, request_id: str) -> list[str]:
    """The request's keys still in Redis in ``unit``."""
    wanted = [
        keys.request(unit, request_id),
        keys.timeline(unit, request_id),
        keys.notices(unit, request_id),
        keys.citizen_messages(unit, request_id),
        keys.assignment(unit, f"A-{request_id}"),
    ]
    return [key for key in wanted if await redis.exists(key)]


async def _dropped_at(ledger: Ledger, request_id: str) -> float | None:
    requests = tables.requests
    async with ledger.engine.connect() as conn:
        query = select(requests.c.live_dropped_at).where(requests.c.id == request_id)
        return (await conn.execute(query)).scalar_one()  # type: ignore[no-any-return]


async def _sweep(ledger: Ledger, redis: Redis, **options: Any) -> Any:
    return await sweep(ledger, redis, RETENTION_S, now=time.time() + HOUR, **options)


async def test_closed_and_recorded_requests_leave_redis(redis: Redis, ledger: Ledger) -> None:
    desk = Desk(redis, ledger)
    resolved = await desk.receive()
    await desk.handle("water", resolved)
    still_open = await desk.receive()  # queued: never dropped
    later = await desk.receive()
    await desk.handle("water", later, start=time.time() + HOUR)  # closed after the cutoff
    assert await _live_keys(redis, "water", resolved)

    # Nothing recorded yet: nothing leaves.
    swept = await _sweep(ledger, redis)
    assert swept.dropped == [] and swept.kept == {}

    # Recorded (committed) but not acknowledged: the writer is not past its last event.
    entries = await ledger.read(redis, UNITS, "c1")
    await ledger.write(redis, entries)
    swept = await _sweep(ledger, redis)
    assert swept.dropped == []
    assert "not past its last event" in swept.kept[resolved]
    assert await _live_keys(redis, "water", resolved)

    await ack(redis, entries)  # acknowledged: recorded for good
    await drain(ledger, redis, UNITS)
    swept = await _sweep(ledger, redis)
    assert swept.dropped == [resolved], swept.kept
    assert await _live_keys(redis, "water", resolved) == []
    assert await redis.hget(keys.request_units(), resolved) is None
    assert await _dropped_at(ledger, resolved) is not None
    # The ledger still answers for it.
    [row] = await find_requests(ledger, caller_phone="13800000000", state="resolved", limit=1)
    assert row["id"] == resolved
    assert [e["type"] for e in await request_events(ledger, resolved)][-1] == "resolved"
    archived = await archived_request(ledger, resolved)
    assert archived is not None and archived["archived"] and archived["state"] == "resolved"
    assert [e["type"] for e in archived["timeline"]] == [
        "received",
        "queued",
        "offered",
        "accepted",
        "en_route",
        "arrived",
        "resolved",
    ]
    # The others are untouched, and a second sweep finds nothing more to do.
    assert len(await _live_keys(redis, "water", still_open)) == 2  # hash and timeline
    assert await _live_keys(redis, "water", later)
    swept = await _sweep(ledger, redis)
    assert swept.dropped == [] and swept.kept == {}


async def test_an_event_the_ledger_lacks_keeps_the_request(redis: Redis, ledger: Ledger) -> None:
    """A note on a closed request, a reopening, a message still being sent: Redis holds
    something the ledger does not (yet), and the request stays."""
    services = build_components(Settings(), redis, load_city(), ledger)
    desk = Desk(redis, ledger)
    noted, reopened = await desk.receive(), await desk.receive()
    for request_id in (noted, reopened):
        await desk.handle("water", request_id)
    await drain(ledger, redis, UNITS)

    await services.center.note(noted, "the caller called to thank", CENTER)
    await services.center.reopen(reopened, "still leaking", CENTER)
    swept = await _sweep(ledger, redis)
    assert swept.dropped == []
    assert "not recorded yet" in swept.kept[noted]
    assert "open again" in swept.kept[reopened]

    await drain(ledger, redis, UNITS)
    swept = await _sweep(ledger, redis)
    assert swept.dropped == [noted]  # the reopened one is open in the ledger too now
    assert await _live_keys(redis, "water", reopened)

    # A message to the caller still being delivered keeps it as well.
    told = await services.intake.create(
        NewRequest(
            caller_phone="13800000001",
            category="water_main_burst",
            description="pipe burst",
            lat=XIGONG[0],
            lon=XIGONG[1],
        ),
        Actor("calltaker", "wang"),
    )
    await services.center.cancel(told["id"], "withdrawn", "fixed itself", "", CENTER)
    await drain(ledger, redis, UNITS)
    assert await redis.zscore(keys.citizen_due("water"), told["id"]) is not None
    swept = await _sweep(ledger, redis)
    assert "being delivered" in swept.kept[told["id"]]


async def test_a_moved_request_leaves_both_units(redis: Redis, ledger: Ledger) -> None:
    services = build_components(Settings(), redis, load_city(), ledger)
    desk = Desk(redis, ledger)
    request_id = await desk.receive()
    await desk.step("water", request_id, Offered("S1", "A1"))
    await redis.hset(keys.request("water", request_id), "accept_by", repr(time.time() - 5))
    await services.notices.on_timer("water", TimerKind.DEADLINE, f"{request_id}:accept")
    await desk.step("water", request_id, Disputed("A1", "gas, not water"))
    await services.center.reassign(request_id, "gas", "gas_leak_smell", [], "gas", CENTER)
    await services.center.cancel(request_id, "unfounded", "no leak found", "", CENTER)
    sender = MemorySender()

    async def all_told() -> bool:  # the caller is told; then nothing is left to send
        await services.citizen.outbox.deliver_due(sender, UNITS)
        due = [await redis.zscore(keys.citizen_due(u), request_id) for u in ("water", "gas")]
        return due == [None, None]

    await eventually(all_told, timeout_s=10)  # one message per request a pass
    assert sender.sent  # it was told something
    await drain(ledger, redis, UNITS)
    assert await _live_keys(redis, "water", request_id)
    assert await _live_keys(redis, "gas", request_id)
    notice = f"{request_id}-accept-1"
    assert await redis.zscore(keys.closed_notices("gas"), notice) is not None

    swept = await _sweep(ledger, redis)
    assert swept.dropped == [request_id], swept.kept
    assert await _live_keys(redis, "water", request_id) == []
    assert await _live_keys(redis, "gas", request_id) == []
    assert await redis.zscore(keys.closed_notices("gas"), notice) is None
    assert await redis.exists(keys.assignment("water", "A1")) == 0


async def test_the_loop_sweeps_under_a_lease(redis: Redis, ledger: Ledger) -> None:
    desk = Desk(redis, ledger)
    request_id = await desk.receive(at=time.time() - 2 * HOUR)
    await desk.handle("water", request_id, start=time.time() - 2 * HOUR)
    await drain(ledger, redis, UNITS)
    await redis.set(LEASE_KEY, "another-process", px=60_000)  # someone else sweeps now
    loop = asyncio.create_task(run(ledger, redis, HOUR, "me", every_s=0.05))
    try:
        await asyncio.sleep(0.3)
        assert await _live_keys(redis, "water", request_id)
        await redis.delete(LEASE_KEY)

        async def dropped() -> bool:
            return not await _live_keys(redis, "water", request_id)

        await eventually(dropped)
    finally:
        loop.cancel()
        stopped, _ = await asyncio.wait([loop], timeout=10)
    assert stopped, "the loop did not stop when cancelled"
    assert await redis.get(LEASE_KEY) in (None, b"me")
