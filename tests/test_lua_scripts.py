"""Each Lua script of server/store/lua, called directly on a real Redis with the KEYS and ARGV
its header names: what it does to the keys, and its edge cases (a missing key, a wrong owner,
a stale version, a retry). The scripts' callers are tested elsewhere (test_hot_path_scripts,
test_notice_scripts, test_request_ids); here each script stands alone."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from server.store import gauges, keys
from server.store.scripts import Scripts
from tests.conftest import ROOT, skip_on_cluster
from tests.helpers import counted_client

UNIT = "water"
RID = "20261130-000042"
SCENE_LON, SCENE_LAT = 112.45, 34.62


@pytest.fixture
async def scripts(redis: Redis) -> AsyncIterator[Scripts]:
    scripts = Scripts.register(redis)
    await scripts.load(redis)
    yield scripts


def _s(values: Any) -> Any:
    """A reply with bytes as text (lists and dicts too), for comparisons."""
    if isinstance(values, bytes):
        return values.decode()
    if isinstance(values, list):
        return [_s(v) for v in values]
    if isinstance(values, dict):
        return {_s(k): _s(v) for k, v in values.items()}
    return values


def test_every_script_is_registered_and_called_directly_by_a_test() -> None:
    names = {path.stem for path in (ROOT / "server/store/lua").glob("*.lua")}
    assert names == set(Scripts.__dataclass_fields__)
    tests = "".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
    untested = sorted(name for name in names if f"scripts.{name}(" not in tests)
    assert untested == []


# ---- squads: connect, duty, disconnect, ack ------------------------------------------------------

SQUAD = keys.squad(UNIT, "sq")
AVAILABLE = keys.available(UNIT)


JOBS = keys.jobs(UNIT, "sq")
OUTBOX = keys.outbox(UNIT, "sq")
CONNECT_KEYS = [SQUAD, AVAILABLE, JOBS, OUTBOX]
TOKEN_HASH = "ab" * 32


def _hello(hub: str, conn: str, last_seq: int = 0, token_hash: str = TOKEN_HASH) -> list[Any]:
    return ["sq", hub, conn, token_hash, last_seq, keys.assignment(UNIT, "")]


async def test_connect_checks_the_token_marks_the_squad_online_and_reads_its_resume(
    redis: Redis, scripts: Scripts
) -> None:
    # Unknown squad, or a wrong token: refused, nothing written.
    assert await scripts.connect(keys=CONNECT_KEYS, args=_hello("hub-1", "c1")) == [0]
    assert await redis.exists(SQUAD) == 0
    await redis.hset(SQUAD, "token_hash", TOKEN_HASH)
    wrong = _hello("hub-1", "c1", token_hash="cd" * 32)
    assert await scripts.connect(keys=CONNECT_KEYS, args=wrong) == [0]
    assert _s(await redis.hgetall(SQUAD)) == {"token_hash": TOKEN_HASH}
    # A squad never connected: nothing numbered, nothing acknowledged, off duty, not
    # available, no frames, no jobs.
    first = await scripts.connect(keys=CONNECT_KEYS, args=_hello("hub-1", "c1"))
    assert _s(first) == [1, "0", "0", "0", "0", [], [], ""]  # never offline before: ""
    assert _s(await redis.hgetall(SQUAD)) == {
        "token_hash": TOKEN_HASH,
        "online": "1",
        "hub": "hub-1",
        "conn": "c1",
    }
    assert await redis.sismember(AVAILABLE, "sq") == 0
    # On duty, with frames numbered (3 kept, some dropped) and two jobs (one whose hash is
    # gone): back in the available set; the frames above last_seq and the jobs come back.
    await redis.hset(SQUAD, mapping={"duty": "1", "seq": 9, "acked": 4, "trimmed": 2})
    await redis.zadd(OUTBOX, {b"%012d" % n + b"\x81body" + bytes([n]): n for n in (5, 7, 9)})
    await redis.sadd(JOBS, "A1", "A2")
    await redis.hset(
        keys.assignment(UNIT, "A1"),
        mapping={"request": RID, "state": "en_route", "respond_by": "1700"},
    )
    await redis.hset(SQUAD, "last_seen", "1700.5")
    # Still online (its old socket not yet closed): when it went offline is not known.
    taken_over = await scripts.connect(keys=CONNECT_KEYS, args=_hello("hub-1", "c1b"))
    assert taken_over[7] == b""
    await redis.hset(SQUAD, mapping={"online": "0", "hub": "", "conn": ""})
    again = await scripts.connect(keys=CONNECT_KEYS, args=_hello("hub-2", "c2", last_seq=5))
    assert again[7] == b"1700.5"  # offline since its last connection ended
    assert again[:5] == [1, b"9", b"4", b"1", b"2"]
    assert again[5] == [b"%012d" % n + b"\x81body" + bytes([n]) for n in (7, 9)]
    jobs = [again[6][i : i + 4] for i in range(0, len(again[6]), 4)]
    assert sorted(_s(jobs)) == [["A1", RID, "en_route", "1700"], ["A2", "", "", ""]]
    assert _s(await redis.hmget(SQUAD, ["hub", "conn"])) == ["hub-2", "c2"]
    assert await redis.sismember(AVAILABLE, "sq") == 1


async def test_duty_is_the_owning_connections_alone(redis: Redis, scripts: Scripts) -> None:
    # No squad hash (or another connection's): -1, nothing written.
    assert await scripts.duty(keys=[SQUAD, AVAILABLE], args=["sq", "1", "c1"]) == -1
    assert await redis.exists(SQUAD, AVAILABLE) == 0
    await redis.hset(SQUAD, mapping={"conn": "c1", "online": "1"})
    assert await scripts.duty(keys=[SQUAD, AVAILABLE], args=["sq", "1", "old-conn"]) == -1
    assert await redis.hget(SQUAD, "duty") is None
    assert await scripts.duty(keys=[SQUAD, AVAILABLE], args=["sq", "1", "c1"]) == 1
    assert await redis.sismember(AVAILABLE, "sq") == 1
    assert await scripts.duty(keys=[SQUAD, AVAILABLE], args=["sq", "0", "c1"]) == 0
    assert await redis.sismember(AVAILABLE, "sq") == 0 and await redis.hget(SQUAD, "duty") == b"0"
    # On duty but offline: recorded, not available.
    await redis.hset(SQUAD, "online", "0")
    assert await scripts.duty(keys=[SQUAD, AVAILABLE], args=["sq", "1", "c1"]) == 0
    assert await redis.hget(SQUAD, "duty") == b"1" and await redis.sismember(AVAILABLE, "sq") == 0


async def test_disconnect_takes_offline_only_for_the_connection_or_hub_that_owns_it(
    redis: Redis, scripts: Scripts
) -> None:
    geo = keys.geo(UNIT)
    state = {"online": "1", "hub": "hub-1", "conn": "c2", "duty": "1"}
    await redis.hset(SQUAD, mapping=state)
    await redis.sadd(AVAILABLE, "sq")
    await redis.geoadd(geo, [SCENE_LON, SCENE_LAT, "sq"])
    disconnect_keys = [SQUAD, AVAILABLE, geo, TIMERS]
    # An older connection ending (a newer one took over), or another hub's reaping: nothing.
    assert await scripts.disconnect(keys=disconnect_keys, args=_gone("c1", 100, "conn")) == 0
    assert await scripts.disconnect(keys=disconnect_keys, args=_gone("hub-9", 100, "hub")) == 0
    assert _s(await redis.hgetall(SQUAD)) == state
    assert await redis.sismember(AVAILABLE, "sq") == 1 and await redis.geopos(geo, "sq") != [None]
    assert await redis.exists(TIMERS) == 0
    # Its own connection: offline, no longer available, off the map, its offline and alert
    # timers started; duty is kept.
    assert await scripts.disconnect(keys=disconnect_keys, args=_gone("c2", 100.5, "conn")) == 1
    assert await redis.zrange(TIMERS, 0, -1, withscores=True) == [
        (b"offline:sq", 400500.0),
        (b"alert:sq", 700500.0),
    ]
    assert _s(await redis.hgetall(SQUAD)) == {
        "online": "0",
        "hub": "",
        "conn": "",
        "duty": "1",
        "last_seen": "100.5",
    }
    assert await redis.sismember(AVAILABLE, "sq") == 0 and await redis.geopos(geo, "sq") == [None]
    # A hub that died: reaped by its id. A missing squad hash is nobody's.
    await redis.hset(SQUAD, mapping={"online": "1", "hub": "hub-1", "conn": "c3"})
    assert await scripts.disconnect(keys=disconnect_keys, args=_gone("hub-1", 101, "hub")) == 1
    assert await redis.hget(SQUAD, "online") == b"0"
    nobody = [keys.squad(UNIT, "nobody"), AVAILABLE, geo, TIMERS]
    args = ["nobody", "", 1, "conn", "offline:nobody", 1, "alert:nobody", 2]
    assert await scripts.disconnect(keys=nobody, args=args) == 0
    assert await redis.exists(keys.squad(UNIT, "nobody")) == 0
    assert await redis.zscore(TIMERS, "offline:nobody") is None


TIMERS = keys.timers(UNIT)


def _gone(owner: str, now: float, by: str) -> list[Any]:
    """disconnect.lua's ARGV: the offline timer due 300 s after ``now``, the alert 600 s."""
    return ["sq", owner, now, by, "offline:sq", (now + 300) * 1000, "alert:sq", (now + 600) * 1000]


async def test_step_aside_takes_this_hubs_squads_out_of_candidacy_until_their_next_hello(
    redis: Redis, scripts: Scripts
) -> None:
    here = {"online": "1", "hub": "hub-1", "conn": "c1", "duty": "1"}
    squads = {
        "sq": here,
        "moved": {**here, "hub": "hub-2", "conn": "c9"},  # already resumed on another hub
        "gone": {"online": "0", "hub": "", "conn": "", "duty": "1"},
    }
    for squad, state in squads.items():
        await redis.hset(keys.squad(UNIT, squad), mapping=state)
    await redis.sadd(AVAILABLE, "sq", "moved", "other")
    aside_keys = [AVAILABLE, *(keys.squad(UNIT, s) for s in [*squads, "never"])]
    stepped = await scripts.step_aside(keys=aside_keys, args=["hub-1", *squads, "never"])
    # Only the squad this hub holds: out of the available set, still online and on duty.
    assert stepped == 1
    assert await redis.smembers(AVAILABLE) == {b"moved", b"other"}
    assert _s(await redis.hgetall(SQUAD)) == {**here, "aside": "1"}
    assert _s(await redis.hgetall(keys.squad(UNIT, "moved"))) == squads["moved"]
    assert await redis.exists(keys.squad(UNIT, "never")) == 0
    # Its phone, not yet closed, says duty on: recorded, but not a candidate again.
    assert await scripts.duty(keys=[SQUAD, AVAILABLE], args=["sq", "1", "c1"]) == 0
    assert await redis.sismember(AVAILABLE, "sq") == 0
    # Its hello on the other hub: a candidate again, the mark gone.
    await redis.hset(SQUAD, "token_hash", TOKEN_HASH)
    reply = await scripts.connect(keys=CONNECT_KEYS, args=_hello("hub-2", "c2"))
    assert _s(reply)[3] == "1"
    assert await redis.sismember(AVAILABLE, "sq") == 1
    assert await redis.hexists(SQUAD, "aside") == 0
    # Stepped aside and never back: the shutdown's disconnect clears the mark too.
    assert await scripts.step_aside(keys=[AVAILABLE, SQUAD], args=["hub-2", "sq"]) == 1
    geo = keys.geo(UNIT)
    gone_keys = [SQUAD, AVAILABLE, geo, TIMERS]
    assert await scripts.disconnect(keys=gone_keys, args=_gone("hub-2", 5, "hub"))
    assert await redis.hexists(SQUAD, "aside") == 0 and await redis.hget(SQUAD, "online") == b"0"


async def test_ack_of_a_squad_never_numbered_writes_nothing(redis: Redis, scripts: Scripts) -> None:
    outbox = keys.outbox(UNIT, "sq")
    await redis.zadd(outbox, {"000000000001x": 1})  # a frame the squad hash does not know
    assert await scripts.ack(keys=[SQUAD, outbox], args=[1]) == 0
    assert await redis.exists(SQUAD) == 0 and await redis.zcard(outbox) == 1


# ---- positions -----------------------------------------------------------------------------------

GEO, FIX_TIMES = keys.geo(UNIT), keys.fix_times(UNIT)


def _fixes(*fixes: tuple[str, float, float, float]) -> list[Any]:
    """ARGV of positions.lua for (id, lon, lat, time) fixes."""
    numbers = struct.pack(
        f"<{3 * len(fixes)}d", *(v for _, *lon_lat_at in fixes for v in lon_lat_at)
    )
    return [numbers, *(squad for squad, *_ in fixes)]


async def test_positions_places_then_times(redis: Redis, scripts: Scripts) -> None:
    answer = await scripts.positions(
        keys=[GEO, FIX_TIMES], args=_fixes(("a", 112.45, 34.62, 1000.5), ("b", 112.46, 34.63, 1001))
    )
    assert _s(answer) == [2, ""]
    assert (
        await redis.zscore(FIX_TIMES, "a") == 1000.5 and await redis.zscore(FIX_TIMES, "b") == 1001
    )
    (lon, lat), _ = await redis.geopos(GEO, "a", "b")
    assert (round(lon, 5), round(lat, 5)) == (112.45, 34.62)


async def test_a_refused_fix_costs_only_itself_and_keeps_its_squads_last_time(
    redis: Redis, scripts: Scripts
) -> None:
    await scripts.positions(keys=[GEO, FIX_TIMES], args=_fixes(("bad", 112.4, 34.6, 500)))
    answer = await scripts.positions(
        keys=[GEO, FIX_TIMES],
        args=_fixes(
            ("a", 112.45, 34.62, 1000), ("bad", 112.45, 89.0, 1000), ("c", 112.5, 34.7, 1000)
        ),
    )
    placed, error, *refused = _s(answer)
    assert (placed, refused) == (2, ["bad"]) and "invalid" in error
    assert await redis.zscore(FIX_TIMES, "bad") == 500  # the time of its last good fix
    ((lon, lat),) = await redis.geopos(GEO, "bad")
    assert (round(lon, 4), round(lat, 4)) == (112.4, 34.6)  # and its place
    assert await redis.zscore(FIX_TIMES, "a") == 1000 and await redis.zscore(FIX_TIMES, "c") == 1000


async def test_positions_in_chunks_each_refused_alone(redis: Redis, scripts: Scripts) -> None:
    """More fixes than one GEOADD carries (Lua's unpack limit): a bad fix in the second chunk
    leaves the first chunk whole and costs the second only itself."""
    fixes = [(f"s{i}", 112.0 + i * 1e-4, 34.5, 2000.0 + i) for i in range(2_500)]
    fixes[1_500] = ("s1500", 112.0, -86.0, 2000.0)
    answer = _s(await scripts.positions(keys=[GEO, FIX_TIMES], args=_fixes(*fixes)))
    assert answer[0] == 2_499 and answer[2:] == ["s1500"]
    assert await redis.zcard(GEO) == 2_499 and await redis.zcard(FIX_TIMES) == 2_499
    assert await redis.zscore(FIX_TIMES, "s2499") == 4499.0


async def test_positions_into_a_key_of_the_wrong_type_place_nothing(
    redis: Redis, scripts: Scripts
) -> None:
    await redis.set(GEO, "not a sorted set")
    answer = _s(await scripts.positions(keys=[GEO, FIX_TIMES], args=_fixes(("a", 112.4, 34.6, 1))))
    assert answer[0] == 0 and answer[2:] == ["a"] and "WRONGTYPE" in answer[1]
    assert await redis.exists(FIX_TIMES) == 0


# ---- timers: due ---------------------------------------------------------------------------------


async def test_due_claims_what_is_due_with_a_lease(redis: Redis, scripts: Scripts) -> None:
    timers = keys.timers(UNIT)
    assert await scripts.due(keys=[timers], args=[1000, 30_000, 10]) == []  # no key
    await redis.zadd(timers, {"offer:A1": 900, "offer:A2": 950, "offer:A3": 990, "later": 5000})
    claimed = await scripts.due(keys=[timers], args=[1000, 30_000, 2])
    # the oldest first, at most as asked, each with the time it was due
    assert _s(claimed) == ["offer:A1", "900", "offer:A2", "950"]
    scores = _s(dict(await redis.zrange(timers, 0, -1, withscores=True)))
    assert scores == {"offer:A3": 990, "later": 5000, "offer:A1": 31_000, "offer:A2": 31_000}
    assert _s(await scripts.due(keys=[timers], args=[1000, 30_000, 10])) == ["offer:A3", "990"]
    assert await scripts.due(keys=[timers], args=[1000, 30_000, 10]) == []  # all leased


# ---- the citizen's messages: enqueue, take, done -------------------------------------------------

MESSAGES, DUE, EVENTS = keys.citizen_messages(UNIT, RID), keys.citizen_due(UNIT), keys.events(UNIT)


async def _enqueue(scripts: Scripts, key: str, now_ms: int = 1000) -> int:
    event = json.dumps({"type": "citizen_message_queued", "key": key})
    return int(
        await scripts.citizen_enqueue(
            keys=[MESSAGES, DUE, EVENTS],
            args=[key, RID, now_ms, json.dumps({"text": key}), event, 100],
        )
    )


async def _events(redis: Redis) -> list[str]:
    return [json.loads(fields[b"e"])["type"] for _, fields in await redis.xrange(EVENTS)]


async def test_citizen_enqueue_numbers_messages_once_per_key_and_dues_only_the_head(
    redis: Redis, scripts: Scripts
) -> None:
    await redis.hset(MESSAGES, "k:old", 0)
    await redis.expire(MESSAGES, 60)  # left to expire after an earlier exchange
    assert await _enqueue(scripts, "first", 1000) == 1
    assert await redis.ttl(MESSAGES) == -1  # waiting again: kept
    assert await redis.zscore(DUE, RID) == 1000
    assert await _enqueue(scripts, "second", 2000) == 2
    assert await redis.zscore(DUE, RID) == 1000  # due from the head, not the newest
    assert await _enqueue(scripts, "first", 3000) == 0  # a retried step
    stored = _s(await redis.hgetall(MESSAGES))
    assert (stored["n"], stored["head"], stored["k:first"], stored["k:second"]) == (
        "2",
        "1",
        "1",
        "2",
    )
    assert (stored["s:2"], stored["a:2"], json.loads(stored["m:2"])) == (
        "queued",
        "0",
        {"text": "second"},
    )
    assert await _events(redis) == ["citizen_message_queued"] * 2


async def test_citizen_take_counts_the_attempt_of_the_head_or_leaves_the_due_set(
    redis: Redis, scripts: Scripts
) -> None:
    await redis.zadd(DUE, {RID: 1000})
    assert (
        await scripts.citizen_take(keys=[MESSAGES, DUE], args=[RID]) is None
    )  # no messages at all
    assert await redis.zscore(DUE, RID) is None
    await _enqueue(scripts, "first")
    await _enqueue(scripts, "second")
    n, attempt, body = await scripts.citizen_take(keys=[MESSAGES, DUE], args=[RID])
    assert (n, attempt, json.loads(body)) == (1, 1, {"text": "first"})
    n, attempt, _ = await scripts.citizen_take(keys=[MESSAGES, DUE], args=[RID])
    assert (n, attempt) == (1, 2)  # the same head again: a second attempt
    await redis.hset(MESSAGES, "head", 3)  # both done
    await redis.zadd(DUE, {RID: 1000})
    assert await scripts.citizen_take(keys=[MESSAGES, DUE], args=[RID]) is None
    assert await redis.zscore(DUE, RID) is None


async def _done(scripts: Scripts, n: int, attempt: int, outcome: str, retry_ms: int = 0) -> str:
    attempted = json.dumps({"type": "citizen_message_attempt", "n": n, "attempt": attempt})
    final = "" if outcome == "retry" else json.dumps({"type": f"citizen_message_{outcome}"})
    answer = await scripts.citizen_done(
        keys=[MESSAGES, DUE, EVENTS],
        args=[RID, n, attempt, outcome, retry_ms, 5000, attempted, final, 100, 600],
    )
    return str(_s(answer))


async def test_citizen_done_retry_delivered_failed_stale_and_superseded(
    redis: Redis, scripts: Scripts
) -> None:
    await _enqueue(scripts, "first")
    await _enqueue(scripts, "second")
    take_keys = [MESSAGES, DUE]
    await scripts.citizen_take(keys=take_keys, args=[RID])  # attempt 1 of message 1
    await scripts.citizen_take(keys=take_keys, args=[RID])  # attempt 2 (the lease ran out)
    before = len(await _events(redis))
    # The late answer of attempt 1 asks for a retry: another attempt owns it now.
    assert await _done(scripts, 1, 1, "retry", 9000) == "superseded"
    assert await redis.zscore(DUE, RID) == 1000
    assert await _done(scripts, 1, 2, "retry", 9000) == "retry"
    assert await redis.zscore(DUE, RID) == 9000
    assert len(await _events(redis)) == before + 2  # every attempt recorded
    # Delivered: the message leaves (its key stays), the next one is due now.
    assert await _done(scripts, 1, 2, "delivered") == "delivered"
    stored = _s(await redis.hgetall(MESSAGES))
    assert stored["head"] == "2" and "m:1" not in stored and "s:1" not in stored
    assert stored["k:first"] == "1"
    assert await redis.zscore(DUE, RID) == 5000
    assert await _done(scripts, 1, 2, "delivered") == "stale"  # a second answer
    # The last one failed for good: nothing waits, the hash is left to expire.
    await scripts.citizen_take(keys=take_keys, args=[RID])
    assert await _done(scripts, 2, 1, "failed") == "failed"
    assert await redis.zscore(DUE, RID) is None
    assert 0 < await redis.ttl(MESSAGES) <= 600
    assert (await _events(redis))[-1] == "citizen_message_failed"
    # Nothing known of the message at all (the hash expired): stale.
    await redis.delete(MESSAGES)
    assert await _done(scripts, 3, 1, "delivered") == "stale"


# ---- dispatch: candidates, claim, offer_nearest ---------------------------------------------


async def _squad(
    redis: Redis,
    squad: str,
    north_deg: float,
    *,
    free: int = 1,
    available: bool = True,
    skills: str = "*",
    fixed: float | None = None,
) -> None:
    await redis.geoadd(keys.geo(UNIT), [SCENE_LON, SCENE_LAT + north_deg, squad])
    await redis.zadd(keys.fix_times(UNIT), {squad: time.time() if fixed is None else fixed})
    if available:
        await redis.sadd(keys.available(UNIT), squad)
    await redis.hset(keys.free(UNIT), squad, free)
    await redis.hset(keys.skills(UNIT), squad, skills)
    await redis.hset(keys.squad(UNIT, squad), mapping={"seq": 0, "hub": f"hub-of-{squad}"})


CANDIDATE_KEYS = [
    keys.geo(UNIT),
    keys.available(UNIT),
    keys.free(UNIT),
    keys.skills(UNIT),
    keys.fix_times(UNIT),
]


async def _candidates(scripts: Scripts, category: str, want: int = 5, first_km: float = 1) -> Any:
    args = [SCENE_LON, SCENE_LAT, first_km, 2, category, time.time() - 120, want, 60]
    return _s(await scripts.candidates(keys=CANDIDATE_KEYS, args=args))[0::3]


async def test_candidates_are_the_suitable_squads_nearest_first(
    redis: Redis, scripts: Scripts
) -> None:
    assert await _candidates(scripts, "water_main_burst") == []  # no index at all
    await _squad(redis, "busy", 0.001, free=0)
    await _squad(redis, "off-duty", 0.002, available=False)
    await _squad(redis, "stale-fix", 0.003, fixed=time.time() - 3600)
    await _squad(redis, "wrong-skill", 0.004, skills=",gas_leak_smell,")
    await _squad(redis, "skilled", 0.005, skills=",water_main_burst,gas_leak_smell,")
    await _squad(redis, "anything", 0.006)
    await _squad(redis, "far", 0.3)  # ~33 km: found by widening the radius (1, 4, 16, 60 km)
    assert await _candidates(scripts, "water_main_burst") == ["skilled", "anything", "far"]
    assert await _candidates(scripts, "water_main_burst", want=2) == ["skilled", "anything"]
    # '*': any squad whatever its skills (an assist), still available, free and fresh.
    assert await _candidates(scripts, "*") == ["wrong-skill", "skilled", "anything", "far"]


def _claim_keys(request_id: str, assignment: str) -> list[str]:
    return [
        keys.request(UNIT, request_id),
        keys.queue(UNIT),
        keys.available(UNIT),
        keys.free(UNIT),
        keys.tried(UNIT, request_id),
        keys.timers(UNIT),
        keys.events(UNIT),
        keys.timeline(UNIT, request_id),
        keys.assignment(UNIT, assignment),
        keys.stats(UNIT),
    ]


def _claim_args(request_id: str = RID, assignment: str = "A1", keep: int = 100) -> list[Any]:
    return [
        request_id,
        assignment,
        1000,
        61_000,
        b"offer",
        100,
        keep,
        "queued",
        "offered",
        "offered",
        f"offer:{assignment}",
    ]


def _squad_keys(*squads: str) -> list[str]:
    return [
        k for s in squads for k in (keys.squad(UNIT, s), keys.outbox(UNIT, s), keys.jobs(UNIT, s))
    ]


async def _queued(redis: Redis, request_id: str = RID) -> None:
    await redis.hset(keys.request(UNIT, request_id), mapping={"state": "queued", "v": 1})
    await redis.zadd(keys.queue(UNIT), {request_id: 1})


async def test_claim_takes_the_first_eligible_and_carries_the_offer_out(
    redis: Redis, scripts: Scripts
) -> None:
    await _squad(redis, "full", 0.01, free=0)
    await _squad(redis, "gone", 0.02, available=False)
    await _squad(redis, "ok", 0.03)
    await _queued(redis)
    squads = ["full", "gone", "ok"]
    claim_keys = _claim_keys(RID, "A1") + _squad_keys(*squads)
    result = await scripts.claim(keys=claim_keys, args=[*_claim_args(), *squads])
    assert _s(result) == ["ok", "ok", 1, "hub-of-ok", 2]
    assert _s(await redis.hgetall(keys.request(UNIT, RID))) == {
        "state": "offered",
        "v": "2",
        "squad": "ok",
        "assignment": "A1",
        "offered_at": "1000",
    }
    assert _s(await redis.hgetall(keys.assignment(UNIT, "A1"))) == {
        "request": RID,
        "squad": "ok",
        "state": "offered",
        "respond_by": "61000",
        "created": "1000",
    }
    assert await redis.hget(keys.free(UNIT), "ok") == b"0"
    assert await redis.zscore(keys.queue(UNIT), RID) is None
    assert await redis.zscore(keys.timers(UNIT), "offer:A1") == 61_000
    assert await redis.smembers(keys.jobs(UNIT, "ok")) == {b"A1"}
    assert await redis.smembers(keys.tried(UNIT, RID)) == {b"ok"}
    assert await redis.hget(keys.stats(UNIT), "offers") == b"1"
    (event,) = [json.loads(e) for e in await redis.lrange(keys.timeline(UNIT, RID), 0, -1)]
    assert (event["type"], event["squad"], event["seq"], event["respond_by"]) == (
        "offered",
        "ok",
        1,
        61.0,
    )
    assert await redis.xlen(keys.events(UNIT)) == 1
    # Claimed already: stale, nothing more written.
    again = await scripts.claim(keys=claim_keys, args=[*_claim_args(), *squads])
    assert _s(again) == ["stale", "offered"]
    assert await redis.hget(keys.stats(UNIT), "offers") == b"1"


async def test_claim_with_nobody_eligible_or_no_request_writes_nothing(
    redis: Redis, scripts: Scripts
) -> None:
    await _squad(redis, "full", 0.01, free=0)
    claim_keys = _claim_keys(RID, "A1") + _squad_keys("full")
    missing = await scripts.claim(keys=claim_keys, args=[*_claim_args(), "full"])
    assert _s(missing) == ["stale", ""]  # no such request
    await _queued(redis)
    assert _s(await scripts.claim(keys=claim_keys, args=[*_claim_args(), "full"])) == ["none"]
    assert _s(await redis.hgetall(keys.request(UNIT, RID))) == {"state": "queued", "v": "1"}
    assert await redis.exists(keys.assignment(UNIT, "A1"), keys.tried(UNIT, RID)) == 0
    assert await redis.exists(keys.timers(UNIT), keys.events(UNIT)) == 0


async def test_claim_keeps_the_newest_frames_and_remembers_the_dropped(
    redis: Redis, scripts: Scripts
) -> None:
    await _squad(redis, "sq", 0.01, free=5)
    outbox = keys.outbox(UNIT, "sq")
    for n in range(1, 4):  # three earlier requests' offers, kept 2 at most
        rid = f"R{n}"
        await _queued(redis, rid)
        claim_keys = _claim_keys(rid, f"A{n}") + _squad_keys("sq")
        result = await scripts.claim(keys=claim_keys, args=[*_claim_args(rid, f"A{n}", 2), "sq"])
        assert _s(result)[:3] == ["ok", "sq", n]
    assert await redis.zrange(outbox, 0, -1) == [b"000000000002offer", b"000000000003offer"]
    assert await redis.hget(keys.squad(UNIT, "sq"), "trimmed") == b"1"


def _offer_nearest_args(request_id: str = RID, assignment: str = "A1") -> list[Any]:
    return [
        *_claim_args(request_id, assignment),
        SCENE_LON,
        SCENE_LAT,
        1,
        8,
        "water_main_burst",
        time.time() - 120,
        5,
        60,
        0.02,
        keys.squad(UNIT, "\0"),
        keys.outbox(UNIT, "\0"),
        keys.jobs(UNIT, "\0"),
    ]


def _offer_nearest_keys(request_id: str = RID, assignment: str = "A1") -> list[str]:
    return [
        *_claim_keys(request_id, assignment),
        keys.geo(UNIT),
        keys.skills(UNIT),
        keys.fix_times(UNIT),
    ]


async def test_offer_nearest_claims_the_nearest_by_its_own_keys(
    redis: Redis, scripts: Scripts
) -> None:
    # An id with Lua pattern characters: the squad's keys are built by plain substitution.
    await _squad(redis, "sq%1.*", 0.01)
    await _squad(redis, "farther", 0.05)
    await _queued(redis)
    result = await scripts.offer_nearest(keys=_offer_nearest_keys(), args=_offer_nearest_args())
    assert _s(result) == ["ok", "sq%1.*", 1, "hub-of-sq%1.*", 2]
    assert await redis.smembers(keys.jobs(UNIT, "sq%1.*")) == {b"A1"}
    assert await redis.zcard(keys.outbox(UNIT, "sq%1.*")) == 1
    assert await redis.hget(keys.squad(UNIT, "sq%1.*"), "seq") == b"1"
    assert await redis.hget(keys.free(UNIT), "farther") == b"1"


async def test_offer_nearest_stale_none_and_tie_write_nothing(
    redis: Redis, scripts: Scripts
) -> None:
    nearest_keys, args = _offer_nearest_keys(), _offer_nearest_args()
    missing = await scripts.offer_nearest(keys=nearest_keys, args=args)
    assert _s(missing) == ["stale", ""]  # no such request
    await _queued(redis)
    assert _s(await scripts.offer_nearest(keys=nearest_keys, args=args)) == ["none"]
    await _squad(redis, "a", 0.0100)
    await _squad(redis, "b", 0.0101)  # 1 % farther: a near-tie, for the geodesic to decide
    tie = _s(await scripts.offer_nearest(keys=nearest_keys, args=args))
    assert tie[0] == "tie" and tie[1::3] == ["a", "b"]
    assert [round(float(v), 4) for v in tie[3::3]] == [34.63, 34.6301]  # lat after lon
    assert _s(await redis.hgetall(keys.request(UNIT, RID))) == {"state": "queued", "v": "1"}
    assert await redis.exists(keys.assignment(UNIT, "A1"), keys.events(UNIT)) == 0
    assert _s(await redis.hmget(keys.free(UNIT), ["a", "b"])) == ["1", "1"]


# ---- requests: apply, move --------------------------------------------------------------------


def _apply_keys(squad: str = "sq", command: str = "-") -> list[str]:
    return [
        keys.request(UNIT, RID),
        keys.timeline(UNIT, RID),
        keys.events(UNIT),
        keys.queue(UNIT),
        keys.timers(UNIT),
        keys.free(UNIT),
        keys.stats(UNIT),
        keys.assignment(UNIT, "A1"),
        keys.squad(UNIT, squad),
        keys.outbox(UNIT, squad),
        keys.jobs(UNIT, squad),
        keys.command(UNIT, squad, command),
        keys.open_requests(UNIT),
        keys.notices(UNIT, RID),
        keys.request_open_notices(UNIT, RID),
        keys.open_notices(UNIT),
        keys.closed_notices(UNIT),
        keys.citizen_messages(UNIT, RID),
        keys.citizen_due(UNIT),
    ]


def _apply_args(
    expected: int,
    flags: str = "",
    fields: dict[str, str] | None = None,
    *,
    squad: str = "sq",
    revoke: bytes = b"",
    ack: int = 0,
    add_timers: str = "",
    remove_timers: str = "",
    stamps: str = "",
    closes: str = "",
    what: str = "A1 accept",
) -> list[Any]:
    fields = fields or {}
    return [
        expected,
        json.dumps({"type": "step"}),
        100,
        flags,
        revoke,
        RID,
        "A1",
        squad,
        60,
        1234,
        len(fields),
        "accepted",
        2,
        "offer:A1",
        "1500.5",
        add_timers,
        remove_timers,
        stamps,
        closes,
        "step",
        ack,
        "[]",
        what,
        *(item for kv in fields.items() for item in kv),
    ]


async def test_apply_is_compare_and_set_on_the_version(redis: Redis, scripts: Scripts) -> None:
    apply_keys = _apply_keys()
    # Expected version 0: the request must not exist yet; the create makes version 1.
    created = await scripts.apply(keys=apply_keys, args=_apply_args(0, "O", {"state": "queued"}))
    assert _s(created) == ["ok", 1, 0, "", -1]
    assert await redis.zscore(keys.open_requests(UNIT), RID) == 1234
    again = await scripts.apply(keys=apply_keys, args=_apply_args(0, "", {"state": "x"}))
    assert _s(again) == ["stale", 1]  # created already
    stale = await scripts.apply(keys=apply_keys, args=_apply_args(5, "", {"state": "x"}))
    assert _s(stale) == ["stale", 1]
    assert _s(await redis.hgetall(keys.request(UNIT, RID))) == {"state": "queued", "v": "1"}
    assert (
        await redis.llen(keys.timeline(UNIT, RID)) == 1 and await redis.xlen(keys.events(UNIT)) == 1
    )


async def test_apply_checks_the_owner_records_the_ack_and_remembers_the_command(
    redis: Redis, scripts: Scripts
) -> None:
    await redis.hset(keys.request(UNIT, RID), mapping={"state": "offered", "v": 2})
    await redis.hset(keys.assignment(UNIT, "A1"), mapping={"squad": "sq", "state": "offered"})
    await redis.hset(keys.squad(UNIT, "thief"), mapping={"seq": 3, "hub": "hub-t"})
    await redis.zadd(keys.outbox(UNIT, "thief"), {f"{n:012d}x": n for n in (1, 2, 3)})
    # Another squad's step on this assignment: only its own ack is recorded.
    foreign = await scripts.apply(
        keys=_apply_keys("thief", "c1"),
        args=_apply_args(2, "SCA", {"state": "accepted"}, squad="thief", ack=2),
    )
    assert _s(foreign) == ["foreign"]
    assert await redis.hget(keys.squad(UNIT, "thief"), "acked") == b"2"
    assert await redis.zcard(keys.outbox(UNIT, "thief")) == 1
    assert await redis.hget(keys.request(UNIT, RID), "v") == b"2"
    assert await redis.exists(keys.command(UNIT, "thief", "c1")) == 0
    # Its own squad: applied once; the same command again is a duplicate, whatever the version.
    await redis.hset(keys.squad(UNIT, "sq"), mapping={"seq": 0, "hub": "hub-1"})
    args = _apply_args(2, "SCA", {"state": "accepted"}, stamps="accepted_at")
    done = await scripts.apply(keys=_apply_keys("sq", "c1"), args=args)
    assert _s(done) == ["ok", 3, 0, "hub-1", -1]
    assert await redis.hget(keys.assignment(UNIT, "A1"), "state") == b"accepted"
    assert await redis.hget(keys.request(UNIT, RID), "accepted_at") == b"1500.5"
    assert 0 < await redis.ttl(keys.command(UNIT, "sq", "c1")) <= 60
    assert await redis.get(keys.command(UNIT, "sq", "c1")) == b"A1 accept"  # what c1 stood for
    dup = await scripts.apply(
        keys=_apply_keys("sq", "c1"), args=_apply_args(3, "SCA", {"x": "y"}, what="A1 enroute")
    )
    assert _s(dup) == ["dup", "A1 accept"]  # the caller tells a retry from a reused id
    assert await redis.hget(keys.request(UNIT, RID), "v") == b"3"


async def test_apply_carries_out_the_steps_effects(redis: Redis, scripts: Scripts) -> None:
    await redis.hset(keys.request(UNIT, RID), mapping={"state": "accepted", "v": 3})
    await redis.hset(keys.squad(UNIT, "sq"), mapping={"seq": 5, "hub": "hub-1"})
    await redis.sadd(keys.jobs(UNIT, "sq"), "A1")
    await redis.hset(keys.free(UNIT), "sq", 0)
    await redis.zadd(keys.queue(UNIT), {"other": 1})
    await redis.zadd(keys.open_requests(UNIT), {RID: 1234})
    await redis.zadd(keys.timers(UNIT), {"offer:A1": 1, "deadline:old": 2})
    await redis.hset(keys.request(UNIT, RID), "accepted_at", "1400")
    result = await scripts.apply(
        keys=_apply_keys(),
        args=_apply_args(
            3,
            "RQNTXA",
            {"state": "queued", "squad": ""},
            revoke=b"revoke",
            add_timers="5000 deadline:new\n6000 deadline:other",
            remove_timers="deadline:old",
            stamps="accepted_at",
        ),
    )
    # Version 4, the revoke numbered 6 in the squad's outbox, 2 requests now waiting.
    assert _s(result) == ["ok", 4, 6, "hub-1", 2]
    assert await redis.hget(keys.free(UNIT), "sq") == b"1"  # R: the capacity is back
    assert await redis.smembers(keys.jobs(UNIT, "sq")) == set()
    assert await redis.zscore(keys.queue(UNIT), RID) == 1234  # Q
    assert await redis.hget(keys.stats(UNIT), "non_responses") == b"1"  # N
    assert await redis.zscore(keys.open_requests(UNIT), RID) is None  # X
    assert await redis.hget(keys.assignment(UNIT, "A1"), "state") == b"accepted"  # A
    timers = _s(dict(await redis.zrange(keys.timers(UNIT), 0, -1, withscores=True)))
    assert timers == {"deadline:new": 5000, "deadline:other": 6000}  # T, added, removed
    assert await redis.hget(keys.request(UNIT, RID), "accepted_at") == b"1400"  # once only
    assert await redis.zrange(keys.outbox(UNIT, "sq"), 0, -1) == [b"000000000006revoke"]
    # A second release of the same assignment gives no capacity twice.
    await scripts.apply(keys=_apply_keys(), args=_apply_args(4, "R", {}))
    assert await redis.hget(keys.free(UNIT), "sq") == b"1"


async def test_apply_closes_the_notices_the_step_meets(redis: Redis, scripts: Scripts) -> None:
    await redis.hset(keys.request(UNIT, RID), mapping={"state": "offered", "v": 2})
    open_ = {"id": "n1", "kind": "accept_overdue", "level": 1, "state": "open"}
    other = {"id": "n2", "kind": "resolve_overdue", "level": 1, "state": "open"}
    await redis.hset(
        keys.notices(UNIT, RID), mapping={"n1": json.dumps(open_), "n2": json.dumps(other)}
    )
    await redis.sadd(keys.request_open_notices(UNIT, RID), "n1", "n2", "vanished")
    await redis.zadd(keys.open_notices(UNIT), {"n1": 1, "n2": 1, "vanished": 1})
    args = _apply_args(2, "", {"state": "accepted"}, closes=",accept_overdue,")
    assert _s(await scripts.apply(keys=_apply_keys(), args=args))[0] == "ok"
    closed = json.loads(await redis.hget(keys.notices(UNIT, RID), "n1"))
    assert (closed["state"], closed["closed_at"], closed["closed_by"]) == ("closed", 1500.5, "step")
    assert await redis.smembers(keys.request_open_notices(UNIT, RID)) == {b"n2"}
    assert _s(await redis.zrange(keys.open_notices(UNIT), 0, -1)) == ["n2"]
    assert await redis.zscore(keys.closed_notices(UNIT), "n1") == 1_500_500
    types = [json.loads(e)["type"] for e in await redis.lrange(keys.timeline(UNIT, RID), 0, -1)]
    assert types == ["step", "notice_closed"]


def _move_args(version: int, new_events: list[str]) -> list[Any]:
    timeline = [json.dumps({"type": "received"}), json.dumps({"type": "reassigned"})]
    fields = {"state": "queued", "unit": UNIT, "category": "water_main_burst"}
    notices = {"n1": json.dumps({"kind": "accept_overdue"})}
    open_notices = {"n1": 777}
    return [
        version,
        RID,
        1234,
        100,
        len(timeline),
        len(fields),
        len(notices),
        len(open_notices),
        *timeline,
        *(item for kv in fields.items() for item in kv),
        *(item for kv in notices.items() for item in kv),
        *(item for kv in open_notices.items() for item in kv),
        *new_events,
    ]


MOVE_KEYS = [
    keys.request(UNIT, RID),
    keys.timeline(UNIT, RID),
    keys.events(UNIT),
    keys.queue(UNIT),
    keys.open_requests(UNIT),
    keys.notices(UNIT, RID),
    keys.request_open_notices(UNIT, RID),
    keys.open_notices(UNIT),
]


async def test_move_creates_the_request_here_once(redis: Redis, scripts: Scripts) -> None:
    # What is left of an earlier stay in this unit (an older version): replaced.
    await redis.hset(keys.request(UNIT, RID), mapping={"state": "reassigned", "v": 2, "x": "1"})
    await redis.rpush(keys.timeline(UNIT, RID), "old entry")
    arrived = [json.dumps({"type": "arrived_from_unit"})]
    assert _s(await scripts.move(keys=MOVE_KEYS, args=_move_args(5, arrived))) == ["moved", 5]
    assert _s(await redis.hgetall(keys.request(UNIT, RID))) == {
        "state": "queued",
        "unit": UNIT,
        "category": "water_main_burst",
        "v": "5",
    }
    types = [json.loads(e)["type"] for e in await redis.lrange(keys.timeline(UNIT, RID), 0, -1)]
    assert types == ["received", "reassigned", "arrived_from_unit"]
    assert await redis.xlen(keys.events(UNIT)) == 1  # only this unit's new events
    assert await redis.zscore(keys.queue(UNIT), RID) == 1234
    assert await redis.zscore(keys.open_requests(UNIT), RID) == 1234
    assert await redis.smembers(keys.request_open_notices(UNIT, RID)) == {b"n1"}
    assert await redis.zscore(keys.open_notices(UNIT), "n1") == 777
    assert json.loads(await redis.hget(keys.notices(UNIT, RID), "n1")) == {"kind": "accept_overdue"}
    # A retry after a crash (the same version, or an older one): done, nothing written twice.
    assert _s(await scripts.move(keys=MOVE_KEYS, args=_move_args(5, arrived))) == ["done", 5]
    assert _s(await scripts.move(keys=MOVE_KEYS, args=_move_args(4, arrived))) == ["done", 5]
    assert (
        await redis.llen(keys.timeline(UNIT, RID)) == 3 and await redis.xlen(keys.events(UNIT)) == 1
    )


# ---- notice, sequence: their own test files; a missing key here -----------------------------


async def test_notice_on_a_missing_request_is_stale(redis: Redis, scripts: Scripts) -> None:
    notice_keys = [
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
    args = [3, "n1", "{}", "{}", 100, 1000, "", 0, "", 5]
    assert _s(await scripts.notice(keys=notice_keys, args=args)) == ["stale", 0]
    assert await redis.exists(*notice_keys) == 0


async def test_sequence_without_a_counter_or_a_start_gives_nothing(
    redis: Redis, scripts: Scripts
) -> None:
    counter = [keys.request_sequence("20261130"), keys.sequence_marker()]
    assert await scripts.sequence(keys=counter, args=["", 1000, 60]) is None
    assert await redis.exists(*counter) == 0
    assert await scripts.sequence(keys=counter, args=[0, 1000, 60]) == 1001  # Redis started empty
    assert await scripts.sequence(keys=counter, args=["", 1000, 60]) == 1002


async def test_a_script_error_is_an_error(redis: Redis, scripts: Scripts) -> None:
    await redis.set(keys.timers(UNIT), "not a sorted set")
    with pytest.raises(ResponseError):
        await scripts.due(keys=[keys.timers(UNIT)], args=[1000, 30_000, 10])


# ---- metrics --------------------------------------------------------------------------------


async def test_outbox_count_sums_the_frames_kept_in_one_units_outboxes(
    redis: Redis, scripts: Scripts
) -> None:
    outboxes = [keys.outbox(UNIT, f"sq{i}") for i in range(3)]
    await redis.zadd(outboxes[0], {"a": 1, "b": 2})
    await redis.zadd(outboxes[2], {"c": 5})
    assert await scripts.outbox_count(keys=outboxes, args=[]) == 3  # sq1 has none
    assert await scripts.outbox_count(keys=outboxes[1:2], args=[]) == 0


async def test_the_outbox_gauge_counts_every_units_squads_in_one_round_trip(
    redis: Redis, scripts: Scripts, redis_url: str
) -> None:
    squads = [("water", f"w{i}") for i in range(500)] + [("power", "p1"), ("power", "p2")]
    for unit, squad in squads[:7] + squads[-1:]:
        await redis.zadd(keys.outbox(unit, squad), {f"{squad}-1": 1, f"{squad}-2": 2})
    assert await gauges.outbox_frames(redis, scripts, squads) == 16  # a cluster too
    assert await gauges.outbox_frames(redis, scripts, []) == 0
    skip_on_cluster(redis_url, "counts the round trips of one connection to one server")
    async with counted_client(redis) as (client, trips):
        before = trips.count
        assert await gauges.outbox_frames(client, scripts, squads) == 16
        assert trips.count - before == 1
