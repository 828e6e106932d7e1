"""The ledger: Redis event streams -> SQL, against a real Redis and real databases.

Events are written by the server's own code (``RequestStore`` + ``apply.lua`` with steps
from ``server.lifecycle.transition``). Database-backed tests run on a SQLite file and on
PostgreSQL (a fresh database per test; skipped, visibly, when none answers on 5432), each
once per reachable Redis version (the ``redis`` fixture of conftest).
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select, text

from server import ids
from server.city import load_city
from server.components import build_components
from server.ledger import (
    GROUP,
    Ledger,
    async_database_url,
    default_database_url,
    export_csv,
    find_requests,
    request_conflicts,
    request_events,
    tables,
)
from server.ledger import streams as ledger_streams
from server.ledger.fold import attribute, fold, parse_entry
from server.lifecycle import (
    Deferred,
    Event,
    Offered,
    OfferExpired,
    RequestView,
    SquadStep,
    State,
    Triaged,
    transition,
)
from server.settings import Settings
from server.store import keys
from server.store.embedded import EmbeddedRedis
from server.store.requests import Actor, RequestStore, event_json

CALLTAKER = Actor("calltaker", "seat-1")


# ---- fixtures -----------------------------------------------------------------------------


class Desk:
    """Drives requests through their lifecycle with the server's own code, as the hub does."""

    def __init__(self, redis: Redis, ledger: Ledger | None = None) -> None:
        # The hub's own composition root builds the store, with the default settings.
        self.store: RequestStore = build_components(Settings(), redis, load_city(), ledger).requests

    async def receive(
        self,
        unit: str = "water",
        category: str = "water_main_burst",
        district: str = "xigong",
        *,
        at: float | None = None,
        route: str = "linkage",
        request_id: str | None = None,
    ) -> str:
        """Record a new request as ``Intake.create`` does (events: received + queued, or
        received + transferred); returns its id. ``request_id``: take that id instead of
        the next number (as a Redis that lost its counter would)."""
        at = time.time() if at is None else at
        request_id = request_id or await self.store.next_id()
        unit = unit if route == "linkage" else keys.NO_UNIT
        fields = {
            "id": request_id,
            "category": category,
            "description": "pipe burst",
            "lat": "34.67",
            "lon": "112.445",
            "address": "Zhongzhou Road 1",
            "caller_phone": "13800000000",
            "district": district,
            "unit": unit,
            "route": route,
            "received_at": repr(at),
            "state": State.RECEIVED.value,
        }
        if route == "linkage":
            fields |= {
                "accept_by": repr(at + 300),
                "arrive_by": repr(at + 1800),
                "resolve_by": repr(at + 86400),
            }
        step = transition(RequestView(State.RECEIVED), Triaged(route))
        fields |= step.fields | {"state": step.state.value}
        events = [
            event_json(
                "received",
                request_id,
                at,
                CALLTAKER,
                category=category,
                unit=unit,
                district=district,
            ),
            event_json(step.event, request_id, at, CALLTAKER, route=route),
        ]
        await self.store.create(request_id, unit, fields, events, step, received_at=at)
        return request_id

    async def step(
        self, unit: str, request_id: str, event: Event, at: float | None = None
    ) -> State:
        """Commit ``event`` as the squad (or the system) would; returns the new state."""
        record = await self.store.read(unit, request_id)
        assert record is not None
        view, version = record.view(), record.v
        step = transition(view, event)
        squad = getattr(event, "squad", "") or record.squad
        assignment = getattr(event, "assignment", "")
        recorded = event_json(
            step.event,
            request_id,
            time.time() if at is None else at,
            Actor("squad", squad),
            squad=squad,
            assignment=assignment,
            note=getattr(event, "note", ""),
            reason=getattr(event, "reason", ""),
            until=getattr(event, "until", None),
        )
        await self.store.commit(
            unit, request_id, version, step, [recorded], assignment=assignment, squad=squad
        )
        return step.state

    async def handle(
        self, unit: str, request_id: str, *, upto: str = "resolve", start: float | None = None
    ) -> None:
        """Offer to a squad, then accept, en route, arrive, resolve (stopping after
        ``upto``), one second apart from ``start``."""
        at = time.time() if start is None else start
        assignment = f"A-{request_id}"
        await self.step(unit, request_id, Offered(f"S-{unit}", assignment), at)
        for i, kind in enumerate(("accept", "enroute", "arrive", "resolve"), start=1):
            await self.step(unit, request_id, SquadStep(kind, assignment, note="fixed"), at + i)
            if kind == upto:
                return


async def stream_lengths(redis: Redis, units: list[str]) -> int:
    return sum([await redis.xlen(keys.events(unit)) for unit in units])


async def count_rows(ledger: Ledger, table: Any) -> int:
    async with ledger.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def pending(redis: Redis, unit: str) -> int:
    info = await redis.xpending(keys.events(unit), GROUP)
    return int(info["pending"])


async def drain(
    ledger: Ledger, redis: Redis, units: list[str], consumer: str = "c1", **options: Any
) -> int:
    """process_once until nothing is left; returns how many entries were recorded."""
    total = 0
    while done := await ledger.process_once(redis, units, consumer, **options):
        total += done
    return total


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout_s} s")
        await asyncio.sleep(0.05)


# ---- pure: the fold ------------------------------------------------------------------------


def _entry(n: int, payload: dict[str, Any]) -> Any:
    event = parse_entry("water", f"1700000000000-{n}", {"e": json.dumps(payload)})
    assert event is not None
    return event


LIFECYCLE = [
    _entry(
        0,
        {
            "type": "received",
            "request": "R1",
            "at": 100.0,
            "category": "water_outage",
            "district": "xigong",
            "unit": "water",
            "by": "calltaker",
        },
    ),
    _entry(1, {"type": "queued", "request": "R1", "at": 100.0, "route": "linkage"}),
    _entry(2, {"type": "offered", "request": "R1", "at": 101.0, "squad": "S1"}),
    _entry(3, {"type": "offer_expired", "request": "R1", "at": 161.0, "squad": "S1"}),
    _entry(4, {"type": "offered", "request": "R1", "at": 162.0, "squad": "S2"}),
    _entry(5, {"type": "accepted", "request": "R1", "at": 170.0, "squad": "S2"}),
    _entry(6, {"type": "deferred", "request": "R1", "at": 180.0, "squad": "S2", "until": 9999.0}),
    _entry(7, {"type": "arrived", "request": "R1", "at": 175.0, "squad": "S2"}),
    _entry(8, {"type": "notice", "request": "R1", "at": 400.0, "level": 1}),
    # "1700000000000-10" sorts after "-9" only when padded: stream order, not text order.
    _entry(
        10,
        {"type": "resolved", "request": "R1", "at": 500.0, "squad": "S2", "note": "valve replaced"},
    ),
    _entry(9, {"type": "en_route", "request": "R1", "at": 450.0, "squad": "S2"}),
]


def test_fold_in_stream_order_gives_the_final_row() -> None:
    row = fold("R1", "water", None, LIFECYCLE, None)
    assert row["state"] == "resolved" and row["squad"] == "S2"
    assert (row["accepted_at"], row["arrived_at"], row["resolved_at"]) == (170.0, 175.0, 500.0)
    assert row["updated_at"] == 500.0 and row["received_at"] == 100.0
    assert (row["category"], row["district"], row["route"]) == ("water_outage", "xigong", "linkage")
    assert row["resolve_by"] == 9999.0 and row["result"] == "valve replaced"


def test_fold_converges_whatever_the_batches_order_and_repeats() -> None:
    """Consumers write batches in any order, and a taken-over batch may come twice."""
    expected = fold("R1", "water", None, LIFECYCLE, None)
    rng = random.Random(3)
    for _ in range(200):
        shuffled = rng.sample(LIFECYCLE, len(LIFECYCLE))
        shuffled += rng.sample(LIFECYCLE, 4)  # re-deliveries
        cuts = sorted(rng.sample(range(1, len(shuffled)), 4))
        row: dict[str, Any] | None = None
        for start, end in itertools.pairwise([0, *cuts, len(shuffled)]):
            row = fold("R1", "water", row, shuffled[start:end], None)
        assert row == expected


def test_snapshot_newest_version_wins_and_fills_static_fields() -> None:
    received = LIFECYCLE[:2]
    newer = {
        "v": "5",
        "caller_phone": "139",
        "lat": "34.6",
        "resolve_by": "777.5",
        "description": "burst",
        "district": "",
    }
    older = {"v": "3", "caller_phone": "138", "resolve_by": "1.0"}
    row = fold("R1", "water", None, received, newer)
    row = fold("R1", "water", row, [], older)
    assert (row["caller_phone"], row["lat"], row["resolve_by"]) == ("139", 34.6, 777.5)
    assert row["district"] == "xigong"  # "" in a hash means "none", not "clear it"
    assert row["version"] == 5


def test_unreadable_and_trimmed_entries() -> None:
    assert parse_entry("water", "1-0", {}) is None  # trimmed while pending: nothing left
    bad = parse_entry("water", "1-1", {"e": "not json"})
    assert bad is not None and bad.type == "unreadable" and bad.request_id is None
    assert json.loads(bad.data) == {"unreadable": {"e": "not json"}}


def test_database_urls(tmp_path: Path) -> None:
    assert async_database_url("postgresql://u:p@h:5432/db") == "postgresql+asyncpg://u:p@h:5432/db"
    assert async_database_url("postgres://h/db") == "postgresql+asyncpg://h/db"
    assert async_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert async_database_url("sqlite+aiosqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    url = default_database_url(tmp_path / "var")
    assert url == f"sqlite+aiosqlite:///{(tmp_path / 'var').resolve()}/ledger.sqlite3"


# ---- integration: Redis streams -> SQL -------------------------------------------------------


async def test_events_land_and_the_request_row_follows_them(redis: Redis, ledger: Ledger) -> None:
    desk = Desk(redis)
    start = time.time()
    rid = await desk.receive(at=start)
    assert await ledger.process_once(redis, ["water"]) == 2
    [row] = await find_requests(ledger, unit="water")
    assert (row["id"], row["state"], row["category"], row["district"]) == (
        rid,
        "queued",
        "water_main_burst",
        "xigong",
    )
    assert (row["caller_phone"], row["address"], row["lat"]) == (
        "13800000000",
        "Zhongzhou Road 1",
        34.67,
    )
    assert row["received_at"] == pytest.approx(start)
    assert row["resolve_by"] == pytest.approx(start + 86400)

    await desk.handle("water", rid, upto="arrive", start=start)
    assert await ledger.process_once(redis, ["water"]) == 4
    [row] = await find_requests(ledger, unit="water")
    assert (row["state"], row["squad"]) == ("on_scene", "S-water")
    assert row["accepted_at"] == pytest.approx(start + 1)
    assert row["arrived_at"] == pytest.approx(start + 3)
    assert row["resolved_at"] is None

    until = start + 7200
    await desk.step("water", rid, Deferred(f"A-{rid}", until, "parts on order"), start + 4)
    await desk.step("water", rid, SquadStep("resolve", f"A-{rid}", note="valve"), start + 5)
    assert await ledger.process_once(redis, ["water"]) == 2
    [row] = await find_requests(ledger, unit="water")
    assert (row["state"], row["result"]) == ("resolved", "valve")
    assert row["resolve_by"] == pytest.approx(until)  # the promise became the deadline
    assert row["resolved_at"] == pytest.approx(start + 5)

    history = await request_events(ledger, rid)
    assert [e["type"] for e in history] == [
        "received",
        "queued",
        "offered",
        "accepted",
        "en_route",
        "arrived",
        "deferred",
        "resolved",
    ]
    assert history[3]["by"] == "squad:S-water" and history[3]["data"]["squad"] == "S-water"
    assert await count_rows(ledger, tables.events) == await stream_lengths(redis, ["water"])
    assert await pending(redis, "water") == 0


async def test_transferred_requests_are_recorded_from_the_no_unit_stream(
    redis: Redis, ledger: Ledger
) -> None:
    desk = Desk(redis)
    rid = await desk.receive(category="fire", route="fire")
    assert await ledger.process_once(redis, ["water"]) == 2  # "-" is always read too
    [row] = await find_requests(ledger, state="transferred")
    assert (row["id"], row["unit"], row["route"]) == (rid, keys.NO_UNIT, "fire")
    assert row["accept_by"] is None


async def test_reprocessing_after_a_crash_before_xack_adds_no_duplicate(
    redis: Redis, database_url: str, ledger: Ledger
) -> None:
    desk = Desk(redis)
    for _ in range(3):
        await desk.handle("water", await desk.receive())
    entries = await ledger.read(redis, ["water"], "hub-a")
    await ledger.write(redis, entries)  # committed ... and the process dies before XACK
    assert await pending(redis, "water") == len(entries) == 21

    restarted = await Ledger.open(database_url)  # same consumer name, nothing in memory
    try:
        assert await drain(restarted, redis, ["water"], "hub-a") == 21
    finally:
        await restarted.close()
    assert await count_rows(ledger, tables.events) == 21
    assert await count_rows(ledger, tables.requests) == 3
    assert {r["state"] for r in await find_requests(ledger)} == {"resolved"}
    assert await pending(redis, "water") == 0


async def test_entries_of_a_dead_consumer_are_taken_over_once_idle(
    redis: Redis, ledger: Ledger
) -> None:
    desk = Desk(redis)
    rid = await desk.receive()
    await desk.handle("water", rid)
    await ledger.read(redis, ["water"], "dead-hub")  # read, then the hub is SIGKILLed
    assert await drain(ledger, redis, ["water"], "live-hub") == 0  # not idle 30 s yet
    assert await pending(redis, "water") == 7

    await asyncio.sleep(0.05)
    taken = await drain(ledger, redis, ["water"], "live-hub", claim_idle_ms=20)
    assert taken == 7 and await pending(redis, "water") == 0
    assert [r["state"] for r in await find_requests(ledger)] == ["resolved"]
    assert len(await request_events(ledger, rid)) == 7


async def test_two_consumers_record_each_entry_exactly_once(
    redis: Redis, database_url: str, ledger: Ledger
) -> None:
    """Two processes' consumers read the same streams while requests move: together they
    record every entry once (the sum of their counts equals the streams' length)."""
    units = ["water", "power", "gas"]
    other = await Ledger.open(database_url)  # a second process: its own engine
    desk = Desk(redis)
    done = asyncio.Event()
    counts = {"hub-a": 0, "hub-b": 0}

    async def consumer(instance: Ledger, name: str) -> None:
        while True:
            n = await instance.process_once(redis, units, name, batch=7)
            counts[name] += n
            if not n:
                if done.is_set():
                    return
                await asyncio.sleep(0.005)

    async def produce() -> None:
        for i in range(30):
            unit = units[i % 3]
            rid = await desk.receive(unit, "x")
            await desk.handle(unit, rid, upto=["accept", "arrive", "resolve"][i % 3])
        done.set()

    try:
        # A failure in one task cancels the others; a hang fails the test instead of the run.
        async with asyncio.timeout(60), asyncio.TaskGroup() as group:
            group.create_task(produce())
            group.create_task(consumer(ledger, "hub-a"))
            group.create_task(consumer(other, "hub-b"))
        await drain(ledger, redis, units, "hub-a")  # whatever came after the last pass
    finally:
        await other.close()
    total = await stream_lengths(redis, units)
    assert sum(counts.values()) == total == await count_rows(ledger, tables.events)
    rows = await find_requests(ledger, limit=None)
    assert len(rows) == 30
    assert {r["state"] for r in rows} == {"accepted", "on_scene", "resolved"}
    for unit in units:
        assert await pending(redis, unit) == 0


async def test_consume_loops_in_two_processes_record_everything(
    redis: Redis, database_url: str, ledger: Ledger
) -> None:
    other = await Ledger.open(database_url)
    units = ["water", "power"]
    loops = [
        asyncio.create_task(ledger.consume(redis, lambda: units, "hub-a", block_ms=20)),
        asyncio.create_task(other.consume(redis, lambda: units, "hub-b", block_ms=20)),
    ]
    try:
        desk = Desk(redis)
        for i in range(10):
            await desk.handle(units[i % 2], await desk.receive(units[i % 2], "x"))
        total = await stream_lengths(redis, units)

        async def all_recorded() -> bool:
            return await count_rows(ledger, tables.events) == total

        await eventually(all_recorded)
        assert [await pending(redis, u) for u in units] == [0, 0]
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await other.close()
    assert all(loop.cancelled() for loop in loops)  # cancelled, never crashed
    assert {r["state"] for r in await find_requests(ledger)} == {"resolved"}


async def test_database_failure_is_retried_and_nothing_uncommitted_is_acked(
    redis: Redis, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    async with ledger.engine.begin() as conn:
        await conn.execute(text("DROP TABLE events"))  # every write now fails
    desk = Desk(redis)
    await desk.handle("water", await desk.receive())
    loop = asyncio.create_task(ledger.consume(redis, lambda: ["water"], "hub-a", block_ms=20))
    try:
        with caplog.at_level(logging.WARNING, logger="server.ledger.writer"):

            async def failed_twice() -> bool:
                return sum("ledger pass failed" in r.message for r in caplog.records) >= 2

            await eventually(failed_twice)
        assert not loop.done()
        assert await pending(redis, "water") == 7  # read, not committed: not acknowledged
        assert await count_rows(ledger, tables.requests) == 0  # the transaction rolled back

        async with ledger.engine.begin() as conn:  # the database is back
            await conn.run_sync(tables.metadata.create_all)

        async def caught_up() -> bool:
            return await pending(redis, "water") == 0

        await eventually(caught_up)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    assert await count_rows(ledger, tables.events) == 7
    assert [r["state"] for r in await find_requests(ledger)] == ["resolved"]


async def test_redis_restart_is_survived(ledger: Ledger, tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    client = Redis.from_url(server.url)
    loop = asyncio.create_task(ledger.consume(client, lambda: ["water"], "hub-a", block_ms=20))
    try:
        desk = Desk(client)
        await desk.handle("water", await desk.receive())

        def recorded(n: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return await count_rows(ledger, tables.events) == n

            return check

        await eventually(recorded(7))
        server.stop()
        await asyncio.sleep(0.5)  # the loop meets a closed port for a while
        assert not loop.done()
        server = EmbeddedRedis(tmp_path / "redis", port=server.port).start()  # AOF kept
        await desk.handle("water", await desk.receive(), upto="accept")
        await eventually(recorded(11))
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await client.aclose()
        server.stop()
    assert {r["state"] for r in await find_requests(ledger)} == {"resolved", "accepted"}


async def test_idle_consumers_holding_nothing_are_forgotten(
    redis: Redis, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    await Desk(redis).receive()
    await drain(ledger, redis, ["water"], "old-hub")
    await drain(ledger, redis, ["water"], "new-hub")
    names = {c["name"] for c in await redis.xinfo_consumers(keys.events("water"), GROUP)}
    assert names >= {b"old-hub", b"new-hub"} or names >= {"old-hub", "new-hub"}
    monkeypatch.setattr(ledger_streams, "FORGET_IDLE_MS", -1)
    await ledger.process_once(redis, ["water"], "new-hub", claim_idle_ms=0)
    names = {c["name"] for c in await redis.xinfo_consumers(keys.events("water"), GROUP)}
    assert names in ({b"new-hub"}, {"new-hub"})


async def test_entries_trimmed_while_pending_are_acknowledged(redis: Redis, ledger: Ledger) -> None:
    """An entry deleted (MAXLEN trimming) while pending has nothing left to record: it is
    acknowledged, not retried forever."""
    rid = await Desk(redis).receive()
    entries = await ledger.read(redis, ["water"], "hub-a")
    await redis.xdel(keys.events("water"), entries[0].stream_id)  # the "received" entry
    restarted = Ledger(ledger.engine)  # a fresh process on the same database
    # 2 on Redis 6.2; Redis 7 drops the deleted entry from the PEL itself (in XAUTOCLAIM).
    assert await drain(restarted, redis, ["water"], "hub-a") in (1, 2)
    assert await pending(redis, "water") == 0
    assert [e["type"] for e in await request_events(ledger, rid)] == ["queued"]


# ---- queries -------------------------------------------------------------------------------


async def _city_of_requests(redis: Redis, ledger: Ledger) -> dict[str, str]:
    """Five requests across units, categories, districts, states and days."""
    desk = Desk(redis)
    day = 86400.0
    t0 = 1_750_000_000.0
    made = {
        "water-xigong-resolved": await desk.receive("water", "water_main_burst", "xigong", at=t0),
        "water-laocheng-queued": await desk.receive(
            "water", "water_outage", "laocheng", at=t0 + day
        ),
        "power-xigong-accepted": await desk.receive(
            "power", "power_outage", "xigong", at=t0 + 2 * day
        ),
        "power-chanhe-queued": await desk.receive(
            "power", "power_line_down", "chanhe", at=t0 + 3 * day
        ),
        "police-transferred": await desk.receive(
            category="police", district="xigong", route="police", at=t0 + 4 * day
        ),
    }
    await desk.handle("water", made["water-xigong-resolved"], start=t0 + 10)
    await desk.handle("power", made["power-xigong-accepted"], upto="accept", start=t0 + 2 * day)
    await desk.step("water", made["water-laocheng-queued"], Offered("S9", "A9"), t0 + day + 1)
    await desk.step("water", made["water-laocheng-queued"], OfferExpired("A9"), t0 + day + 61)
    await drain(ledger, redis, ["water", "power"])
    return made


async def test_find_requests_filters(redis: Redis, ledger: Ledger) -> None:
    made = await _city_of_requests(redis, ledger)
    t0, day = 1_750_000_000.0, 86400.0

    async def ids(**filters: Any) -> list[str]:
        return [r["id"] for r in await find_requests(ledger, **filters)]

    def named(*names: str) -> list[str]:
        return [made[n] for n in names]

    assert await ids() == named(*made)  # oldest received first
    assert await ids(unit="water") == named("water-xigong-resolved", "water-laocheng-queued")
    assert await ids(unit=keys.NO_UNIT) == named("police-transferred")
    assert await ids(category="power_outage") == named("power-xigong-accepted")
    assert await ids(district="xigong") == named(
        "water-xigong-resolved", "power-xigong-accepted", "police-transferred"
    )
    assert await ids(state="queued") == named("water-laocheng-queued", "power-chanhe-queued")
    assert await ids(state=["accepted", "resolved"]) == named(
        "water-xigong-resolved", "power-xigong-accepted"
    )
    assert await ids(since=t0 + day, until=t0 + 3 * day) == named(
        "water-laocheng-queued", "power-xigong-accepted"
    )
    assert await ids(unit="power", district="xigong", state="accepted") == named(
        "power-xigong-accepted"
    )
    assert await ids(limit=2, offset=1) == named("water-laocheng-queued", "power-xigong-accepted")
    assert await ids(unit="gas") == []
    [expired] = await find_requests(ledger, state="queued", unit="water")
    assert expired["squad"] is None  # the offer expired: no squad holds it


async def test_export_csv_has_a_header_and_one_row_per_request(
    redis: Redis, ledger: Ledger
) -> None:
    made = await _city_of_requests(redis, ledger)
    exported = await export_csv(ledger)
    assert exported.startswith("\ufeff")  # the BOM: spreadsheets read the Chinese as UTF-8
    rows = list(csv.reader(io.StringIO(exported.removeprefix("\ufeff"))))
    assert rows[0] == list(tables.REQUEST_COLUMNS)
    assert [r[0] for r in rows[1:]] == list(made.values())
    water_csv = (await export_csv(ledger, unit="water")).removeprefix("\ufeff")
    water = list(csv.DictReader(io.StringIO(water_csv)))
    assert [(r["id"], r["state"]) for r in water] == [
        (made["water-xigong-resolved"], "resolved"),
        (made["water-laocheng-queued"], "queued"),
    ]


# ---- one request per id, whatever Redis forgets ------------------------------------------


async def _drain_after_flush(ledger: Ledger, redis: Redis) -> None:
    """Record everything; the first pass after a FLUSHDB only finds the group gone."""
    for _ in range(3):
        await drain(ledger, redis, ["water"])


async def test_request_numbers_resume_from_the_ledger_when_redis_starts_empty(
    redis: Redis, ledger: Ledger
) -> None:
    desk = Desk(redis, ledger)
    earlier = [await desk.receive() for _ in range(3)]
    await _drain_after_flush(ledger, redis)
    await redis.flushdb()  # Redis lost everything; the ledger remembers
    restarted = Desk(redis, ledger)  # as a hub process would start again
    after = await asyncio.gather(*(restarted.store.next_id() for _ in range(5)))
    day, last = ids.parse_request_id(earlier[-1]) or ("", 0)
    numbers = sorted(ids.parse_request_id(i) or ("", 0) for i in after)
    assert not set(after) & set(earlier) and len(set(after)) == 5
    assert {d for d, _ in numbers} == {day}
    # The recovered sequence skips the margin, from a round number (the first Redis started
    # empty too: 1001, 1002, 1003, then 3001 ...).
    assert [n for _, n in earlier_numbers(earlier)] == [1001, 1002, 1003]
    assert [n for _, n in numbers] == [3001, 3002, 3003, 3004, 3005]
    assert numbers[0][1] > last + ids.RECOVERY_MARGIN


def earlier_numbers(request_ids: list[str]) -> list[tuple[str, int]]:
    return [ids.parse_request_id(i) or ("", 0) for i in request_ids]


async def test_a_second_request_under_a_recorded_id_is_refused_loudly(
    redis: Redis, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    desk = Desk(redis)
    t0 = time.time() - 600
    rid = await desk.receive(at=t0)
    await desk.handle("water", rid, upto="accept", start=t0)
    await _drain_after_flush(ledger, redis)
    [before] = await find_requests(ledger)
    history = [e["type"] for e in await request_events(ledger, rid)]
    assert (before["state"], history[-1]) == ("accepted", "accepted")

    # Redis loses its data and hands the same number out again (a ledger that lagged far
    # behind): a different request, in another district, under the same id.
    await redis.flushdb()
    caplog.set_level(logging.ERROR, logger="server.ledger.writer")
    await desk.receive(district="laocheng", at=t0 + 300, request_id=rid)
    await desk.step("water", rid, Offered("S-other", "A-other"), t0 + 301)
    await _drain_after_flush(ledger, redis)

    [after] = await find_requests(ledger)
    assert after == before  # the row is the first request's, untouched (its hash neither)
    assert [e["type"] for e in await request_events(ledger, rid)] == history
    refused = await request_conflicts(ledger, rid)
    assert [(e["type"], e["data"]["request"]) for e in refused] == [
        ("received", rid),
        ("queued", rid),
        ("offered", rid),
    ]
    assert [e["received_at"] for e in refused] == pytest.approx([t0 + 300] * 3, abs=0.01)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and rid in r.getMessage()]
    assert len(errors) == 1 and "conflicts" in errors[0].getMessage()

    # The newcomer's later events go the same way, without another error for the id.
    await desk.step("water", rid, SquadStep("accept", "A-other"), t0 + 302)
    await _drain_after_flush(ledger, redis)
    assert [e["type"] for e in await request_conflicts(ledger, rid)][-1] == "accepted"
    assert (await find_requests(ledger))[0] == before
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1


def test_a_reassignment_moves_the_row_to_the_new_unit_and_received_counts_once() -> None:
    disputed = _entry(11, {"type": "disputed", "request": "R1", "at": 510.0, "squad": "S2"})
    moved = _entry(
        12,
        {
            "type": "reassigned",
            "request": "R1",
            "at": 520.0,
            "unit": "gas",
            "category": "gas_leak_smell",
            "from_unit": "water",
        },
    )
    arrived_in = parse_entry(
        "gas",
        "1700000000001-0",
        {"e": json.dumps({"type": "reassigned_in", "request": "R1", "at": 520.5, "unit": "gas"})},
    )
    offered = parse_entry(
        "gas",
        "1700000000002-0",
        {"e": json.dumps({"type": "offered", "request": "R1", "at": 521.0, "squad": "G1"})},
    )
    assert arrived_in is not None and offered is not None
    events = [*LIFECYCLE[:6], disputed, moved, arrived_in, offered]
    row = fold("R1", "water", None, events, None)
    assert (row["unit"], row["category"]) == ("gas", "gas_leak_smell")
    assert (row["state"], row["squad"]) == ("offered", "G1")
    # The new unit's events first, the old unit's ruling later: the state stays the newest,
    # and the versioned hash of the new unit says where the request is.
    late = fold(
        "R1",
        "water",
        fold("R1", "water", None, [*LIFECYCLE[:6], offered], None),
        [disputed, moved],
        {"v": "9", "unit": "gas"},
    )
    assert (late["unit"], late["state"]) == ("gas", "offered")
    # One ``received`` only: the move is not a second request under the same id.
    split = attribute(None, [], events)
    assert split.refused == [] and split.newcomers == []


async def test_text_with_nul_characters_does_not_stop_the_ledger(
    redis: Redis, ledger: Ledger
) -> None:
    """PostgreSQL's text takes no NUL character: a squad's note with one (the phone protocol
    lets any text through) must still be recorded, or every later event of the stream would
    wait behind it for good. The ledger keeps the text without its NULs."""
    desk = Desk(redis)
    start = time.time()
    rid = await desk.receive(at=start)
    await desk.handle("water", rid, upto="arrive", start=start)
    # the promise's reason reaches the center's record from the event itself (the actions
    # table), the resolve note from the request's hash too
    promise = Deferred(f"A-{rid}", start + 7200, "parts\x00 on order")
    await desk.step("water", rid, promise, start + 4)
    await desk.step("water", rid, SquadStep("resolve", f"A-{rid}", note="va\x00lve"), start + 5)
    assert await ledger.process_once(redis, ["water"]) == 8
    [row] = await find_requests(ledger, unit="water")
    assert (row["state"], row["result"]) == ("resolved", "valve")
    history = await request_events(ledger, rid)
    assert history[-1]["data"]["note"] in ("valve", "va\x00lve")
    assert await pending(redis, "water") == 0
