"""``Dispatcher.drain_soon`` folds calls: a reconnect storm makes one per squad (10,000) over
a dozen units, and each used to start a task and a read of the unit's queue.

Pure: the drain itself is replaced by a recorder; what is tested is when it runs.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from server.assign.dispatcher import Dispatcher
from server.settings import load_settings


def _dispatcher() -> tuple[Dispatcher, list[tuple[str, float]]]:
    dispatcher = Dispatcher(None, None, None, load_settings(env={}), None)  # type: ignore[arg-type]
    ran: list[tuple[str, float]] = []

    async def drain(unit: str, limit: int = 200) -> int:
        ran.append((unit, time.monotonic()))
        await asyncio.sleep(0)
        return 0

    dispatcher.drain = drain  # type: ignore[method-assign]
    return dispatcher, ran


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_calls_before_a_drain_reads_the_queue_are_one_drain_per_unit():
    dispatcher, ran = _dispatcher()
    for _ in range(1000):
        dispatcher.drain_soon("water")
    dispatcher.drain_soon("power")
    await _settle()
    assert sorted(unit for unit, _ in ran) == ["power", "water"]
    # Once that drain has run, a new call is a new drain: nothing is folded into the past.
    dispatcher.drain_soon("water")
    await _settle()
    assert [unit for unit, _ in ran].count("water") == 2


async def test_a_delayed_call_while_a_delayed_drain_sleeps_gets_a_drain_after_its_own_delay():
    dispatcher, ran = _dispatcher()
    delay = 0.05
    dispatcher.drain_soon("water", after_s=delay)
    await asyncio.sleep(delay / 2)
    second_call = time.monotonic()
    for _ in range(100):
        dispatcher.drain_soon("water", after_s=delay)
    await asyncio.sleep(delay * 4)
    assert len(ran) == 2  # the first sleeper's drain, and one more for the folded calls
    assert ran[1][1] >= second_call + delay  # their fixes had time to reach Redis
    dispatcher.drain_soon("water", after_s=delay)  # nothing asleep now: a drain of its own
    await asyncio.sleep(delay * 3)
    assert len(ran) == 3


async def test_a_background_drain_with_redis_away_gives_up_quietly_and_others_still_fail(
    caplog: pytest.LogCaptureFixture,
):
    """The queue sweep moves the queue once Redis is back, so a drain that meets an outage
    logs no error; any other failure still does (Background logs it)."""
    dispatcher, _ = _dispatcher()
    failures = iter([RedisConnectionError("refused"), ValueError("a bug")])

    async def drain(unit: str, limit: int = 200) -> int:
        raise next(failures)

    dispatcher.drain = drain  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        dispatcher.drain_soon("water")
        await _settle()
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
        dispatcher.drain_soon("water")
        await _settle()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "a bug" in str(errors[0].exc_info[1])
