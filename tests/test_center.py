"""The supervision center's actions: rulings on disputes (uphold, reassign, assist), cancel,
note, reopen, the disputes list; on real Redis, in process and through real hub processes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis

from dispatch_field import protocol
from dispatch_field.client import FieldClient
from server import ids
from server.actions import NewRequest
from server.center.actions import CenterError
from server.center.moves import Mover
from server.city import load_city
from server.components import Components, build_components
from server.lifecycle import Disputed, RequestView, State, transition
from server.settings import Settings
from server.store import keys
from server.store.requests import Actor, event_json
from server.store.text import text
from tests.helpers import XIGONG, Api, auth, desk_auth, eventually, online_squad

CENTER = Actor("center", "li")


# ---- in process, real Redis: the move and its crash safety ------------------------------------


async def _disputed(services: Components) -> str:
    """A water request in Xigong, disputed (its squad said: not ours)."""
    created = await services.intake.create(
        NewRequest(
            caller_phone="13800000000",
            category="water_main_burst",
            description="a smell of gas at the valve",
            lat=XIGONG[0],
            lon=XIGONG[1],
        ),
        Actor("calltaker", "wang"),
    )
    request_id = created["id"]
    record = await services.requests.read("water", request_id)
    assert record is not None and record.state is State.QUEUED
    # The squad's dispute as the lifecycle makes it from an offer (no squad is online here).
    step = transition(RequestView(State.OFFERED, "S1", "A1"), Disputed("A1", "gas, not water"))
    event = event_json(
        step.event,
        request_id,
        record.received_at + 1,
        Actor("squad", "S1"),
        reason="gas, not water",
    )
    await services.requests.commit("water", request_id, record.v, step, [event])
    return request_id


async def _where(redis: Redis, request_id: str) -> dict[str, Any]:
    """Where the request is, as every structure of both units sees it."""
    found: dict[str, Any] = {"index": text(await redis.hget(keys.request_units(), request_id))}
    for unit in ("water", "gas", "power"):
        found[unit] = {
            "state": text(await redis.hget(keys.request(unit, request_id), "state") or b""),
            "queued": await redis.zscore(keys.queue(unit), request_id) is not None,
            "open": await redis.zscore(keys.open_requests(unit), request_id) is not None,
        }
    return found


def _types(timeline: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in timeline]


async def test_reassign_moves_the_request_and_keeps_its_deadlines(redis: Redis) -> None:
    services = build_components(Settings(), redis, load_city())
    request_id = await _disputed(services)
    before = await services.requests.read("water", request_id)
    answer = await services.center.reassign(
        request_id, "gas", "gas_leak_smell", [], "the gas company's valve", CENTER
    )
    assert answer["unit"] == "gas" and answer["state"] == "queued"
    where = await _where(redis, request_id)
    assert where["index"] == "gas"
    assert where["gas"] == {"state": "queued", "queued": True, "open": True}
    assert not where["water"]["queued"] and not where["water"]["open"]
    moved = await services.requests.read("gas", request_id)
    assert before is not None and moved is not None
    assert moved.category == "gas_leak_smell" and moved.v == before.v + 2
    assert (moved.accept_by, moved.arrive_by, moved.resolve_by) == (
        before.accept_by,
        before.arrive_by,
        before.resolve_by,
    )  # the citizen's clock runs on
    timeline = await services.requests.timeline("gas", request_id)
    assert _types(timeline) == ["received", "queued", "disputed", "reassigned", "reassigned_in"]
    ruling = timeline[3]
    assert ruling["by"] == "center:li" and ruling["note"] == "the gas company's valve"
    assert (ruling["unit"], ruling["from_unit"]) == ("gas", "water")


async def test_a_moved_request_takes_its_supervision_notices_along(redis: Redis) -> None:
    """One notice per request, kind and level, whichever unit holds it: an open notice the
    old unit got moves with the request (and stops counting as the old unit's open one)."""
    services = build_components(Settings(), redis, load_city())
    request_id = await _disputed(services)
    notice_id = f"{request_id}-accept-1"
    record = json.dumps({"id": notice_id, "kind": "accept", "level": 1, "unit": "water"})
    await redis.hset(keys.notices("water", request_id), notice_id, record)
    await redis.sadd(keys.request_open_notices("water", request_id), notice_id)
    await redis.zadd(keys.open_notices("water"), {notice_id: 1_767_225_600_000})
    await services.center.reassign(request_id, "gas", "gas_leak_smell", [], "gas", CENTER)
    assert text(await redis.hget(keys.notices("gas", request_id), notice_id)) == record
    assert await redis.sismember(keys.request_open_notices("gas", request_id), notice_id)
    assert await redis.zscore(keys.open_notices("gas"), notice_id) == 1_767_225_600_000
    assert await redis.zscore(keys.open_notices("water"), notice_id) is None
    assert not await redis.exists(keys.request_open_notices("water", request_id))


@pytest.mark.parametrize("crash_at", ["receive", "open_assist", "point_index"])
async def test_a_move_interrupted_by_a_crash_is_completed_by_the_retry_once(
    redis: Redis, crash_at: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = build_components(Settings(), redis, load_city())
    request_id = await _disputed(services)
    center = services.center
    targets = {
        "receive": (Mover, "receive"),
        "point_index": (Mover, "point_index"),
        "open_assist": (type(center), "_open_assist"),
    }
    owner, name = targets[crash_at]
    original = getattr(owner, name)

    async def crash(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("the process died here")

    monkeypatch.setattr(owner, name, crash)
    with pytest.raises(ConnectionError):
        await center.reassign(request_id, "gas", "gas_leak_smell", ["power"], "gas", CENTER)
    where = await _where(redis, request_id)
    assert where["index"] == "water"  # readers still find it where it was: never lost
    assert not where["water"]["queued"] and not where["water"]["open"]
    monkeypatch.setattr(owner, name, original)

    # The same ruling, retried, finishes the move (not a 409: the request is not disputed
    # any more, but this is the ruling that moved it).
    answer = await center.reassign(request_id, "gas", "gas_leak_smell", ["power"], "gas", CENTER)
    assert answer["unit"] == "gas" and answer["assist"] == ["power"]
    # A second retry finds the request queued in gas: refused with its state, nothing moves.
    with pytest.raises(CenterError) as refused:
        await center.reassign(request_id, "gas", "gas_leak_smell", ["power"], "gas", CENTER)
    assert refused.value.status == 409 and refused.value.state is State.QUEUED
    where = await _where(redis, request_id)
    assert where["index"] == "gas" and where["gas"]["open"] and where["gas"]["queued"]
    assert not where["water"]["open"] and not where["power"]["open"]
    timeline = await services.requests.timeline("gas", request_id)
    assert _types(timeline).count("reassigned_in") == 1
    assert _types(timeline).count("received") == 1
    gas_events = [
        json.loads(text(fields[b"e"])) for _, fields in await redis.xrange(keys.events("gas"))
    ]
    assert [e["type"] for e in gas_events if e["request"] == request_id] == [
        "reassigned_in",
        "assist_requested",
    ]
    assist = ids.assist_id(request_id, "power")
    item = await services.requests.read("power", assist)
    assert item is not None and item.assist_of == request_id and item.state is State.QUEUED
    assert await services.requests.unit_of(assist) == "power"


async def test_a_second_retry_of_a_finished_ruling_is_refused_with_the_state(
    redis: Redis,
) -> None:
    services = build_components(Settings(), redis, load_city())
    request_id = await _disputed(services)
    await services.center.reassign(request_id, "gas", "gas_leak_smell", [], "gas", CENTER)
    with pytest.raises(CenterError) as refused:
        await services.center.uphold(request_id, "no, water", CENTER)
    assert refused.value.status == 409 and refused.value.state is State.QUEUED


async def test_move_script_is_idempotent_by_version_and_replaces_an_older_stay(
    redis: Redis,
) -> None:
    """water -> gas -> water: the second move replaces what the first left in water."""
    services = build_components(Settings(), redis, load_city())
    request_id = await _disputed(services)
    await services.center.reassign(request_id, "gas", "gas_leak_smell", [], "gas", CENTER)
    mover = Mover(redis, services.scripts, 1000)
    # Receiving again what was received (water's hash still says: moving to gas): the
    # version is in gas already, so nothing is written.
    length = await redis.xlen(keys.events("gas"))
    timeline = await redis.lrange(keys.timeline("gas", request_id), 0, -1)
    received = await mover.receive("water", request_id, CENTER)
    assert received.unit == "gas" and received.state is State.QUEUED
    assert await redis.xlen(keys.events("gas")) == length
    assert await redis.lrange(keys.timeline("gas", request_id), 0, -1) == timeline
    with pytest.raises(ValueError):
        await mover.receive("gas", request_id, CENTER)  # gas holds it: not moving

    # Back to water: dispute it in gas, rule it to water.
    record = await services.requests.read("gas", request_id)
    assert record is not None
    step = transition(RequestView(State.OFFERED, "G1", "A2"), Disputed("A2", "water's after all"))
    await services.requests.commit(
        "gas",
        request_id,
        record.v,
        step,
        [event_json("disputed", request_id, record.received_at + 2, Actor("squad", "G1"))],
    )
    await services.center.reassign(request_id, "water", "water_main_burst", [], "water", CENTER)
    back = await services.requests.read("water", request_id)
    assert back is not None and back.unit == "water" and back.category == "water_main_burst"
    timeline = await services.requests.timeline("water", request_id)
    assert _types(timeline).count("reassigned_in") == 2
    assert (await _where(redis, request_id))["water"] == {
        "state": "queued",
        "queued": True,
        "open": True,
    }


# ---- through real hub processes -----------------------------------------------------------


async def _offered(client: FieldClient, request_id: str, timeout_s: float = 10) -> protocol.Offer:
    offer = await client.next_frame(protocol.Offer, timeout_s=timeout_s)
    assert offer.request.id == request_id, offer
    return offer


def _no_offer(client: FieldClient) -> bool:
    return not any(isinstance(f, protocol.Offer) for f in list(client.frames._queue))  # type: ignore[attr-defined]


async def _post(api: Api, path: str, body: Any, role: str = "center") -> Any:
    return await api.http.post(path, headers=auth(role), json=body)


async def test_dispute_reassign_the_new_units_squad_gets_the_offer(hubs: Any) -> None:
    hub = hubs.start()
    api = Api(hub)
    water = await online_squad(api, hub, *XIGONG, unit="water", name="water-1")
    gas = await online_squad(api, hub, XIGONG[0] + 0.002, XIGONG[1], unit="gas", name="gas-1")
    created = await api.request(*XIGONG)
    offer = await _offered(water, created["id"])
    await water.accept(offer.assignment)
    await water.dispute(offer.assignment, "it is a gas leak, not a water main")

    listed = (await api.http.get("/api/v1/center/disputes", headers=auth("center"))).json()
    assert [d["id"] for d in listed] == [created["id"]]
    dispute = listed[0]
    assert dispute["squad"] == water.squad and dispute["reason"].startswith("it is a gas")
    assert dispute["district"] == "xigong" and dispute["disputed_at"] > 0
    assert "gas" in [c["unit"] for c in dispute["candidates"]]
    assert "water" not in [c["unit"] for c in dispute["candidates"]]

    ruled = await _post(
        api,
        f"/api/v1/requests/{created['id']}/ruling",
        {
            "decision": "reassign",
            "unit": "gas",
            "category": "gas_leak_smell",
            "note": "gas company's jurisdiction",
        },
    )
    assert ruled.status_code == 200, ruled.text
    moved = await _offered(gas, created["id"])
    assert moved.request.category == "gas_leak_smell"
    detail = await api.get_request(created["id"])
    assert detail["unit"] == "gas" and detail["state"] == "offered"
    assert detail["squad"] == gas.squad
    types = [e["type"] for e in detail["timeline"]]
    assert types[-3:] == ["reassigned", "reassigned_in", "offered"]
    await asyncio.sleep(0.3)
    assert _no_offer(water)  # the old unit's squad has nothing more
    assert (await api.http.get("/api/v1/center/disputes", headers=auth("center"))).json() == []

    async def ledger_follows() -> bool:
        rows = (
            await api.http.get(
                "/api/v1/ledger/requests", headers=auth("center"), params={"unit": "gas"}
            )
        ).json()
        return any(r["id"] == created["id"] and r["category"] == "gas_leak_smell" for r in rows)

    try:
        await eventually(ledger_follows)
    except AssertionError:
        rows = (await api.http.get("/api/v1/ledger/requests", headers=auth("center"))).json()
        raise AssertionError(rows) from None
    for client in (water, gas):
        await client.close()
    await api.close()


async def test_uphold_offers_the_request_to_the_disputing_squad_first(hubs: Any) -> None:
    hub = hubs.start()
    api = Api(hub)
    disputer = await online_squad(api, hub, *XIGONG, name="disputer")
    created = await api.request(*XIGONG)
    offer = await _offered(disputer, created["id"])
    await disputer.dispute(offer.assignment, "not ours")
    # Another squad, now nearer than the disputing one, which drove away.
    other = await online_squad(api, hub, XIGONG[0], XIGONG[1] + 0.0005, name="nearer")
    await disputer.pos(XIGONG[0] + 0.02, XIGONG[1])
    await asyncio.sleep(0.3)
    ruled = await _post(
        api,
        f"/api/v1/requests/{created['id']}/ruling",
        {"decision": "uphold", "note": "your pipe: go"},
    )
    assert ruled.status_code == 200, ruled.text
    again = await _offered(disputer, created["id"])
    assert again.assignment != offer.assignment
    detail = await api.get_request(created["id"])
    assert detail["squad"] == disputer.squad and detail["unit"] == "water"
    upheld = next(e for e in detail["timeline"] if e["type"] == "upheld")
    assert upheld["by"].startswith("center") and upheld["disputed_by"] == disputer.squad
    assert _no_offer(other)
    for client in (disputer, other):
        await client.close()
    await api.close()


async def test_assisting_units_get_assist_offers_and_end_with_the_lead(hubs: Any) -> None:
    hub = hubs.start()
    api = Api(hub)
    water = await online_squad(api, hub, *XIGONG, unit="water", name="water-1")
    gas = await online_squad(api, hub, *XIGONG, unit="gas", name="gas-1")
    # Squads skilled for their own unit's categories only still get the assist.
    power = await online_squad(
        api, hub, *XIGONG, unit="power", name="power-1", skills=["power_line_down"]
    )
    roads = await online_squad(api, hub, *XIGONG, unit="municipal", name="roads-1")
    created = await api.request(*XIGONG)
    offer = await _offered(water, created["id"])
    await water.dispute(offer.assignment, "gas")
    ruled = await _post(
        api,
        f"/api/v1/requests/{created['id']}/ruling",
        {
            "decision": "reassign",
            "unit": "gas",
            "category": "gas_leak_smell",
            "assist": ["power", "municipal"],
            "note": "gas leads; power and roads assist",
        },
    )
    assert ruled.status_code == 200, ruled.text
    assert ruled.json()["assist"] == ["power", "municipal"]
    lead = await _offered(gas, created["id"])
    power_offer = await _offered(power, ids.assist_id(created["id"], "power"))
    roads_offer = await _offered(roads, ids.assist_id(created["id"], "municipal"))
    assert power_offer.request.assist_of == created["id"]
    assert roads_offer.request.assist_of == created["id"]
    # The assisting squads report their steps on their items.
    await power.accept(power_offer.assignment)
    await power.enroute(power_offer.assignment)
    await power.arrive(power_offer.assignment)
    await roads.accept(roads_offer.assignment)
    item = await api.get_request(power_offer.request.id)
    assert item["state"] == "on_scene" and item["assist_of"] == created["id"]
    assert item["unit"] == "power"
    # Power finishes its part; roads is still at it when gas resolves the request.
    await power.resolve(power_offer.assignment, "line cut off")
    await gas.accept(lead.assignment)
    await gas.arrive(lead.assignment)
    await gas.resolve(lead.assignment, "valve closed")
    revoke = await roads.next_frame(protocol.Revoke)
    assert revoke.assignment == roads_offer.assignment and revoke.reason == "cancelled"
    roads_item = await api.get_request(roads_offer.request.id)
    assert roads_item["state"] == "cancelled" and roads_item["cancel_reason"] == "lead_closed"
    assert (await api.get_request(power_offer.request.id))["state"] == "resolved"
    assert (await api.get_request(created["id"]))["state"] == "resolved"
    lead_types = [e["type"] for e in (await api.get_request(created["id"]))["timeline"]]
    assert "assist_requested" in lead_types
    assert (await api.get_squad(roads.squad))["free_capacity"] == 1
    for client in (water, gas, power, roads):
        await client.close()
    await api.close()


async def test_cancel_revokes_the_offer_and_frees_the_squad(hubs: Any) -> None:
    hub = hubs.start()
    api = Api(hub)
    squad = await online_squad(api, hub, *XIGONG)
    first = await api.request(*XIGONG)
    offer = await _offered(squad, first["id"])
    done = await _post(
        api,
        f"/api/v1/requests/{first['id']}/cancel",
        {"reason": "withdrawn", "note": "the caller fixed it himself"},
    )
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "cancelled"
    revoke = await squad.next_frame(protocol.Revoke)
    assert revoke.assignment == offer.assignment and revoke.reason == "cancelled"
    second = await api.request(*XIGONG)
    assert second["squad"] == squad.squad  # its capacity came back
    await _offered(squad, second["id"])
    detail = await api.get_request(first["id"])
    cancelled = detail["timeline"][-1]
    assert cancelled["type"] == "cancelled" and cancelled["by"].startswith("center")
    assert cancelled["note"] == "the caller fixed it himself"
    assert cancelled["squad"] == squad.squad and detail["cancel_reason"] == "withdrawn"
    await squad.close()
    await api.close()


async def test_cancel_a_duplicate_names_an_existing_original(hubs: Any) -> None:
    hub = hubs.start()
    api = Api(hub)
    original = await api.request(*XIGONG)
    twin = await api.request(*XIGONG)
    path = f"/api/v1/requests/{twin['id']}/cancel"
    before = await api.get_request(twin["id"])
    for body, field in (
        ({"reason": "duplicate", "note": "n", "duplicate_of": twin["id"]}, "duplicate_of"),
        ({"reason": "duplicate", "note": "n", "duplicate_of": "20000101-000001"}, "duplicate_of"),
        ({"reason": "duplicate", "note": "n"}, "duplicate_of"),
        ({"reason": "bored", "note": "n"}, "reason"),
        ({"reason": "withdrawn", "note": "n", "color": "red"}, "color"),
    ):
        refused = await _post(api, path, body)
        assert refused.status_code == 422, (body, refused.text)
        assert field in refused.json()["error"]["fields"], refused.text
    assert await api.get_request(twin["id"]) == before
    done = await _post(
        api, path, {"reason": "duplicate", "note": "same burst", "duplicate_of": original["id"]}
    )
    assert done.status_code == 200, done.text
    detail = await api.get_request(twin["id"])
    assert detail["state"] == "cancelled" and detail["duplicate_of"] == original["id"]
    again = await _post(api, path, {"reason": "withdrawn", "note": "again"})
    assert again.status_code == 409
    assert again.json()["error"]["state"] == "cancelled"
    assert again.json()["error"]["code"] == "invalid_state"
    # The original must be a caller's request somebody handles: the caller is told so.
    third = await api.request(*XIGONG)
    third_path = f"/api/v1/requests/{third['id']}/cancel"
    before = await api.get_request(third["id"])
    for original_id in (twin["id"], f"{original['id']}~gas"):  # cancelled; an assist item
        refused = await _post(
            api, third_path, {"reason": "duplicate", "note": "n", "duplicate_of": original_id}
        )
        assert refused.status_code == 422, (original_id, refused.text)
        assert "duplicate_of" in refused.json()["error"]["fields"]
    assert await api.get_request(third["id"]) == before
    unknown = await _post(
        api,
        "/api/v1/requests/20000101-000009/cancel",
        {"reason": "duplicate", "note": "n", "duplicate_of": "20000101-000009"},
    )
    assert unknown.status_code == 404  # the request itself first
    await api.close()


async def test_a_note_is_recorded_without_changing_the_state(hubs: Any) -> None:
    hub = hubs.start()
    api = Api(hub)
    created = await api.request(*XIGONG)
    before = await api.get_request(created["id"])
    noted = await _post(
        api,
        f"/api/v1/requests/{created['id']}/notes",
        {"note": "caller phoned again: water in the basement"},
    )
    assert noted.status_code == 201, noted.text
    after = await api.get_request(created["id"])
    assert after["state"] == before["state"]
    note = after["timeline"][-1]
    assert note["type"] == "note" and note["by"].startswith("center")
    assert note["note"] == "caller phoned again: water in the basement"
    refused = await _post(
        api, f"/api/v1/requests/{created['id']}/notes", {"note": "x"}, role="calltaker"
    )
    assert refused.status_code == 403
    missing = await _post(api, "/api/v1/requests/20000101-000009/notes", {"note": "x"})
    assert missing.status_code == 404
    await api.close()


async def test_reopen_offers_it_again_with_a_new_resolve_deadline(hubs: Any) -> None:
    hub = hubs.start(time_scale=0.01)
    api = Api(hub)
    squad = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG)
    offer = await _offered(squad, created["id"])
    early = await _post(api, f"/api/v1/requests/{created['id']}/reopen", {"note": "n"})
    assert early.status_code == 409 and early.json()["error"]["state"] == "offered"
    await squad.accept(offer.assignment)
    await squad.arrive(offer.assignment)
    await squad.resolve(offer.assignment, "fixed")
    before = await api.get_request(created["id"])
    reopened = await _post(
        api, f"/api/v1/requests/{created['id']}/reopen", {"note": "the caller says it still leaks"}
    )
    assert reopened.status_code == 200, reopened.text
    again = await _offered(squad, created["id"])
    assert again.assignment != offer.assignment
    after = await api.get_request(created["id"])
    assert after["state"] == "offered"
    assert after["deadlines"]["resolve_by"] > before["deadlines"]["resolve_by"]
    event = next(e for e in after["timeline"] if e["type"] == "reopened")
    assert event["resolve_by"] == pytest.approx(after["deadlines"]["resolve_by"])
    await squad.close()
    await api.close()


async def test_bad_rulings_are_refused_and_change_nothing(hubs: Any) -> None:
    hub = hubs.start()
    api = Api(hub)
    squad = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG)
    path = f"/api/v1/requests/{created['id']}/ruling"
    offered = await api.get_request(created["id"])
    not_disputed = await _post(api, path, {"decision": "uphold", "note": "go"})
    assert not_disputed.status_code == 409
    error = not_disputed.json()["error"]
    assert (error["code"], error["state"], error["fields"]) == ("invalid_state", "offered", {})
    assert await api.get_request(created["id"]) == offered

    offer = await _offered(squad, created["id"])
    await squad.dispute(offer.assignment, "not ours")
    disputed = await api.get_request(created["id"])
    for body, status, field in (
        ({"decision": "reassign", "unit": "nowhere", "note": "n"}, 422, "unit"),
        ({"decision": "reassign", "unit": "gas", "note": "n"}, 422, "unit"),  # water burst
        (
            {"decision": "reassign", "unit": "gas", "category": "no_such", "note": "n"},
            422,
            "category",
        ),
        (
            {
                "decision": "reassign",
                "unit": "gas",
                "category": "gas_leak_smell",
                "assist": ["nowhere"],
                "note": "n",
            },
            422,
            "assist",
        ),
        (
            {
                "decision": "reassign",
                "unit": "gas",
                "category": "gas_leak_smell",
                "assist": ["gas"],
                "note": "n",
            },
            422,
            "assist",
        ),
        ({"decision": "uphold", "note": "n", "unit": "gas"}, 422, "unit"),
        ({"decision": "shrug", "note": "n"}, 422, None),
        ({"decision": "uphold"}, 422, "note"),
    ):
        refused = await _post(api, path, body)
        assert refused.status_code == status, (body, refused.text)
        if field:
            assert field in refused.json()["error"]["fields"], (body, refused.text)
    # A refusal by the city names the codes it is about, for the console to say in names.
    elsewhere = await _post(api, path, {"decision": "reassign", "unit": "gas", "note": "n"})
    error = elsewhere.json()["error"]
    assert error["code"] == "no_jurisdiction"
    assert error["refused"] == {
        "unit": "gas",
        "category": "water_main_burst",
        "district": disputed["district"],
        "holder": "water",
    }
    same = await _post(
        api,
        path,
        {"decision": "reassign", "unit": "water", "category": "water_main_burst", "note": "n"},
    )
    assert same.json()["error"]["code"] == "same_unit"
    assert same.json()["error"]["refused"] == {"unit": "water"}
    wrong_role = await _post(api, path, {"decision": "uphold", "note": "n"}, role="calltaker")
    assert wrong_role.status_code == 403
    unknown = await _post(
        api, "/api/v1/requests/20000101-000009/ruling", {"decision": "uphold", "note": "n"}
    )
    assert unknown.status_code == 404
    assert await api.get_request(created["id"]) == disputed
    await squad.close()
    await api.close()


async def test_a_unit_desk_notes_and_sees_the_disputes_of_its_own_unit_only(hubs: Any) -> None:
    hub = hubs.start()
    api = Api(hub)
    water_desk, gas_desk = await desk_auth(api.http, "water"), await desk_auth(api.http, "gas")
    squad = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG)
    offer = await _offered(squad, created["id"])
    await squad.dispute(offer.assignment, "not ours")
    notes = f"/api/v1/requests/{created['id']}/notes"
    own = await api.http.post(notes, headers=water_desk, json={"note": "we checked: gas"})
    assert own.status_code == 201, own.text
    other = await api.http.post(notes, headers=gas_desk, json={"note": "not yours to note"})
    assert other.status_code == 403
    for blank in ("   ", "\t\n", "\u0000"):  # a note is words: a blank one is refused
        refused = await api.http.post(notes, headers=water_desk, json={"note": blank})
        assert refused.status_code == 422, (blank, refused.text)
        assert "note" in refused.json()["error"]["fields"], refused.text
    timeline = (await api.get_request(created["id"]))["timeline"]
    assert [e["note"] for e in timeline if e["type"] == "note"] == ["we checked: gas"]
    assert timeline[-1]["by"] == "unit:desk_water"
    seen = {}
    for name, desk in (("water", water_desk), ("gas", gas_desk)):
        listed = await api.http.get("/api/v1/center/disputes", headers=desk)
        assert listed.status_code == 200, listed.text
        seen[name] = [d["id"] for d in listed.json()]
    assert seen == {"water": [created["id"]], "gas": []}
    # Another unit's disputes asked for by name: refused, as on the queue (it once answered
    # 200 [], so a desk could not tell "none" from "not yours"); the center may filter.
    asked = await api.http.get("/api/v1/center/disputes?unit=power", headers=water_desk)
    assert asked.status_code == 403, asked.text
    mine = await api.http.get("/api/v1/center/disputes?unit=water", headers=water_desk)
    assert [d["id"] for d in mine.json()] == [created["id"]]
    center = auth("center")
    by_unit = {
        unit: (await api.http.get(f"/api/v1/center/disputes?unit={unit}", headers=center)).json()
        for unit in ("water", "gas")
    }
    assert [d["id"] for d in by_unit["water"]] == [created["id"]] and by_unit["gas"] == []
    unknown = await api.http.get("/api/v1/center/disputes?unit=nosuch", headers=center)
    assert unknown.status_code == 422 and "unit" in unknown.text
    ruling = await api.http.post(
        f"/api/v1/requests/{created['id']}/ruling",
        headers=water_desk,
        json={"decision": "uphold", "note": "we go"},
    )
    assert ruling.status_code == 403  # rulings are the center's
    await squad.close()
    await api.close()


async def test_a_moved_request_is_the_new_units_and_an_unknown_id_tells_a_desk_nothing(
    hubs: Any,
) -> None:
    """A desk reads and acts on the requests its unit holds now: one moved to it comes with
    its history (the ledger's events and the caller's messages too, not only the detail),
    one moved away goes with it; and a made-up id is refused as another unit's would be,
    so that no desk can count the other units' requests by trying ids."""
    hub = hubs.start()
    api = Api(hub)
    water_desk, gas_desk = await desk_auth(api.http, "water"), await desk_auth(api.http, "gas")
    squad = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG)
    request_id = created["id"]
    offer = await _offered(squad, request_id)
    await squad.dispute(offer.assignment, "a gas smell, not water")
    noted = await api.http.post(
        f"/api/v1/requests/{request_id}/notes", headers=water_desk, json={"note": "gas, surely"}
    )
    assert noted.status_code == 201, noted.text
    ruled = await _post(
        api,
        f"/api/v1/requests/{request_id}/ruling",
        {"decision": "reassign", "unit": "gas", "category": "gas_leak_smell", "note": "gas"},
    )
    assert ruled.status_code == 200, ruled.text
    events_path = f"/api/v1/ledger/requests/{request_id}/events"

    async def recorded() -> bool:
        events = (await api.http.get(events_path, headers=auth("center"))).json()
        return "reassigned" in [e["type"] for e in events]

    await eventually(recorded)
    events = await api.http.get(events_path, headers=gas_desk)
    assert events.status_code == 200, events.text
    assert {e["unit"] for e in events.json()} == {"water", "gas"}
    assert "note" in [e["type"] for e in events.json()]
    messages = f"/api/v1/requests/{request_id}/messages"
    assert (await api.http.get(messages, headers=gas_desk)).status_code == 200
    assert (await api.http.get(f"/api/v1/requests/{request_id}", headers=gas_desk)).is_success
    for path in (events_path, messages, f"/api/v1/requests/{request_id}"):
        assert (await api.http.get(path, headers=water_desk)).status_code == 403, path

    unknown = f"{request_id.split('-')[0]}-999999"
    tries = [
        api.http.post(f"/api/v1/requests/{unknown}/notes", headers=water_desk, json={"note": "?"}),
        api.http.get(f"/api/v1/requests/{unknown}/messages", headers=water_desk),
        api.http.get(f"/api/v1/ledger/requests/{unknown}/events", headers=water_desk),
        api.http.get(f"/api/v1/requests/{unknown}", headers=water_desk),
    ]
    assert [(await answer).status_code for answer in tries] == [403, 403, 403, 403]
    center_messages = await api.http.get(
        f"/api/v1/requests/{unknown}/messages", headers=auth("center")
    )
    assert center_messages.status_code == 404
    await squad.close()
    await api.close()
