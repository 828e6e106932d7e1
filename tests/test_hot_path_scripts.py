"""The hot path's scripts on a real Redis, driven through the code that calls them (no hub
process): the intake's create with its first offer (``offer_nearest.lua``), a squad's step
with its ownership check, pending ack and citizen message (``apply.lua``), and a squad's
command from what the process knows (``SquadActions`` with ``KnownRequests``)."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from dispatch_field import protocol
from dispatch_field.codes import ErrorCode
from server.actions import CommandError, SquadActions
from server.assign.dispatcher import NEAR_TIE, Dispatcher, Outcome
from server.assign.ranking import geodesic_m
from server.citizen.compose import Message
from server.citizen.outbox import CitizenOutbox
from server.known import KnownRequests
from server.lifecycle import RequestView, SquadStep, State, Triaged, transition
from server.settings import Settings
from server.store import keys
from server.store.requests import (
    Actor,
    ForeignAssignment,
    RequestRecord,
    RequestStore,
    StaleRequest,
    event_json,
)
from server.store.scripts import Scripts

UNIT = "water"
RID = "20261130-001001"
SCENE = (34.62, 112.45)
SYSTEM = Actor("system")


class Pushes:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, int, bytes, str]] = []

    async def __call__(self, unit: str, squad: str, seq: int, body: bytes, hub: str) -> None:
        self.sent.append((unit, squad, seq, body, hub))


@dataclass
class Parts:
    redis: Redis
    scripts: Scripts
    store: RequestStore
    dispatcher: Dispatcher
    known: KnownRequests
    pushes: Pushes


@pytest.fixture
async def parts(redis: Redis) -> AsyncIterator[Parts]:
    scripts = Scripts.register(redis)
    await scripts.load(redis)
    store = RequestStore(
        redis,
        scripts,
        events_maxlen=1000,
        command_memory_s=60,
        outbox_max_frames=100,
        zone=ZoneInfo("Asia/Shanghai"),
    )
    settings = Settings(tokens="admin:adm-12345678")
    known, pushes = KnownRequests(), Pushes()
    dispatcher = Dispatcher(redis, scripts, store, settings, pushes, known=known)
    yield Parts(redis, scripts, store, dispatcher, known, pushes)


async def _squad(redis: Redis, squad: str, lat: float, lon: float) -> None:
    """An available squad with one free place and a fresh fix at (lat, lon)."""
    await redis.geoadd(keys.geo(UNIT), [lon, lat, squad])
    await redis.zadd(keys.fix_times(UNIT), {squad: time.time()})
    await redis.sadd(keys.available(UNIT), squad)
    await redis.hset(keys.free(UNIT), squad, 1)
    await redis.hset(keys.squad(UNIT, squad), mapping={"seq": 0, "hub": "hub-1"})


async def _create_and_offer(parts: Parts, rid: str = RID) -> tuple[RequestRecord, object]:
    step = transition(RequestView(State.RECEIVED), Triaged("linkage"))
    now = time.time()
    fields = {
        "id": rid,
        "category": "water_main_burst",
        "unit": UNIT,
        "received_at": repr(now),
        "lat": repr(SCENE[0]),
        "lon": repr(SCENE[1]),
        "caller_phone": "13800000000",
    }
    fields |= step.fields | {"state": step.state.value}
    record = RequestRecord.from_hash(fields | {"v": "1"})
    first = parts.dispatcher.first_offer(UNIT, rid, record)
    answer = await parts.store.create(
        rid,
        UNIT,
        fields,
        [event_json("queued", rid, now, SYSTEM)],
        step,
        received_at=now,
        then=first.call,
    )
    return record, await parts.dispatcher.finish_first_offer(first, answer)


# ---- offer_nearest.lua -------------------------------------------------------------------------


async def test_the_create_and_the_offer_of_the_nearest_in_one_round_trip(parts: Parts) -> None:
    redis = parts.redis
    await _squad(redis, "near", SCENE[0] + 0.01, SCENE[1])  # ~1.1 km
    await _squad(redis, "far", SCENE[0] + 0.03, SCENE[1])  # ~3.3 km
    _, result = await _create_and_offer(parts)
    assert result.outcome is Outcome.OFFERED and result.squad == "near"  # type: ignore[attr-defined]
    stored = await parts.store.read(UNIT, RID)
    assert stored is not None and (stored.state, stored.squad, stored.v) == (
        State.OFFERED,
        "near",
        2,
    )
    assert await redis.hget(keys.free(UNIT), "near") == b"0"
    assert await redis.zscore(keys.queue(UNIT), RID) is None
    assert await redis.smembers(keys.jobs(UNIT, "near")) == {stored.assignment.encode()}
    assert [s for _, s, *_ in parts.pushes.sent] == ["near"]
    frame = protocol.decode_hub(protocol.stamp_seq(parts.pushes.sent[0][3], 1))
    assert isinstance(frame, protocol.Offer) and frame.request.id == RID
    assert await redis.hget(keys.request_units(), RID) == UNIT.encode()  # the index too
    known = parts.known.get(UNIT, "near", stored.assignment)
    assert known is not None and (known.v, known.state) == (2, State.OFFERED)
    types = [json.loads(e)["type"] for e in await redis.lrange(keys.timeline(UNIT, RID), 0, -1)]
    assert types == ["queued", "offered"]


async def test_a_near_tie_is_ranked_by_the_geodesic_then_claimed(parts: Parts) -> None:
    redis = parts.redis
    # The same spherical distance north and east: the geodesic tells them apart.
    await _squad(redis, "north", SCENE[0] + 0.01, SCENE[1])
    dlon = 0.01 / math.cos(math.radians(SCENE[0]))
    await _squad(redis, "east", SCENE[0], SCENE[1] + dlon)
    _, result = await _create_and_offer(parts)
    nearest = min(
        ("north", SCENE[0] + 0.01, SCENE[1]),
        ("east", SCENE[0], SCENE[1] + dlon),
        key=lambda s: geodesic_m(*SCENE, s[1], s[2]),
    )[0]
    assert result.squad == nearest  # type: ignore[attr-defined]


async def test_no_candidate_leaves_the_request_queued(parts: Parts) -> None:
    _, result = await _create_and_offer(parts)
    assert result.outcome is Outcome.WAITING  # type: ignore[attr-defined]
    stored = await parts.store.read(UNIT, RID)
    assert stored is not None and stored.state is State.QUEUED
    assert await parts.redis.zscore(keys.queue(UNIT), RID) is not None
    assert parts.pushes.sent == []


async def test_offer_nearest_answers_stale_and_tie_without_writing(parts: Parts) -> None:
    redis = parts.redis
    await _squad(redis, "a", SCENE[0] + 0.01, SCENE[1])
    await _squad(redis, "b", SCENE[0] + 0.0101, SCENE[1])  # within the near-tie margin
    record, _ = await _create_and_offer(parts)  # offered to one of them
    first = parts.dispatcher.first_offer(UNIT, RID, record)
    stale = await first.call.script(keys=first.call.keys, args=first.call.args)
    assert [x.decode() for x in stale] == ["stale", "offered"]
    await redis.hset(keys.request(UNIT, "R2"), mapping={"state": "queued", "v": 1})
    second = parts.dispatcher.first_offer(UNIT, "R2", record)
    await redis.hset(keys.free(UNIT), mapping={"a": 1, "b": 1})
    tie = await second.call.script(keys=second.call.keys, args=second.call.args)
    assert tie[0] == b"tie" and sorted(tie[1::3]) == [b"a", b"b"]
    assert await redis.hget(keys.request(UNIT, "R2"), "state") == b"queued"  # untouched


def test_beyond_the_near_tie_margin_the_spherical_order_is_the_geodesic_order() -> None:
    """Redis orders by a sphere of radius 6,372,797.56 m; outside a near-tie the nearest it
    finds is the geodesic nearest, whatever the bearings and latitude."""
    rng = random.Random(9)

    def spherical_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
        p1, p2 = math.radians(lat1), math.radians(lat2)
        dlat, dlon = p2 - p1, math.radians(lon2 - lon1)
        a = math.sin(dlat / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlon / 2) ** 2
        return 2 * 6_372_797.560856 * math.asin(math.sqrt(a))

    checked = 0
    for _ in range(5_000):
        lat, lon = rng.uniform(-80, 80), rng.uniform(-179, 179)
        points = [(lat + rng.uniform(-0.5, 0.5), lon + rng.uniform(-0.5, 0.5)) for _ in range(2)]
        near, far = sorted(points, key=lambda p: spherical_m(lat, lon, *p))
        if spherical_m(lat, lon, *far) > spherical_m(lat, lon, *near) * (1 + NEAR_TIE):
            assert geodesic_m(lat, lon, *near) < geodesic_m(lat, lon, *far)
            checked += 1
    assert checked > 2_500


# ---- apply.lua: ownership, pending ack, citizen messages ----------------------------------------


async def _offered(parts: Parts) -> tuple[RequestRecord, str]:
    await _squad(parts.redis, "sq", SCENE[0] + 0.01, SCENE[1])
    await _create_and_offer(parts)
    stored = await parts.store.read(UNIT, RID)
    assert stored is not None
    return stored, stored.assignment


async def test_a_step_on_another_squads_assignment_writes_nothing_but_the_ack(
    parts: Parts,
) -> None:
    redis = parts.redis
    stored, assignment = await _offered(parts)
    await redis.hset(keys.squad(UNIT, "thief"), mapping={"seq": 5})
    await redis.zadd(keys.outbox(UNIT, "thief"), {f"{n:012d}x": n for n in range(1, 6)})
    step = transition(stored.view(), SquadStep("accept", assignment))
    with pytest.raises(ForeignAssignment):
        await parts.store.commit(
            UNIT,
            RID,
            stored.v,
            step,
            ["{}"],
            assignment=assignment,
            squad="thief",
            command_id="c1",
            owner_check=True,
            ack=3,
        )
    after = await parts.store.read(UNIT, RID)
    assert after is not None and (after.v, after.state) == (stored.v, State.OFFERED)
    assert await redis.exists(keys.command(UNIT, "thief", "c1")) == 0
    assert await redis.hget(keys.squad(UNIT, "thief"), "acked") == b"3"  # its own outbox
    assert await redis.zcard(keys.outbox(UNIT, "thief")) == 2


async def test_the_step_records_the_ack_and_queues_the_message_once(parts: Parts) -> None:
    redis = parts.redis
    stored, assignment = await _offered(parts)
    message = Message(
        id="m1",
        key=f"{RID}:accepted:k1",
        request=RID,
        unit=UNIT,
        event="accepted",
        lang="zh",
        phone="13800000000",
        text="accepted",
        queued_at=time.time(),
    )
    queued = CitizenOutbox.prepare(message)
    step = transition(stored.view(), SquadStep("accept", assignment))
    commit = await parts.store.commit(
        UNIT,
        RID,
        stored.v,
        step,
        ["{}"],
        assignment=assignment,
        squad="sq",
        command_id="c1",
        owner_check=True,
        ack=1,
        messages=[queued],
    )
    assert commit.version == stored.v + 1
    assert await redis.hget(keys.squad(UNIT, "sq"), "acked") == b"1"
    assert await redis.zcard(keys.outbox(UNIT, "sq")) == 0  # the offer, acknowledged
    assert await redis.hget(keys.citizen_messages(UNIT, RID), "n") == b"1"
    assert await redis.zscore(keys.citizen_due(UNIT), RID) is not None
    # A stale retry (same message key) records the ack and nothing else.
    with pytest.raises(StaleRequest):
        await parts.store.commit(
            UNIT,
            RID,
            stored.v,
            step,
            ["{}"],
            assignment=assignment,
            squad="sq",
            owner_check=True,
            messages=[queued],
        )
    again = transition(
        RequestView(State.ACCEPTED, "sq", assignment), SquadStep("enroute", assignment)
    )
    await parts.store.commit(
        UNIT,
        RID,
        commit.version,
        again,
        ["{}"],
        assignment=assignment,
        squad="sq",
        owner_check=True,
        messages=[queued],
    )
    assert await redis.hget(keys.citizen_messages(UNIT, RID), "n") == b"1"  # once per key


# ---- SquadActions from what the process knows -------------------------------------------------


class _Teller:
    """The citizen side of SquadActions, telling nobody (its outbox prepares messages)."""

    outbox = CitizenOutbox

    def step(self, *args: object, **kwargs: object) -> None:
        return None

    async def queue(self, message: object) -> None:
        return None


async def test_a_command_from_a_known_record_commits_or_reads_again_when_stale(
    parts: Parts,
) -> None:
    redis = parts.redis
    stored, assignment = await _offered(parts)
    actions = SquadActions(
        redis,
        parts.store,
        _Teller(),
        Settings(tokens="admin:adm-12345678"),  # type: ignore[arg-type]
        known=parts.known,
    )
    done = await actions.apply(UNIT, "sq", protocol.Accept(assignment=assignment, id="c1"))
    assert done.state is State.ACCEPTED and done.record is not None and done.record.v == 3
    # Someone else changes the request: what this process knows is stale, the commit says
    # so, the command reads it again and goes through.
    await redis.hincrby(keys.request(UNIT, RID), "v", 1)
    done = await actions.apply(UNIT, "sq", protocol.Enroute(assignment=assignment, id="c2"))
    assert done.state is State.EN_ROUTE and done.record is not None and done.record.v == 5
    after = await parts.store.read(UNIT, RID)
    assert after is not None and after.state is State.EN_ROUTE and after.accepted_at
    assert done.record.accepted_at == after.accepted_at  # stamps mirrored
    # Another squad gets nothing out of this one's knowledge, nor out of Redis.
    with pytest.raises(CommandError) as refused:
        await actions.apply(UNIT, "thief", protocol.Arrive(assignment=assignment, id="c3"))
    assert refused.value.code is ErrorCode.UNKNOWN_ASSIGNMENT
    assert stored.v == 2


async def test_the_known_record_after_each_step_is_the_stored_one(parts: Parts) -> None:
    """What this process keeps of a request after a step (the offer's record, then each
    step applied to it without reading back) is field for field what Redis holds."""
    _, assignment = await _offered(parts)
    stored = await parts.store.read(UNIT, RID)
    assert stored is not None and parts.known.get(UNIT, "sq", assignment) == stored
    actions = SquadActions(
        parts.redis,
        parts.store,
        _Teller(),
        Settings(tokens="admin:adm-12345678"),  # type: ignore[arg-type]
        known=parts.known,
    )
    for command in (
        protocol.Accept(assignment=assignment, id="k1"),
        protocol.Enroute(assignment=assignment, id="k2"),
        protocol.Arrive(assignment=assignment, id="k3"),
    ):
        done = await actions.apply(UNIT, "sq", command)
        stored = await parts.store.read(UNIT, RID)
        assert done.record is not None and done.record == stored, type(command).__name__
        assert parts.known.get(UNIT, "sq", assignment) == stored


def test_a_record_with_text_fields_is_the_record_read_back() -> None:
    """``with_fields`` (a step's text fields on a typed record) agrees with writing the
    fields into the hash and reading it back: numbers parsed, "" unsets, other names
    ignored."""
    record = RequestRecord.from_hash(
        {
            "id": RID,
            "state": "offered",
            "v": "2",
            "lat": "34.75",
            "lon": "113.62",
            "accept_by": "1700000060.5",
            "squad": "sq",
            "defer_reason": "parts",
        }
    )
    changes = {
        "state": "deferred",
        "v": "3",
        "promised_by": "1700003600.25",
        "defer_reason": "",
        "squad": "",
        "not_a_field": "x",
    }
    expected = RequestRecord.from_hash(record.as_fields() | changes)
    assert record.with_fields(changes) == expected
    assert expected.promised_by == 1700003600.25 and expected.defer_reason == ""
    assert expected.squad == "" and expected.state is State.DEFERRED and expected.v == 3


def test_the_field_view_reads_as_the_fields_in_text() -> None:
    """``field_view`` (what a step's message reads) gives what ``as_fields`` gives, field by
    field, without converting the rest: an unset field is absent, a number is in text."""
    record = RequestRecord.from_hash(
        {"id": RID, "state": "offered", "v": "2", "lat": "34.75", "lon": "113.62", "lang": "en"}
    )
    view, fields = record.field_view(), record.as_fields()
    assert dict(view) == fields and len(view) == len(fields)
    assert view["lat"] == "34.75" and view["v"] == "2" and view["lang"] == "en"
    assert view.get("promised_by") is None and "promised_by" not in fields
    assert view["caller_phone"] == fields["caller_phone"] == ""  # a text field is never unset
    assert view.get("not_a_field", "-") == "-"
    with pytest.raises(KeyError):
        view["promised_by"]


# ---- the scripts built from lib/ pieces, called directly ----------------------------------------


async def test_candidates_and_claim_scripts_from_their_shared_pieces(parts: Parts) -> None:
    redis, scripts = parts.redis, parts.scripts
    await _squad(redis, "near", SCENE[0] + 0.01, SCENE[1])
    await _squad(redis, "far", SCENE[0] + 0.05, SCENE[1])
    await _squad(redis, "stale-fix", SCENE[0] + 0.001, SCENE[1])
    await redis.zadd(keys.fix_times(UNIT), {"stale-fix": time.time() - 3600})
    flat = await scripts.candidates(
        keys=[
            keys.geo(UNIT),
            keys.available(UNIT),
            keys.free(UNIT),
            keys.skills(UNIT),
            keys.fix_times(UNIT),
        ],
        args=[SCENE[1], SCENE[0], 1, 256, "water_main_burst", time.time() - 120, 5, 60],
    )
    assert flat[0::3] == [b"near", b"far"]  # nearest first, the stale fix left out
    await redis.hset(keys.request(UNIT, RID), mapping={"state": "queued", "v": 1})
    request_keys = [
        keys.request(UNIT, RID),
        keys.queue(UNIT),
        keys.available(UNIT),
        keys.free(UNIT),
        keys.tried(UNIT, RID),
        keys.timers(UNIT),
        keys.events(UNIT),
        keys.timeline(UNIT, RID),
        keys.assignment(UNIT, "A1"),
        keys.stats(UNIT),
    ]
    squads = ["near", "far"]
    squad_keys = [
        k for s in squads for k in (keys.squad(UNIT, s), keys.outbox(UNIT, s), keys.jobs(UNIT, s))
    ]
    args = [RID, "A1", 1000, 2000, b"offer", 100, 2, "queued", "offered", "offered", "offer:A1"]
    await redis.sadd(keys.tried(UNIT, RID), "near")  # offered before: the untried come first
    result = await scripts.claim(keys=request_keys + squad_keys, args=[*args, *squads])
    assert result[:3] == [b"ok", b"far", 1] and result[4] == 2
    assert await redis.zrange(keys.outbox(UNIT, "far"), 0, -1) == [b"000000000001offer"]
    again = await scripts.claim(keys=request_keys + squad_keys, args=[*args, *squads])
    assert again == [b"stale", b"offered"]


async def test_ack_and_citizen_enqueue_scripts_from_their_shared_pieces(parts: Parts) -> None:
    redis, scripts = parts.redis, parts.scripts
    squad, outbox = keys.squad(UNIT, "sq"), keys.outbox(UNIT, "sq")
    await redis.hset(squad, "seq", 3)
    await redis.zadd(outbox, {f"{n:012d}x": n for n in (1, 2, 3)})
    assert await scripts.ack(keys=[squad, outbox], args=[9]) == 3  # never past the last sent
    assert await scripts.ack(keys=[squad, outbox], args=[1]) == 3  # never backwards
    assert await redis.zcard(outbox) == 0
    enqueue_keys = [keys.citizen_messages(UNIT, RID), keys.citizen_due(UNIT), keys.events(UNIT)]
    args = ["k1", RID, 1000, "{}", '{"type":"citizen_message_queued"}', 100]
    assert await scripts.citizen_enqueue(keys=enqueue_keys, args=args) == 1
    assert await scripts.citizen_enqueue(keys=enqueue_keys, args=args) == 0  # once per key
    assert await scripts.citizen_enqueue(keys=enqueue_keys, args=["k2", *args[1:]]) == 2
    assert await redis.zscore(keys.citizen_due(UNIT), RID) == 1000  # due from the head
    assert await redis.xlen(keys.events(UNIT)) == 2
