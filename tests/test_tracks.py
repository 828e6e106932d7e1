"""Squads' tracks (server/store/tracks.py, track.lua): samples of the positions of squads
holding work, capped and expiring; on real Redis. The segments of a request's holds are pure.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from server.api.console import MAX_SEGMENTS, hold_segments
from server.store import keys
from server.store.embedded import free_port
from server.store.positions import PositionWriter
from server.store.scripts import Scripts
from server.store.tracks import TrackRecorder, last_points, track_between
from tests.helpers import eventually


async def _busy(redis: Redis, unit: str, squad: str) -> None:
    await redis.sadd(keys.jobs(unit, squad), "A1")


# ---- the script --------------------------------------------------------------------------


async def test_track_script_appends_only_for_squads_holding_work(redis: Redis) -> None:
    scripts = Scripts.register(redis)
    await _busy(redis, "water", "S1")
    call_keys = [
        keys.jobs("water", "S1"),
        keys.track("water", "S1"),
        keys.jobs("water", "S2"),
        keys.track("water", "S2"),
    ]
    appended = await scripts.track(keys=call_keys, args=[100, 3600, "34.67,112.44", "34.68,112.45"])
    assert appended == 1
    entries = await redis.xrange(keys.track("water", "S1"))
    assert [{k.decode(): v.decode() for k, v in e[1].items()} for e in entries] == [
        {"p": "34.67,112.44"}
    ]
    assert 3500 < await redis.ttl(keys.track("water", "S1")) <= 3600
    assert not await redis.exists(keys.track("water", "S2"))  # idle: nothing kept


async def test_track_script_keeps_a_bounded_track(redis: Redis) -> None:
    scripts = Scripts.register(redis)
    await _busy(redis, "water", "S1")
    call_keys = [keys.jobs("water", "S1"), keys.track("water", "S1")]
    for i in range(400):
        await scripts.track(keys=call_keys, args=[10, 60, f"{34.0 + i / 1000:.3f},112.0"])
    # MAXLEN ~ trims whole stream nodes (100 entries each by default): about the cap.
    assert await redis.xlen(keys.track("water", "S1")) <= 10 + 100
    newest = await redis.xrevrange(keys.track("water", "S1"), count=1)
    assert newest[0][1][b"p"] == b"34.399,112.0"


# ---- the recorder ------------------------------------------------------------------------


async def test_the_recorder_samples_a_squad_at_most_once_per_interval(redis: Redis) -> None:
    recorder = TrackRecorder(redis, interval_s=10, keep_points=100, keep_s=60, write_every_s=0)
    await _busy(redis, "water", "S1")
    for at in (1000.0, 1005.0, 1010.0, 1012.0, 1025.0):
        recorder.record({"water": {"S1": (112.0, at / 1000, at), "S2": (112.0, 1, at)}})
        await recorder.write_now()
    points = await track_between(redis, "water", "S1", 0, 1e11, 100)
    assert [p[0] for p in points] == [1.0, 1.01, 1.025]  # lat carried the fix time here
    assert recorder.appended == 3  # S2 holds no work: its samples are dropped by Redis
    assert not await redis.exists(keys.track("water", "S2"))


async def test_the_recorder_writes_by_itself_at_most_once_per_write_interval(
    redis: Redis,
) -> None:
    recorder = TrackRecorder(redis, interval_s=1, keep_points=100, keep_s=60, write_every_s=0.3)
    await _busy(redis, "water", "S1")
    recorder.record({"water": {"S1": (112.0, 34.0, 1.0)}})  # the first write goes out at once
    await eventually(lambda: redis.exists(keys.track("water", "S1")), timeout_s=2)
    recorder.record({"water": {"S1": (112.0, 34.1, 2.0)}})  # then after the write interval,
    recorder.record({"water": {"S1": (112.0, 34.2, 3.0)}})  # the newest sample of the squad
    assert await redis.xlen(keys.track("water", "S1")) == 1

    async def both() -> bool:
        return bool(await redis.xlen(keys.track("water", "S1")) == 2)

    await eventually(both, timeout_s=2)
    assert [p[0] for p in await track_between(redis, "water", "S1", 0, 1e11, 10)] == [34.0, 34.2]


async def test_a_failing_redis_never_makes_recording_raise() -> None:
    # No retries: the client's own backoff (seconds) is not what this test is about.
    dead = Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    recorder = TrackRecorder(dead, interval_s=1, keep_points=10, keep_s=60, write_every_s=0)
    recorder.record({"water": {"S1": (112.0, 34.0, 1.0)}})
    await recorder.write_now()  # logged, not raised
    assert recorder.appended == 0
    await dead.aclose()


async def test_the_position_flush_records_tracks_of_squads_holding_work(redis: Redis) -> None:
    recorder = TrackRecorder(redis, interval_s=0.001, keep_points=100, keep_s=60, write_every_s=0)
    writer = PositionWriter(redis, 0.01, recorder)
    await _busy(redis, "water", "S1")
    writer.add("water", "S1", 34.67, 112.44, 1.0)
    writer.add("water", "S2", 34.68, 112.45, 1.0)
    assert await writer.flush() == 2
    await recorder.write_now()
    (lat, lon, at), *_ = await track_between(redis, "water", "S1", 0, 1e11, 10)
    assert (lat, lon) == (34.67, 112.44) and at > 1e9  # the stream id: Redis's clock
    assert await last_points(redis, [("water", "S1"), ("water", "S2")]) == [(lat, lon, at), None]


async def test_track_between_reads_a_time_range_newest_first_within_the_limit(
    redis: Redis,
) -> None:
    stream = keys.track("water", "S1")
    for second in range(1, 11):
        await redis.xadd(stream, {"p": f"{second},112"}, id=f"{second * 1000}-0")
    points = await track_between(redis, "water", "S1", 3, 8, 100)
    assert [p[2] for p in points] == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    newest = await track_between(redis, "water", "S1", 0, 100, 3)
    assert [p[2] for p in newest] == [8.0, 9.0, 10.0]  # oldest first, the newest 3


# ---- a request's holds (pure) --------------------------------------------------------------


def _event(kind: str, at: float, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "at": at, "request": "20260101-000001", **extra}


def test_hold_segments_follow_the_squads_that_held_the_request() -> None:
    timeline = [
        _event("received", 1),
        _event("queued", 1),
        _event("offered", 2, squad="S1"),
        _event("offer_expired", 3, squad="S1"),
        _event("offered", 4, squad="S2"),
        _event("accepted", 5, squad="S2"),
        _event("notice_issued", 6, squad="S2"),
        _event("squad_offline", 6.5, squad="S2"),
        _event("en_route", 7, squad="S2"),
        _event("disputed", 8, squad="S2"),
        _event("upheld", 9),
        _event("offered", 10, squad="S2"),
        _event("accepted", 11, squad="S2"),
        _event("note", 12),
    ]
    assert hold_segments(timeline, now=20) == [("S1", 2, 3), ("S2", 4, 8), ("S2", 10, 20)]
    resolved = [*timeline, _event("resolved", 15, squad="S2")]
    assert hold_segments(resolved, now=20)[-1] == ("S2", 10, 15)


def test_hold_segments_are_bounded() -> None:
    timeline = []
    for i in range(3 * MAX_SEGMENTS):
        timeline += [_event("offered", 2 * i, squad=f"S{i}"), _event("offer_expired", 2 * i + 1)]
    segments = hold_segments(timeline, now=1e6)
    assert len(segments) == MAX_SEGMENTS and segments[-1][0] == f"S{3 * MAX_SEGMENTS - 1}"
