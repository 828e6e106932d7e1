"""Benchmark: how many events per second the ledger writer records, from a backlog.

    python -m tools.ledger_bench [--requests 20000] [--database sqlite|postgresql|URL]
                                 [--consumers 1]

Seeds ``--requests`` requests into an embedded Redis with the server's own store and
lifecycle (received, queued, offered, accepted, en route, arrived, resolved: 7 events each,
spread over the city's units; one in ten also gets a center note and a cancellation instead
of the last steps, so the center's record is written too), with no writer running. Then
opens a fresh ledger (SQLite file in a temporary folder, or a fresh PostgreSQL database on
127.0.0.1:5432, dropped afterwards) and times ``--consumers`` writers (``Ledger.consume``,
as a hub or ``python -m server.ledger`` runs it) until every entry is committed: the rate
is the writer's ceiling (under a live load it records as fast as events come; see
``report["ledger"]`` of ``python -m tools.loadtest``). Then times a start on the filled
ledger (the migration check) and the upgrade of the same ledger taken back to the previous
release's schema (migration 0002 replays the center's record from the events).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from alembic import command
from redis.asyncio import Redis
from sqlalchemy import func, select

from server.city import load_city
from server.ledger import Ledger, default_database_url, migrate, tables
from server.lifecycle import (
    Cancelled,
    Event,
    Offered,
    RequestView,
    SquadStep,
    State,
    Triaged,
    transition,
)
from server.store.embedded import EmbeddedRedis
from server.store.requests import Actor, RequestStore, event_json
from server.store.scripts import Scripts
from tools.loadtest.ledger_lag import catch_up_s, stream_entries

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
CALLTAKER, CENTER = Actor("calltaker", "bench"), Actor("center", "bench")
CONCURRENT = 64  # requests seeded at once


async def _seed(redis: Redis, count: int, first: int = 0) -> None:
    city = load_city()
    units = [(u.code, u.categories[0], u.districts[0]) for u in city.units if u.categories]
    store = RequestStore(
        redis,
        Scripts.register(redis),
        events_maxlen=10_000_000,
        command_memory_s=60,
        outbox_max_frames=100,
        zone=ZoneInfo(city.zone.key),
    )
    limit = asyncio.Semaphore(CONCURRENT)

    async def one(n: int) -> None:
        unit, category, district = units[n % len(units)]
        request_id = f"20991231-{n + 1:06d}"
        async with limit:
            await _request(store, unit, category, district, request_id, center=n % 10 == 0)

    await asyncio.gather(*(one(n) for n in range(first, first + count)))


async def _request(
    store: RequestStore, unit: str, category: str, district: str, request_id: str, center: bool
) -> None:
    now = time.time()
    fields = {
        "id": request_id,
        "category": category,
        "description": "bench",
        "lat": "34.67",
        "lon": "112.445",
        "address": "bench",
        "caller_phone": "13800000000",
        "district": district,
        "unit": unit,
        "route": "linkage",
        "received_at": repr(now),
        "accept_by": repr(now + 300),
        "arrive_by": repr(now + 1800),
        "resolve_by": repr(now + 86400),
    }
    step = transition(RequestView(State.RECEIVED), Triaged("linkage"))
    fields |= step.fields | {"state": step.state.value}
    events = [
        event_json("received", request_id, now, CALLTAKER, category=category, unit=unit),
        event_json(step.event, request_id, now, CALLTAKER, route="linkage"),
    ]
    await store.create(request_id, unit, fields, events, step, received_at=now)
    assignment, squad = f"A-{request_id}", f"S-{unit}"
    steps: list[Event] = [Offered(squad, assignment)]
    if center:
        await store.note(unit, request_id, event_json("note", request_id, now, CENTER, note="x"))
        steps.append(Cancelled("withdrawn"))
    else:
        kinds = ("accept", "enroute", "arrive", "resolve")
        steps += [SquadStep(kind, assignment) for kind in kinds]
    for event in steps:
        record = await store.read(unit, request_id)
        assert record is not None
        done = transition(record.view(), event)
        actor = CENTER if isinstance(event, Cancelled) else Actor("squad", squad)
        recorded = event_json(
            done.event,
            request_id,
            time.time(),
            actor,
            squad=squad,
            assignment=assignment,
            reason=getattr(event, "reason", ""),
        )
        await store.commit(
            unit, request_id, record.v, done, [recorded], assignment=assignment, squad=squad
        )


async def _database(kind: str, folder: Path) -> tuple[str, str | None]:
    """(URL, PostgreSQL database to drop afterwards)."""
    if kind == "sqlite":
        return default_database_url(folder / "ledger"), None
    if kind != "postgresql":
        return kind, None
    admin = await asyncpg.connect(PG_ADMIN_URL)
    name = f"ledger_bench_{secrets.token_hex(4)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return f"postgresql://postgres@127.0.0.1:5432/{name}", name


async def _drop(name: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def bench(requests: int, database: str, consumers: int) -> dict[str, Any]:
    units = [u.code for u in load_city().units]
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        folder = Path(tmp)
        with EmbeddedRedis(folder / "redis") as server:
            redis = Redis.from_url(server.url)
            started = time.monotonic()
            await _seed(redis, requests)
            seeded_s = time.monotonic() - started
            entries = await stream_entries(redis, units)
            url, dropped = await _database(database, folder)
            ledgers = [await Ledger.open(url) for _ in range(consumers)]
            try:
                started, cpu_started = time.monotonic(), time.process_time()
                loops = [
                    asyncio.create_task(ledger.consume(redis, lambda: units, f"bench-{i}"))
                    for i, ledger in enumerate(ledgers)
                ]
                waited = await catch_up_s(redis, units, timeout_s=3600)
                elapsed = time.monotonic() - started
                cpu_s = time.process_time() - cpu_started
                for loop in loops:
                    loop.cancel()
                await asyncio.gather(*loops, return_exceptions=True)
                async with ledgers[0].engine.connect() as conn:
                    rows = (
                        await conn.execute(select(func.count()).select_from(tables.events))
                    ).scalar_one()
                    actions = (
                        await conn.execute(select(func.count()).select_from(tables.actions))
                    ).scalar_one()
                small = await _small_passes(redis, ledgers[0], units, first=requests)
                for ledger in ledgers:
                    await ledger.close()
                ledgers = []
                open_s = await _timed_open(url)
                upgrade_s = await _timed_upgrade_from_baseline(url)
            finally:
                for ledger in ledgers:
                    await ledger.close()
                await redis.aclose()
                if dropped:
                    await _drop(dropped)
    return {
        "database": database,
        "consumers": consumers,
        "requests": requests,
        "stream_entries": entries,
        "events_recorded": rows,
        "actions_recorded": actions,
        "seed_s": round(seeded_s, 1),
        "drain_s": round(elapsed, 2),
        "events_per_s": round(rows / elapsed, 1),
        # This process (writer and its database thread; not the PostgreSQL server), per event:
        # steadier than the rate on a shared machine.
        "writer_cpu_us_per_event": round(cpu_s / rows * 1e6, 1),
        "caught_up": waited is not None,
        # A live writer's passes: a few events each, so a pass's fixed cost (the reads of
        # every stream, the transaction, the acknowledgement) is most of it.
        **small,
        "open_at_head_s": round(open_s, 3),
        "upgrade_from_previous_release_s": round(upgrade_s, 2),
    }


SMALL_PASS_REQUESTS = 200


async def _small_passes(
    redis: Redis, ledger: Ledger, units: list[str], first: int
) -> dict[str, Any]:
    """CPU per pass when each pass takes at most one entry per stream (as a writer keeping
    up with a live load does, a few events at a time): SMALL_PASS_REQUESTS more requests
    seeded after the drain, then passes of ``batch=1`` until none is left."""
    await _seed(redis, SMALL_PASS_REQUESTS, first=first)
    passes = events = 0
    cpu_started = time.process_time()
    while n := await ledger.process_once(redis, units, "small-passes", batch=1):
        passes += 1
        events += n
    cpu_s = time.process_time() - cpu_started
    return {
        "small_passes": passes,
        "small_pass_events": round(events / max(passes, 1), 1),
        "small_pass_cpu_ms": round(cpu_s / max(passes, 1) * 1e3, 2),
        "small_pass_cpu_us_per_event": round(cpu_s / max(events, 1) * 1e6, 1),
    }


async def _timed_open(url: str) -> float:
    """How long a start takes to open a ledger already at the head (the migration check)."""
    started = time.monotonic()
    ledger = await Ledger.open(url)
    elapsed = time.monotonic() - started
    await ledger.close()
    return elapsed


async def _timed_upgrade_from_baseline(url: str) -> float:
    """Take the filled ledger back to the previous release's schema (revision 0001), then
    time the start that upgrades it (the center's record replayed from its events)."""

    def downgrade(connection: Any) -> None:
        cfg = migrate.config()
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, migrate.BASELINE)

    ledger = await Ledger.open(url)
    async with ledger.engine.begin() as conn:
        await conn.run_sync(downgrade)
    await ledger.close()
    return await _timed_open(url)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.ledger_bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--database", default="sqlite", help="sqlite, postgresql or a URL")
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--out", help="write the report as JSON here too")
    args = parser.parse_args()
    report = asyncio.run(bench(args.requests, args.database, args.consumers))
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
