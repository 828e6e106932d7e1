"""notice.lua and the deadline/notice parts of apply.lua, on a real Redis, driven through
RequestStore and Notices (no hub process)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from dispatch_field import protocol
from server.lifecycle import (
    Cancelled,
    Deferred,
    Offered,
    RequestView,
    SquadStep,
    State,
    Triaged,
    transition,
)
from server.notices import Notices
from server.settings import Settings
from server.store import keys
from server.store.requests import Actor, RequestStore, event_json
from server.store.scripts import Scripts
from server.store.timers import TimerKind

UNIT = "gas"
RID = "20261130-001001"
SYSTEM = Actor("system")


class Pushes:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, int, bytes, str]] = []

    async def __call__(self, unit: str, squad: str, seq: int, body: bytes, hub: str) -> None:
        self.sent.append((unit, squad, seq, body, hub))


@pytest.fixture
async def parts(redis: Redis) -> AsyncIterator[tuple[RequestStore, Notices, Pushes]]:
    scripts = Scripts.register(redis)
    store = RequestStore(
        redis,
        scripts,
        events_maxlen=1000,
        command_memory_s=60,
        outbox_max_frames=3,
        zone=ZoneInfo("Asia/Shanghai"),
    )
    settings = Settings(
        tokens="admin:adm-12345678", notice_escalate_s=10.0, notice_max_level=3, outbox_max_frames=3
    )
    pushes = Pushes()
    yield store, Notices(redis, scripts, store, settings, pushes), pushes


async def _create(
    store: RequestStore, redis: Redis, accept_by: float, arrive_by: float, resolve_by: float
) -> None:
    step = transition(RequestView(State.RECEIVED), Triaged("linkage"))
    now = time.time()
    fields = {
        "id": RID,
        "category": "gas_leak_smell",
        "unit": UNIT,
        "received_at": repr(now),
        "accept_by": repr(accept_by),
        "arrive_by": repr(arrive_by),
        "resolve_by": repr(resolve_by),
        "caller_phone": "13800000000",
    }
    fields |= step.fields | {"state": step.state.value}
    await redis.hset(keys.request_units(), RID, UNIT)
    await store.create(
        RID, UNIT, fields, [event_json("queued", RID, now, SYSTEM)], step, received_at=now
    )


async def _step(store: RequestStore, event: Any, at: float | None = None, **extra: Any) -> None:
    record = await store.read(UNIT, RID)
    assert record is not None
    step = transition(record.view(), event)
    await store.commit(
        UNIT,
        RID,
        record.v,
        step,
        [event_json(step.event, RID, time.time(), SYSTEM)],
        at=at,
        **extra,
    )


async def _timers(redis: Redis) -> dict[str, float]:
    return {k.decode(): s for k, s in await redis.zrange(keys.timers(UNIT), 0, -1, withscores=True)}


async def _timeline(redis: Redis) -> list[dict[str, Any]]:
    return [json.loads(e) for e in await redis.lrange(keys.timeline(UNIT, RID), 0, -1)]


async def test_intake_schedules_deadlines_in_the_create_script(
    parts: tuple[RequestStore, Notices, Pushes], redis: Redis
) -> None:
    store, _, _ = parts
    await _create(store, redis, 1000.0, 2000.0, 3000.0)
    assert await _timers(redis) == {
        f"deadline:{RID}:accept": 1_000_000,
        f"deadline:{RID}:arrive": 2_000_000,
        f"deadline:{RID}:resolve": 3_000_000,
    }


async def test_waiting_notice_issued_once_escalates_and_stops_at_the_top(
    parts: tuple[RequestStore, Notices, Pushes], redis: Redis
) -> None:
    store, notices, pushes = parts
    now = time.time()
    await _create(store, redis, now - 1, now + 100, now + 200)
    for _ in range(3):  # fired again (another process, a lease returned): still one notice
        await notices.on_timer(UNIT, TimerKind.DEADLINE, f"{RID}:accept")
    issued = [e for e in await _timeline(redis) if e["type"] == "notice_issued"]
    assert [(e["notice"], e["notice_kind"], e["level"]) for e in issued] == [
        (f"{RID}-waiting-1", "waiting", 1)
    ]
    assert pushes.sent == []  # no squad holds it
    timers_now = await _timers(redis)
    assert f"deadline:{RID}:accept" not in timers_now
    assert timers_now[f"escalate:{RID}:waiting:2"] == pytest.approx((now - 1 + 10) * 1000, abs=2)
    await notices.on_timer(UNIT, TimerKind.ESCALATE, f"{RID}:waiting:2")
    await notices.on_timer(UNIT, TimerKind.ESCALATE, f"{RID}:waiting:2")
    assert f"escalate:{RID}:waiting:3" in await _timers(redis)
    await notices.on_timer(UNIT, TimerKind.ESCALATE, f"{RID}:waiting:3")
    assert not [m for m in await _timers(redis) if m.startswith("escalate")]  # top level: 3
    listed = await notices.of_request(UNIT, RID)
    assert [(n.id, n.level, n.state) for n in listed] == [
        (f"{RID}-waiting-{level}", level, "open") for level in (1, 2, 3)
    ]
    assert await redis.zcard(keys.open_notices(UNIT)) == 3


async def test_deadline_not_yet_due_is_left_for_later(
    parts: tuple[RequestStore, Notices, Pushes], redis: Redis
) -> None:
    store, notices, _ = parts
    now = time.time()
    await _create(store, redis, now + 50, now + 100, now + 200)
    await notices.on_timer(UNIT, TimerKind.DEADLINE, f"{RID}:accept")
    assert (await _timers(redis))[f"deadline:{RID}:accept"] == pytest.approx(
        (now + 50) * 1000, abs=2
    )
    assert await notices.of_request(UNIT, RID) == []


async def test_notice_goes_to_the_squad_outbox_and_closes_when_met(
    parts: tuple[RequestStore, Notices, Pushes], redis: Redis
) -> None:
    store, notices, pushes = parts
    now = time.time()
    await _create(store, redis, now - 2, now - 1, now + 200)
    await redis.hset(keys.squad(UNIT, "S1"), mapping={"hub": "hub-1", "seq": 7})
    await _step(store, Offered(squad="S1", assignment="A1"), assignment="A1", squad="S1")
    await notices.on_timer(UNIT, TimerKind.DEADLINE, f"{RID}:accept")
    assert len(pushes.sent) == 1
    unit, squad, seq, body, hub = pushes.sent[0]
    assert (unit, squad, seq, hub) == (UNIT, "S1", 8, "hub-1")
    frame = protocol.decode_hub(protocol.stamp_seq(body, seq))
    assert isinstance(frame, protocol.Notice) and frame.seq == 8
    assert (frame.notice.id, frame.notice.kind, frame.notice.squad) == (
        f"{RID}-accept-1",
        "accept",
        "S1",
    )
    assert await redis.zcard(keys.outbox(UNIT, "S1")) == 1

    accepted_at = now + 0.5
    await _step(store, SquadStep("accept", "A1"), at=accepted_at, assignment="A1", squad="S1")
    record = await store.read(UNIT, RID)
    assert record is not None and record.accepted_at == pytest.approx(accepted_at, abs=1e-3)
    (closed,) = await notices.of_request(UNIT, RID)
    assert (closed.state, closed.closed_by) == ("closed", "accepted")
    assert closed.closed_at == pytest.approx(accepted_at, abs=1e-3)
    assert await redis.scard(keys.request_open_notices(UNIT, RID)) == 0
    assert await redis.zcard(keys.open_notices(UNIT)) == 0
    assert await redis.zrange(keys.closed_notices(UNIT), 0, -1) == [f"{RID}-accept-1".encode()]
    events = [e for e in await _timeline(redis) if e["type"] == "notice_closed"]
    assert [(e["notice"], e["closed_by"]) for e in events] == [(f"{RID}-accept-1", "accepted")]
    assert f"deadline:{RID}:accept" not in await _timers(redis)
    # An escalation due for the closed notice issues nothing.
    await notices.on_timer(UNIT, TimerKind.ESCALATE, f"{RID}:accept:2")
    assert len(await notices.of_request(UNIT, RID)) == 1

    # The arrive notice: issued while accepted, closed by the arrival; first acceptance kept.
    await notices.on_timer(UNIT, TimerKind.DEADLINE, f"{RID}:arrive")
    assert pushes.sent[-1][2] == 9
    await _step(store, SquadStep("arrive", "A1"), assignment="A1", squad="S1")
    record = await store.read(UNIT, RID)
    assert record is not None and record.accepted_at == pytest.approx(accepted_at, abs=1e-3)
    assert record.arrived_at is not None
    by_id = {n.id: n for n in await notices.of_request(UNIT, RID)}
    assert by_id[f"{RID}-arrive-1"].closed_by == "arrived"


async def test_outbox_retention_applies_to_notices(
    parts: tuple[RequestStore, Notices, Pushes], redis: Redis
) -> None:
    store, notices, _ = parts
    now = time.time()
    await _create(store, redis, now - 2, now + 100, now + 200)
    await redis.hset(keys.squad(UNIT, "S1"), mapping={"hub": "", "seq": 0})
    for seq in range(1, 4):  # the outbox holds 3 frames
        await redis.zadd(keys.outbox(UNIT, "S1"), {f"{seq:012d}x": seq})
    await redis.hset(keys.squad(UNIT, "S1"), "seq", 3)
    await _step(store, Offered(squad="S1", assignment="A1"), assignment="A1", squad="S1")
    await notices.on_timer(UNIT, TimerKind.DEADLINE, f"{RID}:accept")
    assert await redis.zcard(keys.outbox(UNIT, "S1")) == 3
    assert await redis.hget(keys.squad(UNIT, "S1"), "trimmed") == b"1"


async def test_notice_script_is_compare_and_set(
    parts: tuple[RequestStore, Notices, Pushes], redis: Redis
) -> None:
    store, _, _ = parts
    now = time.time()
    await _create(store, redis, now - 2, now + 100, now + 200)
    scripts = Scripts.register(redis)
    nkeys = [
        keys.request(UNIT, RID),
        keys.notices(UNIT, RID),
        keys.request_open_notices(UNIT, RID),
        keys.open_notices(UNIT),
        keys.timeline(UNIT, RID),
        keys.events(UNIT),
        keys.timers(UNIT),
        keys.squad(UNIT, "-"),
        keys.outbox(UNIT, "-"),
    ]

    def args(version: int) -> list[Any]:
        return [
            version,
            "N1",
            '{"kind":"accept"}',
            '{"type":"notice_issued"}',
            100,
            5,
            "",
            0,
            "",
            10,
        ]

    assert await scripts.notice(keys=nkeys, args=args(99)) == [b"stale", 1]
    assert await scripts.notice(keys=nkeys, args=args(1)) == [b"issued", 0, b""]
    assert await scripts.notice(keys=nkeys, args=args(1)) == [b"exists"]
    assert await redis.hkeys(keys.notices(UNIT, RID)) == [b"N1"]


async def test_a_promise_moves_the_resolve_deadline_and_a_cancel_closes_everything(
    parts: tuple[RequestStore, Notices, Pushes], redis: Redis
) -> None:
    store, notices, _ = parts
    now = time.time()
    await _create(store, redis, now - 3, now - 2, now + 200)
    await _step(store, Offered(squad="S1", assignment="A1"), assignment="A1", squad="S1")
    await _step(store, SquadStep("accept", "A1"), assignment="A1", squad="S1")
    await notices.on_timer(UNIT, TimerKind.DEADLINE, f"{RID}:arrive")
    await _step(store, Deferred("A1", now + 500, "part on order"), assignment="A1", squad="S1")
    pending = await _timers(redis)
    assert pending[f"deadline:{RID}:promise"] == pytest.approx((now + 500) * 1000, abs=2)
    assert f"deadline:{RID}:resolve" not in pending
    await _step(store, Cancelled("withdrawn"), assignment="A1", squad="S1")
    assert [n.closed_by for n in await notices.of_request(UNIT, RID)] == ["cancelled"]
    assert not [m for m in await _timers(redis) if m.startswith("deadline")]
