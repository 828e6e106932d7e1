"""Request numbers: readable, dated by the city's day, and never given out twice, even by a
Redis that lost its data beside an existing ledger."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from server import ids
from server.ledger.fold import LedgerEvent, attribute, parse_entry
from server.store import keys
from server.store.requests import RequestStore
from server.store.scripts import Scripts
from tests.helpers import XIGONG, Api, auth, eventually

SHANGHAI = ZoneInfo("Asia/Shanghai")

# ---- pure: the format and the recovery rule -------------------------------------------------


def test_numbers_carry_the_citys_date_and_a_sequence() -> None:
    # 16:30 UTC on 29 November is 00:30 on the 30th in Luoyang.
    at = datetime(2026, 11, 29, 16, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    assert ids.local_day(at, SHANGHAI) == "20261130"
    assert ids.local_day(at, ZoneInfo("UTC")) == "20261129"
    assert ids.request_id("20261130", 123) == "20261130-000123"
    assert ids.request_id("20261130", 1_234_567) == "20261130-1234567"
    assert ids.parse_request_id("20261130-000123") == ("20261130", 123)
    assert ids.parse_request_id("20261130-1234567") == ("20261130", 1_234_567)
    for other in ("R00000001", "20261130-12", "2026113-000001", "20261130-000001x", ""):
        assert ids.parse_request_id(other) is None
    low, high = ids.day_bounds("20261130")
    assert low <= "20261130-000001" < high and low <= "20261130-1234567" < high
    assert not low <= "20261201-000001" < high and not low <= "20261129-999999" < high


def test_a_recovered_sequence_skips_the_margin_to_a_round_number() -> None:
    # (start if this Redis counted before, start if it started empty)
    assert ids.sequence_starts(0) == (0, 1000)  # a new day / an empty Redis
    assert ids.sequence_starts(1) == (2000, 2000)
    assert ids.sequence_starts(999) == (2000, 2000)
    assert ids.sequence_starts(1000) == (2000, 2000)
    assert ids.sequence_starts(1001) == (3000, 3000)
    for highest in range(1, 5000, 7):
        start = ids.sequence_starts(highest)[1]
        assert start % 1000 == 0 and start >= highest + ids.RECOVERY_MARGIN


# ---- pure: which request an event under a reused id belongs to -----------------------------


def _event(n: int, kind: str, at: float, **extra: Any) -> LedgerEvent:
    payload = {"type": kind, "request": "20261130-000001", "at": at, **extra}
    event = parse_entry("water", f"1700000000000-{n}", {"e": json.dumps(payload)})
    assert event is not None
    return event


FIRST = [
    _event(0, "received", 100.0),
    _event(1, "queued", 100.0),
    _event(2, "offered", 101.0),
    _event(3, "accepted", 110.0),
]
SECOND = [_event(10, "received", 500.0), _event(11, "queued", 500.0), _event(12, "offered", 501.0)]


def test_events_of_a_second_request_under_an_id_are_refused() -> None:
    split = attribute(None, [], FIRST + SECOND)  # one batch: the first received names the row
    assert split.received_at == 100.0
    assert split.own == FIRST
    assert split.refused == [(e, 500.0) for e in SECOND]
    assert split.newcomers == [500.0]
    # The same split when the row is already recorded (snapshot precision) and the second
    # request's events arrive in two batches.
    first_batch = attribute(100.0004, [], SECOND[:1])
    assert first_batch.own == [] and first_batch.newcomers == [500.0]
    later = attribute(100.0004, [500.0], SECOND[1:] + [_event(4, "en_route", 120.0)])
    assert [e.type for e in later.own] == ["en_route"]  # before the newcomer: the row's
    assert later.refused == [(e, 500.0) for e in SECOND[1:]] and later.newcomers == []


def test_a_hash_of_another_request_is_not_the_rows() -> None:
    split = attribute(100.0, [], FIRST)
    assert split.owns({"received_at": "100.00031", "v": "3"})
    assert not split.owns({"received_at": "500.0", "v": "1"})
    assert split.owns(None) and split.owns({"v": "1"})


def test_a_request_alone_is_all_its_own() -> None:
    split = attribute(None, [], FIRST)
    assert (split.own, split.refused, split.newcomers) == (FIRST, [], [])
    assert attribute(None, [], FIRST[1:]).own == FIRST[1:]  # its received not seen yet


# ---- sequence.lua against a real Redis ------------------------------------------------------


async def test_the_day_counter_starts_once_whoever_asks_first(redis: Redis) -> None:
    script = Scripts.register(redis).sequence
    counter = [keys.request_sequence("20261130"), keys.sequence_marker()]
    assert await script(keys=counter, args=["", "", 60]) is None  # missing: ask the ledger
    # Concurrent processes recovered different starts (their ledgers lagged differently):
    # the first to create the counter wins, the others just count on.
    numbers = await asyncio.gather(
        *(script(keys=counter, args=[0, start, 60]) for start in (1000, 2000, 3000))
    )
    assert sorted(numbers) == [numbers[0], numbers[0] + 1, numbers[0] + 2]
    assert numbers[0] in (1001, 2001, 3001)  # this Redis had never counted: the margin
    assert await script(keys=counter, args=["", "", 60]) == numbers[0] + 3
    assert 0 < await redis.ttl(keys.request_sequence("20261130")) <= 60
    # The next day, on the same Redis: it counted before, so a day the ledger has no
    # number of starts at 1.
    tomorrow = [keys.request_sequence("20261201"), keys.sequence_marker()]
    assert await script(keys=tomorrow, args=[0, 1000, 60]) == 1


# ---- a real hub, stopped, its Redis emptied, started again ----------------------------------


async def test_a_redis_started_empty_beside_the_ledger_never_reuses_a_number(
    hubs, redis: Redis
) -> None:
    hub = hubs.start()
    api = Api(hub)
    earlier = [(await api.request(*XIGONG))["id"] for _ in range(3)]

    async def recorded() -> bool:
        response = await api.http.get("/api/v1/ledger/requests", headers=auth("center"))
        return sorted(row["id"] for row in response.json()) == sorted(earlier)

    await eventually(recorded)
    await api.close()
    hub.stop()
    await redis.flushdb()  # the same data dir (and SQLite ledger), an empty Redis

    hub = hubs.start()
    api = Api(hub)
    later = (await api.request(*XIGONG))["id"]
    assert later not in earlier and later > max(earlier)
    day, number = ids.parse_request_id(later) or ("", 0)
    before = [ids.parse_request_id(i) or ("", 0) for i in earlier]
    if day == before[-1][0]:  # (not across midnight in Luoyang)
        assert number >= max(n for _, n in before) + ids.RECOVERY_MARGIN
    assert (await api.get_request(later))["state"] in ("queued", "offered")
    await api.close()


async def test_numbers_are_given_out_while_the_ledger_does_not_answer(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async def unreachable(day: str) -> int:
        raise ConnectionRefusedError("the database is down")

    store = RequestStore(
        redis,
        Scripts.register(redis),
        events_maxlen=100,
        command_memory_s=60,
        outbox_max_frames=100,
        zone=SHANGHAI,
        highest_recorded=unreachable,
    )
    await redis.set(keys.sequence_marker(), "1")  # this Redis counted before: a new day
    first = await store.next_id()
    assert ids.parse_request_id(first) == (ids.local_day(time.time(), SHANGHAI), 1)
    assert "the ledger did not answer" in caplog.text
    assert ids.parse_request_id(await store.next_id()) == (first[:8], 2)  # counted on


async def test_a_process_takes_numbers_in_blocks_and_hands_them_out_itself(redis: Redis) -> None:
    scripts = Scripts.register(redis)
    counter = [keys.request_sequence("20261130"), keys.sequence_marker()]
    await redis.set(keys.sequence_marker(), "1")
    assert await scripts.sequence(keys=counter, args=[0, 1000, 60, 50]) == 50  # 1..50 taken

    def store() -> RequestStore:
        return RequestStore(
            redis,
            scripts,
            events_maxlen=100,
            command_memory_s=60,
            outbox_max_frames=100,
            zone=SHANGHAI,
            id_block=10,
        )

    one, two = store(), store()
    day = ids.local_day(time.time(), SHANGHAI)
    await redis.delete(counter[0])
    await redis.set(keys.request_sequence(day), 100)
    got = [await one.next_id() for _ in range(3)] + [await two.next_id() for _ in range(3)]
    got += await asyncio.gather(*(one.next_id() for _ in range(12)))
    numbers = [(ids.parse_request_id(i) or ("", 0))[1] for i in got]
    assert numbers[:6] == [101, 102, 103, 111, 112, 113]  # each process its own block
    assert len(set(numbers)) == len(numbers)  # unique, however concurrent
    assert int(await redis.get(keys.request_sequence(day)) or 0) == 130  # 3 blocks taken
