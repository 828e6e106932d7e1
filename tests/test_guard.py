"""The pure limits of server.guard: buckets, connection counts, bursts, the derived cap; and the
body limit middleware driven in process (no sockets)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from server.guard import (
    FIXED_RESERVE_FDS,
    AddressBuckets,
    Burst,
    ConnectionLedger,
    TokenBucket,
    Verdict,
    default_max_connections,
)
from server.net import BodyLimit

# ---- token buckets ----------------------------------------------------------------------------


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=20.0)
    assert all(bucket.take(100.0) for _ in range(20))
    assert not bucket.take(100.0)
    assert not bucket.take(100.05)  # half a token refilled
    assert bucket.take(100.25) and bucket.take(100.25)  # 2.5 tokens
    assert not bucket.take(100.25)
    assert bucket.available(1000.0) == 20.0  # never above the burst


def test_a_bucket_ignores_a_clock_going_backwards() -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0)
    assert bucket.take(50.0)
    assert not bucket.take(10.0)
    assert not bucket.take(50.5)
    assert bucket.take(51.0)


def test_address_buckets_are_separate_and_spend_reports_what_is_left() -> None:
    buckets = AddressBuckets(rate=10 / 60, burst=10)
    for left in range(9, -1, -1):
        assert buckets.allows("10.0.0.1", 0.0)
        assert buckets.spend("10.0.0.1", 0.0) == left
    assert not buckets.allows("10.0.0.1", 0.0)
    assert buckets.spend("10.0.0.1", 0.0) == 0.0  # never below zero
    assert buckets.allows("10.0.0.2", 0.0)  # another address is untouched
    assert not buckets.allows("10.0.0.1", 5.9)
    assert buckets.allows("10.0.0.1", 6.0)  # one failure per 6 s refills


def test_address_buckets_stay_bounded_forgetting_full_buckets_first() -> None:
    buckets = AddressBuckets(rate=1.0, burst=2.0, max_addresses=3)
    buckets.spend("a", 0.0)
    buckets.spend("b", 0.0, cost=2.0)
    buckets.spend("c", 0.0, cost=2.0)
    buckets.spend("d", 1.0)  # "a" refilled by now: forgotten first
    assert len(buckets) == 3 and buckets.allows("a", 1.0)
    assert not buckets.allows("b", 1.0, cost=2.0)
    buckets.spend("e", 1.0)  # nothing full: the oldest goes
    assert len(buckets) == 3 and buckets.allows("b", 1.0, cost=2.0)


# ---- connections ------------------------------------------------------------------------------


def test_the_ledger_caps_in_total_and_per_address() -> None:
    ledger = ConnectionLedger(max_total=4, max_per_address=2)
    keys = [object() for _ in range(6)]
    assert ledger.admit(keys[0], "a") is Verdict.ADMITTED
    assert ledger.admit(keys[1], "a") is Verdict.ADMITTED
    assert ledger.admit(keys[2], "a") is Verdict.OVER_ADDRESS
    assert ledger.admit(keys[3], "b") is Verdict.ADMITTED
    assert ledger.admit(keys[4], "c") is Verdict.ADMITTED
    assert ledger.admit(keys[5], "d") is Verdict.OVER_TOTAL
    assert (ledger.total, ledger.held_by("a"), ledger.refused) == (4, 2, 2)
    ledger.release(keys[0])
    assert ledger.admit(keys[2], "a") is Verdict.ADMITTED


def test_a_connection_is_counted_once_across_an_upgrade_and_released_once() -> None:
    ledger = ConnectionLedger(max_total=1, max_per_address=0)
    transport = object()
    assert ledger.admit(transport, "a") is Verdict.ADMITTED
    assert ledger.admit(transport, "a") is Verdict.ADMITTED  # the WebSocket protocol, same key
    assert ledger.total == 1
    ledger.release(transport)
    ledger.release(transport)  # both protocols' connection_lost: harmless
    ledger.release(object())  # a refused connection was never counted
    assert ledger.total == 0 and ledger.held_by("a") == 0


def test_zero_per_address_means_no_per_address_cap() -> None:
    ledger = ConnectionLedger(max_total=100, max_per_address=0)
    assert all(ledger.admit(object(), "nat") is Verdict.ADMITTED for _ in range(100))


def test_the_default_cap_leaves_room_for_redis_the_database_and_files() -> None:
    assert default_max_connections(20_000, 64) == 20_000 - 64 - FIXED_RESERVE_FDS
    assert default_max_connections(100, 64) == 16  # never zero
    assert default_max_connections(-1, 64) > 1_000_000 - 200  # RLIM_INFINITY


# ---- bursts -----------------------------------------------------------------------------------


def test_a_burst_reports_the_first_event_then_counts_once_per_period() -> None:
    burst = Burst(every_s=60.0)
    assert burst.note(0.0) == 1
    assert [burst.note(t) for t in (0.01, 0.02, 30.0)] == [0, 0, 0]
    assert burst.note(60.0) == 4  # three held back and this one
    assert burst.note(60.5, events=5) == 0
    assert burst.note(200.0) == 6  # after a quiet minute: at once, with what was held back


# ---- the body limit, in process ----------------------------------------------------------------


async def _call(
    middleware: BodyLimit, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[list[dict[str, Any]], int]:
    """Run the middleware; returns what it sent and how many chunks it read."""
    sent: list[dict[str, Any]] = []
    read = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        more = read < len(chunks)
        return {"type": "http.request", "body": chunks[read - 1], "more_body": more}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    await middleware(scope, receive, send)  # type: ignore[arg-type]
    return sent, read


async def _reading_app(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def _status(sent: list[dict[str, Any]]) -> int:
    return int(sent[0]["status"])


async def test_a_declared_length_above_the_cap_is_refused_before_the_app_reads() -> None:
    middleware = BodyLimit(_reading_app, max_bytes=100)
    sent, read = await _call(middleware, [(b"content-length", b"10000000")], [b"x" * 100])
    assert (_status(sent), read) == (413, 0)
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "too_large"


async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_cap() -> None:
    middleware = BodyLimit(_reading_app, max_bytes=100)
    sent, read = await _call(middleware, [], [b"x" * 60] * 1000)
    assert (_status(sent), read) == (413, 2)
    sent, read = await _call(middleware, [], [b"x" * 50, b"x" * 50])
    assert (_status(sent), sent[1]["body"]) == (200, b"100")


async def test_websockets_pass_through_the_body_limit() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await BodyLimit(app, max_bytes=1)({"type": "websocket"}, None, None)  # type: ignore[arg-type]
    assert seen == ["websocket"]


def test_module_is_importable_without_a_loop() -> None:
    # The guard is pure: nothing in it touches asyncio.
    import server.guard as guard

    assert "asyncio" not in vars(guard)
    assert asyncio.iscoroutinefunction(BodyLimit.__call__)


@pytest.mark.parametrize("bad", [b"abc", b"-"])
async def test_an_unreadable_content_length_is_left_to_the_parser(bad: bytes) -> None:
    sent, _ = await _call(BodyLimit(_reading_app, max_bytes=100), [(b"content-length", bad)], [b""])
    assert _status(sent) == 200
