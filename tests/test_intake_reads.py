"""The intake console's reads against a real Redis and both ledgers (SQLite, PostgreSQL): the
ledger's rows, the live state laid over them, the live requests the ledger has not recorded
yet; and the indexes they use, added to a ledger made before them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import create_async_engine

from server.calltaker.reads import Desk
from server.ledger import tables
from server.ledger.writer import Ledger, async_database_url
from server.store import keys
from tests import ledger_schema_before_migrations as before

NOW = time.time()  # set again at each test's start (below)


@pytest.fixture(autouse=True)
def _now_is_the_tests_start() -> None:
    """The reads look at live requests of the last minutes: times are taken from the test's
    start, not from when the module was imported (20 minutes earlier in the whole suite)."""
    global NOW
    NOW = time.time()


def _row(request_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": request_id,
        "unit": "water",
        "category": "water_main_burst",
        "district": "xigong",
        "route": "linkage",
        "state": "queued",
        "caller_phone": "13800000001",
        "description": "pipe burst",
        "address": "中州中路",
        "lat": 34.67,
        "lon": 112.445,
        "received_at": NOW - 3600,
    } | extra


async def _record(ledger: Ledger, rows: list[dict[str, Any]], by: dict[str, str]) -> None:
    """Rows as the ledger writer leaves them: the request, and its "received" event."""
    async with ledger.engine.begin() as conn:
        await conn.execute(sqlalchemy.insert(tables.requests), rows)
        await conn.execute(
            sqlalchemy.insert(tables.events),
            [
                {
                    "unit": row["unit"],
                    "stream_id": f"{index}-0",
                    "sort_key": f"{index:020d}-0",
                    "request_id": row["id"],
                    "type": "received",
                    "at": row["received_at"],
                    "by": by[row["id"]],
                    "data": "{}",
                }
                for index, row in enumerate(rows, start=1)
            ],
        )


async def test_the_reads_join_the_ledger_and_the_live_state(ledger: Ledger, redis: Redis) -> None:
    rows = [
        _row("r-old", received_at=NOW - 7200, state="resolved"),
        _row("r-new", received_at=NOW - 600),
        _row("r-fire", unit="-", category="fire", route="fire", state="transferred"),
        _row("r-other", caller_phone="13900000009"),
    ]
    by = {"r-old": "calltaker:ann", "r-new": "calltaker:ann", "r-fire": "calltaker:bob"}
    await _record(ledger, rows, by | {"r-other": "calltaker:ann"})
    # The live state moved r-new on; r-live is not in the ledger yet.
    await redis.hset(keys.request("water", "r-new"), mapping={"id": "r-new", "state": "on_scene"})
    live = _row("r-live", received_at=NOW - 5) | {"lat": "34.67", "lon": "112.445"}
    await redis.hset(
        keys.request("water", "r-live"),
        mapping={k: str(v) for k, v in live.items() if k != "unit"},
    )
    await redis.zadd(keys.open_requests("water"), {"r-live": NOW - 5})
    desk = Desk(redis, ledger, lambda: ["water", "power"])

    lines, read = await desk.caller_requests("+8613800000001", limit=10)
    assert read is True
    assert [(line.id, line.state) for line in lines] == [
        ("r-live", "queued"),
        ("r-new", "on_scene"),
        ("r-fire", "transferred"),
        ("r-old", "resolved"),
    ]
    assert lines[2].unit is None and lines[1].unit == "water"
    assert [line.id for line in (await desk.caller_requests("13800000001", limit=2))[0]] == [
        "r-live",
        "r-new",
    ]

    seat, _ = await desk.seat_requests("calltaker:ann", limit=10)
    assert [(line.id, line.state) for line in seat] == [
        ("r-new", "on_scene"),
        ("r-other", "queued"),
        ("r-old", "resolved"),
    ]
    assert [line.id for line in (await desk.seat_requests("calltaker:bob", 10))[0]] == ["r-fire"]

    seen, _ = await desk.duplicate_candidates(
        "water", "water_main_burst", 34.6705, 112.445, 300, since=NOW - 5400
    )
    assert sorted(s.id for s in seen) == ["r-live", "r-new", "r-other"]  # r-old: too old
    on_scene = next(s for s in seen if s.id == "r-new")
    assert on_scene.state == "on_scene"  # the live state wins
    far, _ = await desk.duplicate_candidates(
        "water", "water_main_burst", 34.70, 112.445, 300, since=NOW - 5400
    )
    assert far == []  # 3 km away


async def test_without_a_ledger_the_reads_answer_from_the_live_state(redis: Redis) -> None:
    await redis.hset(
        keys.request("water", "r-live"),
        mapping={
            "id": "r-live",
            "state": "offered",
            "caller_phone": "13800000001",
            "category": "water_outage",
            "received_at": str(NOW),
        },
    )
    await redis.zadd(keys.open_requests("water"), {"r-live": NOW})
    await redis.hset(
        keys.request("water", "r-older"),
        mapping={
            "id": "r-older",
            "state": "queued",
            "caller_phone": "13900000002",
            "category": "water_outage",
            "received_at": str(NOW - 3000),
            "lat": "34.67",
            "lon": "112.445",
        },
    )
    await redis.zadd(keys.open_requests("water"), {"r-older": NOW - 3000})
    desk = Desk(redis, None, lambda: ["water"])
    lines, read = await desk.caller_requests("13800000001", limit=5)
    assert read is False and [(line.id, line.state) for line in lines] == [("r-live", "offered")]
    # Without the ledger the duplicate check reads the unit's open requests of the whole
    # window (r-older is past the ledger's lag), and only those of the category near by.
    seen, read = await desk.duplicate_candidates(
        "water", "water_outage", 34.6701, 112.445, 300, since=NOW - 7200
    )
    assert read is False and [s.id for s in seen] == ["r-older"]


async def test_a_ledger_made_before_the_new_indexes_gets_them(database_url: str) -> None:
    # A ledger of a release before these indexes (and before migrations): the tables only.
    if database_url.startswith("sqlite"):
        Path(database_url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(async_database_url(database_url))
    async with engine.begin() as conn:
        await conn.run_sync(before.metadata.create_all)
        await conn.execute(sqlalchemy.text("DROP INDEX ix_requests_caller_phone"))
        await conn.execute(sqlalchemy.text("DROP INDEX ix_events_by_type_at"))
    await engine.dispose()
    ledger = await Ledger.open(database_url)
    async with ledger.engine.connect() as conn:
        names = await conn.run_sync(
            lambda sync: {
                index["name"]
                for table in (tables.requests.name, tables.events.name)
                for index in sqlalchemy.inspect(sync).get_indexes(table)
            }
        )
    await ledger.close()
    assert {"ix_requests_caller_phone", "ix_events_by_type_at"} <= names
