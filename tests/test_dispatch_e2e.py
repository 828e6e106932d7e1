"""End to end over real sockets: hub processes on a real Redis, squads on the reference client."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from geographiclib.geodesic import Geodesic

from dispatch_field import protocol
from dispatch_field.client import CommandRejected, FieldClient
from server.store import keys
from tests.helpers import XIGONG, Api, auth, eventually, online_squad


def geodesic_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    return float(Geodesic.WGS84.Inverse(a[0], a[1], b[0], b[1], Geodesic.DISTANCE)["s12"])


async def test_nearest_squad_gets_offer_and_timeline_shows_every_step(hubs):
    hub = hubs.start()
    api = Api(hub)
    rng = random.Random(7)
    spots = [
        (XIGONG[0] + rng.uniform(-0.03, 0.03), XIGONG[1] + rng.uniform(-0.03, 0.03))
        for _ in range(8)
    ]
    clients = [
        await online_squad(api, hub, lat, lon, name=f"water-{i}")
        for i, (lat, lon) in enumerate(spots)
    ]
    scene = (34.668, 112.447)
    nearest = min(range(len(spots)), key=lambda i: geodesic_m(scene, spots[i]))

    created = await api.request(*scene)
    assert created["route"] == "linkage" and created["unit"] == "water"
    assert created["squad"] == clients[nearest].squad
    offer = await clients[nearest].next_frame(protocol.Offer)
    assert offer.request.id == created["id"]
    assert offer.assignment == created["assignment"]
    for i, other in enumerate(clients):
        if i != nearest:
            assert other.frames.empty() or not any(
                isinstance(f, protocol.Offer) for f in list(other.frames._queue)
            )  # type: ignore[attr-defined]

    squad = clients[nearest]
    await squad.accept(offer.assignment)
    await squad.enroute(offer.assignment)
    await squad.arrive(offer.assignment)
    await squad.resolve(offer.assignment, note="valve replaced")
    detail = await api.get_request(created["id"])
    assert detail["state"] == "resolved"
    assert detail["result"] == "valve replaced"
    assert [e["type"] for e in detail["timeline"]] == [
        "received",
        "queued",
        "offered",
        "accepted",
        "en_route",
        "arrived",
        "resolved",
    ]
    assert detail["deadlines"]["accept_by"] > detail["received_at"]
    times = [detail[k] for k in ("received_at", "offered_at", "accepted_at", "arrived_at")]
    # All in seconds, in order (offered_at is kept to the millisecond, cut, not rounded).
    assert all(b >= a - 0.001 for a, b in zip(times, times[1:], strict=False)), times
    assert times[-1] - times[0] < 60
    seen = await api.get_squad(squad.squad)
    assert seen["assignments"] == [] and seen["free_capacity"] == 1
    for client in clients:
        await client.close()
    await api.close()


async def test_offer_window_passes_and_next_squad_gets_it(hubs, redis):
    hub = hubs.start(offer_window_s=0.8, timer_poll_ms=50)
    api = Api(hub)
    near = await online_squad(api, hub, XIGONG[0], XIGONG[1] + 0.001, name="near")
    far = await online_squad(api, hub, XIGONG[0], XIGONG[1] + 0.02, name="far")
    created = await api.request(*XIGONG)
    first = await near.next_frame(protocol.Offer)
    revoke = await near.next_frame(protocol.Revoke, timeout_s=5)
    assert revoke.assignment == first.assignment and revoke.reason == "offer_window_passed"
    second = await far.next_frame(protocol.Offer, timeout_s=5)
    assert second.request.id == created["id"] and second.assignment != first.assignment
    await far.accept(second.assignment)
    detail = await api.get_request(created["id"])
    assert detail["state"] == "accepted" and detail["squad"] == far.squad
    types = [e["type"] for e in detail["timeline"]]
    assert types == ["received", "queued", "offered", "offer_expired", "offered", "accepted"]
    assert int(await redis.hget(keys.stats("water"), "non_responses")) == 1
    with pytest.raises(CommandRejected) as refused:  # the revoked offer cannot be accepted
        await near.accept(first.assignment)
    assert refused.value.code in ("invalid_transition", "unknown_assignment")
    assert (await api.get_squad(near.squad))["free_capacity"] == 1
    await near.close()
    await far.close()
    await api.close()


async def test_queued_request_goes_to_squad_coming_on_duty(hubs):
    hub = hubs.start()
    api = Api(hub)
    created = await api.request(*XIGONG)
    assert created["state"] == "queued"
    squad = await api.squad("water", "late")
    from dispatch_field.client import FieldClient

    client = FieldClient(hub.ws, squad["id"], squad["token"], reconnect=False)
    await client.start()
    await client.pos(*XIGONG)
    await asyncio.sleep(0.1)
    assert (await api.get_request(created["id"]))["state"] == "queued"  # off duty: no offer
    await client.duty(True)
    offer = await client.next_frame(protocol.Offer, timeout_s=5)
    assert offer.request.id == created["id"]
    await client.close()
    await api.close()


async def test_position_inside_arrival_radius_records_arrival(hubs):
    hub = hubs.start(arrival_radius_m=100)
    api = Api(hub)
    client = await online_squad(api, hub, XIGONG[0] + 0.02, XIGONG[1])
    created = await api.request(*XIGONG)
    offer = await client.next_frame(protocol.Offer)
    await client.accept(offer.assignment)
    await client.enroute(offer.assignment)
    await client.pos(XIGONG[0] + 0.005, XIGONG[1])  # ~550 m away: not yet
    await asyncio.sleep(0.1)
    assert (await api.get_request(created["id"]))["state"] == "en_route"
    await client.pos(XIGONG[0] + 0.0005, XIGONG[1])  # ~55 m

    async def arrived() -> dict:
        detail = await api.get_request(created["id"])
        return detail if detail["state"] == "on_scene" else {}

    detail = await eventually(arrived)
    assert detail["timeline"][-1]["by"] == "system:auto-arrival"
    # The phone is told, so that it shows the job on scene (it once went on showing it on
    # the way, with "arrived" as its next step).
    told = await client.next_frame(protocol.Arrived, timeout_s=5)
    assert told.assignment == offer.assignment
    assert told.at == pytest.approx(detail["timeline"][-1]["at"], abs=2.0)
    await client.close()
    await api.close()


async def _accepted_far_from_the_scene(hubs: Any) -> tuple[Any, Api, FieldClient, Any, Any]:
    """A hub that credits a step's ``at`` at most 1 s back, and a request accepted by a
    squad too far away for the hub to record its arrival itself."""
    hub = hubs.start(step_delay_max_s=1.0, clock_skew_s=300.0)
    api = Api(hub)
    client = await online_squad(api, hub, XIGONG[0] + 0.05, XIGONG[1])
    created = await api.request(*XIGONG)
    offer = await client.next_frame(protocol.Offer)
    await client.accept(offer.assignment)
    return hub, api, client, created, offer


async def test_a_connected_squad_cannot_backdate_its_steps(hubs):
    """A squad connected all along once dated en route, arrival and resolution to a second
    after its acceptance, 25 s later, and the scorecard counted them on time; later it made
    the hub read its clock as an hour slow with positions dated an hour back, and dated its
    arrival to its acceptance again. A phone's ``at`` counts on the hub's clock (its offset
    read from its positions, believed within ``clock_skew_s``) only as far back as the hub
    can vouch for: a step taken online is sent at once, within ``step_delay_max_s``; one
    taken offline, before this connection, after the squad's last connection ended. A step
    dated earlier counts when the hub received it."""
    _, api, client, created, offer = await _accepted_far_from_the_scene(hubs)
    accepted = (await api.get_request(created["id"]))["accepted_at"]
    await asyncio.sleep(4.5)
    await client.pos(XIGONG[0] + 0.05, XIGONG[1])  # its clock, as the hub reads it
    sent = time.time()
    await client.command(protocol.Enroute(assignment=offer.assignment, id="e1", at=accepted + 0.5))
    en_route = _step_at(await api.get_request(created["id"]), "en_route")
    assert en_route >= sent - 0.01  # when it came, not the second after the acceptance
    # Positions dated an hour back: the phone's clock "an hour slow".
    for _ in range(3):
        await client.send(protocol.Pos(lat=XIGONG[0] + 0.05, lon=XIGONG[1], ts=time.time() - 3600))
    await asyncio.sleep(0.3)
    sent = time.time()
    await client.command(protocol.Arrive(assignment=offer.assignment, id="r1", at=accepted + 1))
    arrived = _step_at(await api.get_request(created["id"]), "arrived")
    assert arrived >= sent - 2.5  # at most the 1 s delay and the tolerance back: not 5 s
    assert (await api.get_request(created["id"]))["state"] == "on_scene"
    await api.close()
    await client.close()


async def test_a_step_held_offline_counts_at_its_time(hubs):
    """A step the phone took while offline (in a tunnel) counts at its time, on the hub's
    clock; how old it may be is tested in tests/test_field_core.py."""
    hub, api, client, created, offer = await _accepted_far_from_the_scene(hubs)
    await client.enroute(offer.assignment)
    await client.close()
    await eventually(lambda: _offline(api, client.squad))
    gone_at = time.time()
    await asyncio.sleep(1.5)
    again = FieldClient(hub.ws, client.squad, client.token, reconnect=False)
    again.last_seq = client.last_seq
    await again.start()
    await again.next_frame(protocol.Welcome)
    await again.pos(XIGONG[0] + 0.05, XIGONG[1])
    offline = protocol.Arrive(assignment=offer.assignment, id="a2", at=gone_at + 0.5)
    await again.command(offline)  # in the tunnel: it counts at its time
    arrived = _step_at(await api.get_request(created["id"]), "arrived")
    assert arrived == pytest.approx(gone_at + 0.5, abs=0.01)
    await again.close()
    await api.close()


def _step_at(detail: dict[str, Any], kind: str) -> float:
    return float(next(e["at"] for e in detail["timeline"] if e["type"] == kind))


async def _offline(api: Api, squad: str) -> bool:
    return not (await api.http.get(f"/api/v1/squads/{squad}", headers=auth("center"))).json()[
        "online"
    ]


async def test_retried_command_is_applied_once(hubs):
    hub = hubs.start()
    api = Api(hub)
    client = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG)
    offer = await client.next_frame(protocol.Offer)
    accept = protocol.Accept(assignment=offer.assignment, id="same-id-1")
    assert (await client.command(accept)).id == "same-id-1"
    assert (await client.command(accept)).id == "same-id-1"
    detail = await api.get_request(created["id"])
    assert [e["type"] for e in detail["timeline"]].count("accepted") == 1
    await client.close()
    await api.close()


async def test_a_command_id_reused_for_another_command_is_refused_and_tells_no_one(hubs, redis):
    """A command id stands for one command (its assignment and kind): sent again, it is a
    retry (``ok``, applied once); used for another step or another assignment, it is
    refused, nothing is applied and the caller is told nothing of a step never taken."""
    hub = hubs.start()
    api = Api(hub)
    client = await online_squad(api, hub, *XIGONG)
    first = await api.request(*XIGONG)
    offer = await client.next_frame(protocol.Offer)

    async def told(request_id: str) -> list[str]:
        fields = await redis.hkeys(keys.citizen_messages("water", request_id))
        return sorted(f.decode().split(":")[2] for f in fields if f.startswith(b"k:"))

    accept = protocol.Accept(assignment=offer.assignment, id="c1")
    await client.command(accept)
    await client.command(accept)  # a retry: ok again
    reused: list[protocol.Command] = [
        protocol.Enroute(assignment=offer.assignment, id="c1"),
        protocol.Resolve(assignment=offer.assignment, id="c1", note="all fixed, thank you"),
    ]
    for command in reused:
        with pytest.raises(CommandRejected) as refused:
            await client.command(command)
        assert refused.value.code == "invalid" and "'c1'" in refused.value.message
    assert (await api.get_request(first["id"]))["state"] == "accepted"
    assert await told(first["id"]) == ["accepted", "received_unit"]
    await client.command(protocol.Enroute(assignment=offer.assignment, id="c2"))
    await client.arrive(offer.assignment)
    await client.resolve(offer.assignment)
    # The same id on the squad's next assignment is refused too.
    second = await api.request(*XIGONG)
    offer2 = await client.next_frame(protocol.Offer)
    with pytest.raises(CommandRejected) as refused:
        await client.command(protocol.Accept(assignment=offer2.assignment, id="c1"))
    assert refused.value.code == "invalid"
    types = [e["type"] for e in (await api.get_request(first["id"]))["timeline"]]
    assert types.count("accepted") == types.count("en_route") == types.count("resolved") == 1
    assert await told(first["id"]) == [
        "accepted",
        "arrived",
        "en_route",
        "received_unit",
        "resolved",
    ]
    assert (await api.get_request(second["id"]))["state"] == "offered"
    assert await told(second["id"]) == ["received_unit"]
    await client.close()
    await api.close()


async def test_a_step_cannot_be_dated_before_the_step_it_follows(hubs):
    """A phone's ``at`` may be earlier than now (a step recorded offline) but not earlier
    than the request's last step: beyond the clock skew it is refused, within it the step
    is recorded at that last step's time, so the timeline stays in order."""
    hub = hubs.start(clock_skew_s=0.2)
    api = Api(hub)
    client = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG)
    offer = await client.next_frame(protocol.Offer)
    await asyncio.sleep(0.6)
    await client.accept(offer.assignment)
    detail = await api.get_request(created["id"])
    received, accepted = detail["received_at"], detail["accepted_at"]
    early = protocol.Enroute(assignment=offer.assignment, id="e1", at=received + 0.01)
    with pytest.raises(CommandRejected) as refused:
        await client.command(early)
    assert refused.value.code == "invalid_time" and "last step" in refused.value.message
    await client.command(protocol.Enroute(assignment=offer.assignment, id="e2", at=accepted - 0.1))
    await client.command(protocol.Arrive(assignment=offer.assignment, id="a1", at=accepted - 0.1))
    timeline = (await api.get_request(created["id"]))["timeline"]
    times = [e["at"] for e in timeline if e["type"] in ("accepted", "en_route", "arrived")]
    assert times == [accepted, accepted, accepted], timeline
    await client.close()
    await api.close()


async def test_json_subprotocol_carries_the_same_frames(hubs):
    hub = hubs.start()
    api = Api(hub)
    client = await online_squad(api, hub, *XIGONG, json=True)
    created = await api.request(*XIGONG)
    offer = await client.next_frame(protocol.Offer)
    assert offer.request.id == created["id"] and offer.seq == 1
    await client.accept(offer.assignment)
    assert (await api.get_request(created["id"]))["state"] == "accepted"
    await client.close()
    await api.close()


async def test_pushes_reach_a_squad_connected_to_another_process(hubs):
    a, b = hubs.start(), hubs.start()
    api_a, api_b = Api(a), Api(b)
    client = await online_squad(api_a, a, *XIGONG)  # connected to A
    created = await api_b.request(*XIGONG)  # taken through B
    offer = await client.next_frame(protocol.Offer, timeout_s=5)
    assert offer.request.id == created["id"]
    for api in (api_a, api_b):
        await api.close()
    await client.close()


async def test_wall_map_shows_online_squads_and_open_requests(hubs):
    hub = hubs.start()
    api = Api(hub)
    client = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG)
    offer = await client.next_frame(protocol.Offer)
    from tests.helpers import auth

    shown = (await api.http.get("/api/v1/map", headers=auth("wall"))).json()
    assert [(s["id"], s["busy"]) for s in shown["squads"]] == [(client.squad, True)]
    assert [(r["id"], r["state"]) for r in shown["requests"]] == [(created["id"], "offered")]
    for step in (client.accept, client.enroute, client.arrive, client.resolve):
        await step(offer.assignment)
    shown = (await api.http.get("/api/v1/map", headers=auth("wall"))).json()
    assert shown["requests"] == [] and shown["squads"][0]["busy"] is False
    await client.close()
    await api.close()


async def test_search_widens_past_busy_near_squads(hubs):
    hub = hubs.start(search_count=2)  # examine 2 positions first, as 256 in a large fleet
    api = Api(hub)
    near = [
        await online_squad(api, hub, XIGONG[0], XIGONG[1] + i * 0.001, name=f"n{i}")
        for i in range(4)
    ]
    far = await online_squad(api, hub, XIGONG[0] + 0.05, XIGONG[1], name="far")
    for _ in near:  # every near squad gets busy
        assert (await api.request(*XIGONG))["state"] == "offered"
    created = await api.request(*XIGONG)
    assert created["squad"] == far.squad
    for client in (*near, far):
        await client.close()
    await api.close()


async def test_every_event_reaches_the_ledger_and_can_be_queried(hubs):
    from tests.helpers import auth

    hub = hubs.start()
    api = Api(hub)
    client = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG)
    police = await api.request(*XIGONG, category="police")
    offer = await client.next_frame(protocol.Offer)
    for step in (client.accept, client.enroute, client.arrive):
        await step(offer.assignment)
    await client.resolve(offer.assignment, note="fixed")
    center = auth("center")

    async def recorded() -> list:
        response = await api.http.get(
            "/api/v1/ledger/requests", headers=center, params={"unit": "water", "state": "resolved"}
        )
        return response.json()

    rows = await eventually(recorded)
    assert [r["id"] for r in rows] == [created["id"]]
    assert rows[0]["category"] == "water_main_burst" and rows[0]["resolved_at"]
    events = (
        await api.http.get(f"/api/v1/ledger/requests/{created['id']}/events", headers=center)
    ).json()
    # The request's own events (the messages to the caller are recorded beside them).
    assert [e["type"] for e in events if not e["type"].startswith("citizen_message_")] == [
        "received",
        "queued",
        "offered",
        "accepted",
        "en_route",
        "arrived",
        "resolved",
    ]
    csv = (await api.http.get("/api/v1/ledger/export.csv", headers=center)).text
    lines = csv.removeprefix("\ufeff").strip().splitlines()
    assert lines[0].startswith("id,") and len(lines) == 3  # header, water, police
    assert any(line.startswith(police["id"]) for line in lines)
    bad = await api.http.get("/api/v1/ledger/requests", headers=center, params={"limit": "0"})
    assert bad.status_code == 422 and "limit" in bad.json()["error"]["fields"]
    assert (
        await api.http.get("/api/v1/ledger/requests", headers=auth("calltaker"))
    ).status_code == 403
    await client.close()
    await api.close()


async def test_a_waiting_request_goes_to_a_squad_as_soon_as_it_is_back_on_the_map(hubs):
    hub = hubs.start(queue_sweep_s=3600)  # no sweep: only the squad's return can move it
    api = Api(hub)
    first = await online_squad(api, hub, *XIGONG)
    await first.close()  # offline: off the map
    created = await api.request(*XIGONG)
    assert created["state"] == "queued"
    again = FieldClient(hub.ws, first.squad, first.token, reconnect=False)
    await again.start()  # still on duty, but no position yet
    await again.pos(*XIGONG)
    offer = await again.next_frame(protocol.Offer, timeout_s=5)
    assert offer.request.id == created["id"]
    await again.close()
    await api.close()


async def test_a_squad_that_leaves_right_after_a_fix_is_not_put_back_on_the_map(hubs):
    """Its last fix waits for the next flush; the disconnect is recorded first, and a flush
    after it must not place an offline squad on the map again (found by an attacker's trial:
    most squads that closed right after a fix stayed on the wall map for good)."""
    from tests.helpers import auth

    hub = hubs.start(position_flush_ms=400)  # the fix surely still waits at the close
    api = Api(hub)
    client = await online_squad(api, hub, *XIGONG)
    await client.pos(XIGONG[0] + 0.001, XIGONG[1])
    await client.close()

    async def offline() -> bool:
        return (await api.get_squad(client.squad))["online"] is False

    await eventually(offline)
    await asyncio.sleep(1.0)  # past the flush that held the last fix
    squad = await api.get_squad(client.squad)
    shown = (await api.http.get("/api/v1/map", headers=auth("wall"))).json()
    assert squad["position"] is None and shown["squads"] == []
    await api.close()
