"""Never lose a push: resume, resync, offline squads, a killed hub, a restarted Redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from dispatch_field import protocol
from dispatch_field.client import FieldClient
from server.store.embedded import EmbeddedRedis
from tests.conftest import Hubs
from tests.helpers import XIGONG, Api, auth, eventually, online_squad


async def test_drop_mid_offer_then_resume_loses_and_doubles_nothing(hubs):
    hub = hubs.start(offer_window_s=0.6, timer_poll_ms=50)
    api = Api(hub)
    phone = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG)
    first = await phone.next_frame(protocol.Offer)
    await eventually(lambda: _acked(api, phone.squad, 1))
    await phone.drop()  # into a tunnel, holding an unanswered offer
    await asyncio.sleep(1.2)  # the offer window passes while it is away
    again = FieldClient(hub.ws, phone.squad, phone.token, reconnect=False)
    again.last_seq = phone.last_seq  # what the phone remembered
    await again.start()
    revoke = await again.next_frame(protocol.Revoke)
    assert (revoke.seq, revoke.assignment) == (2, first.assignment)
    await again.pos(*XIGONG)  # back in service: the waiting request comes back to it
    offer = await again.next_frame(protocol.Offer, timeout_s=5)
    assert (offer.seq, offer.request.id) == (3, created["id"])
    await again.accept(offer.assignment)
    assert again.duplicates == 0
    detail = await api.get_request(created["id"])
    assert [e["type"] for e in detail["timeline"]].count("offered") == 2
    assert detail["state"] == "accepted"
    await again.close()
    await phone.close()
    await api.close()


async def _acked(api: Api, squad: str, seq: int) -> bool:
    return (await api.get_squad(squad))["acked_seq"] >= seq


async def test_a_phone_that_never_acked_gets_the_frame_again(hubs):
    hub = hubs.start()
    api = Api(hub)
    created = await api.squad("water", "quiet")
    phone = FieldClient(hub.ws, created["id"], created["token"], reconnect=False, auto_ack=False)
    await phone.start()
    await phone.duty(True)
    await phone.pos(*XIGONG)
    await eventually(lambda: _ready(api, created["id"]))
    request = await api.request(*XIGONG)
    offer = await phone.next_frame(protocol.Offer)
    await phone.close()  # it crashed before storing or acknowledging anything
    again = FieldClient(hub.ws, created["id"], created["token"], reconnect=False)
    await again.start()
    replayed = await again.next_frame(protocol.Offer)
    assert (replayed.seq, replayed.assignment, replayed.request.id) == (
        offer.seq,
        offer.assignment,
        request["id"],
    )
    await eventually(lambda: _acked(api, created["id"], offer.seq))
    await again.close()
    third = FieldClient(hub.ws, created["id"], created["token"], reconnect=False)
    third.last_seq = again.last_seq  # the same phone, which kept what it saw
    await third.start()  # acknowledged now: nothing is sent again
    await asyncio.sleep(0.3)
    assert [type(f) for f in list(third.frames._queue)] == [protocol.Welcome]  # type: ignore[attr-defined]
    await third.close()
    await api.close()


async def _ready(api: Api, squad: str) -> bool:
    seen = await api.get_squad(squad)
    return bool(seen["online"] and seen["on_duty"] and seen["position"])


async def test_a_gap_beyond_retention_gets_a_resync_with_the_current_work(hubs):
    hub = hubs.start(outbox_max_frames=2, offer_window_s=0.4, timer_poll_ms=50)
    api = Api(hub)
    phone = await online_squad(api, hub, *XIGONG, capacity=2)
    phone.auto_ack = False
    first = await api.request(*XIGONG)
    offer = await phone.next_frame(protocol.Offer)
    await phone.accept(offer.assignment)  # accepted work it must keep hearing about
    await api.request(*XIGONG)  # a second offer: expires, revoked, offered again, ...
    await asyncio.sleep(1.5)  # ... more frames than the outbox keeps
    await phone.close()
    back = FieldClient(hub.ws, phone.squad, phone.token, reconnect=False)
    back.last_seq = 1  # it only ever processed the first offer
    await back.start()
    resync = await back.next_frame(protocol.Resync)
    assert resync.reason == "outbox_trimmed" and resync.last_seq >= 4
    states = {a.request.id: a.state for a in resync.assignments}
    assert states[first["id"]] == "accepted"
    assert back.last_seq >= resync.last_seq
    await back.close()
    await api.close()


async def test_a_new_phone_in_place_of_a_lost_one_is_sent_the_work_its_squad_holds(hubs):
    """A new user's trial: the squad's lost phone had acknowledged its offer (gone from the
    outbox), so its new phone, saying hello with last_seq 0, was told of no work, and the
    squad could not go on with the request it held. It gets a resync with its work."""
    hub = hubs.start()
    api = Api(hub)
    lost = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG)
    offer = await lost.next_frame(protocol.Offer)
    await lost.accept(offer.assignment)
    await eventually(lambda: _acked(api, lost.squad, offer.seq))
    await lost.close()
    new_phone = FieldClient(hub.ws, lost.squad, lost.token, reconnect=False)  # last_seq 0
    await new_phone.start()
    resync = await new_phone.next_frame(protocol.Resync)
    assert resync.reason == "phone_behind" and resync.last_seq >= offer.seq
    [held] = resync.assignments
    assert (held.assignment, held.state, held.request.id) == (
        offer.assignment,
        "accepted",
        created["id"],
    )
    await new_phone.enroute(offer.assignment)  # and it goes on with it
    assert (await api.get_request(created["id"]))["state"] == "en_route"
    await new_phone.close()
    await api.close()


async def test_a_silent_phone_goes_offline_and_its_offer_moves_on(hubs):
    hub = hubs.start(offline_after_s=1.0, timer_poll_ms=50, offer_window_s=60)
    api = Api(hub)
    silent = await online_squad(api, hub, XIGONG[0], XIGONG[1] + 0.001, name="silent")
    other = await online_squad(api, hub, XIGONG[0], XIGONG[1] + 0.02, name="other")
    created = await api.request(*XIGONG)
    assert created["squad"] == silent.squad
    # `other` keeps talking; `silent` says nothing more (its socket stays open).
    keep_talking = asyncio.create_task(_chatter(other))
    offer = await other.next_frame(protocol.Offer, timeout_s=10)
    assert offer.request.id == created["id"]
    detail = await api.get_request(created["id"])
    expired = [e for e in detail["timeline"] if e["type"] == "offer_expired"]
    assert expired and expired[0]["reason"] == "squad_offline"
    assert not (await api.get_squad(silent.squad))["online"]
    keep_talking.cancel()
    await silent.close()
    await other.close()
    await api.close()


async def _chatter(client: FieldClient) -> None:
    while True:
        await client.pos(XIGONG[0], XIGONG[1] + 0.02)
        await asyncio.sleep(0.2)


async def test_kill_9_of_a_hub_with_100_squads_loses_no_offer(hubs):
    options = dict(offer_window_s=30, hub_beat_s=0.5, hub_dead_after_s=2, timer_poll_ms=100)
    a, b = hubs.start(**options), hubs.start(**options)
    api_a, api_b = Api(a), Api(b)
    phones: list[FieldClient] = []
    offers: dict[str, list[str]] = {}
    for i in range(100):
        spot = (XIGONG[0] + (i % 10) * 0.002, XIGONG[1] + (i // 10) * 0.002)
        created = await api_a.squad("water", f"w{i}")
        phone = FieldClient([a.ws, b.ws], created["id"], created["token"], backoff_s=(0.1, 1.0))
        phone.on_frame = _worker(phone, spot, offers)
        await phone.start()
        phones.append(phone)
    await eventually(lambda: _all_ready(api_a, phones), timeout_s=20)
    requests = await asyncio.gather(
        *(
            api_b.request(XIGONG[0] + (i % 10) * 0.002, XIGONG[1] + (i // 10) * 0.002)
            for i in range(100)
        )
    )
    a.kill()  # offers in flight, squads mid-accept

    async def all_accepted() -> bool:
        details = await asyncio.gather(*(api_b.get_request(r["id"]) for r in requests))
        return all(d["state"] == "accepted" for d in details)

    await eventually(all_accepted, timeout_s=30, interval_s=0.3)
    assert all(p.welcomes >= 2 for p in phones)  # every squad came back, on B
    assert all(len(ids) == len(set(ids)) for ids in offers.values())  # none doubled
    for request in requests:  # each accepted offer reached the squad that accepted it
        detail = await api_b.get_request(request["id"])
        assert detail["assignment"] in offers.get(detail["squad"], [])
    for phone in phones:
        await phone.close()
    await api_a.close()
    await api_b.close()


def _worker(phone: FieldClient, spot: tuple[float, float], offers: dict[str, list[str]]):
    """A squad that goes on duty at ``spot`` on every (re)connection and accepts offers."""

    async def on_frame(frame: protocol.HubFrame) -> None:
        if isinstance(frame, protocol.Welcome):
            await phone.duty(True)
            await phone.pos(*spot)
        elif isinstance(frame, protocol.Offer):
            offers.setdefault(phone.squad, []).append(frame.assignment)
            asyncio.ensure_future(phone.accept(frame.assignment))

    return on_frame


async def _all_ready(api: Api, phones: list[FieldClient]) -> bool:
    seen = await asyncio.gather(*(api.get_squad(p.squad) for p in phones))
    return all(s["online"] and s["on_duty"] and s["position"] for s in seen)


@pytest.mark.system
async def test_redis_restart_under_load_loses_nothing_acknowledged(tmp_path: Path):
    redis_dir = tmp_path / "redis"
    redis = EmbeddedRedis(redis_dir).start()  # its own Redis: this test restarts it
    hubs = Hubs(redis.url, tmp_path)
    try:
        hub = hubs.start(timer_poll_ms=50)
        api = Api(hub)
        confirmed: list[tuple[str, str]] = []  # (request id, step) the hub said ok to
        phones = [
            await online_squad(api, hub, XIGONG[0] + i * 0.003, XIGONG[1], capacity=3)
            for i in range(6)
        ]
        workers = [asyncio.create_task(_work(phone, confirmed)) for phone in phones]
        acknowledged: list[str] = []
        statuses: list[int] = []
        servers = [redis]

        async def restart() -> None:
            await asyncio.sleep(1.5)
            await asyncio.to_thread(servers[0].stop)  # SIGTERM: Redis writes its AOF, exits
            # Longer than the hub's retries of one command (about 2 s), which absorb a
            # shorter outage: a request must be refused with a 503 meanwhile.
            await asyncio.sleep(3.5)
            again = EmbeddedRedis(redis_dir, port=servers[0].port)
            servers[0] = await asyncio.to_thread(again.start)

        restarting = asyncio.create_task(restart())
        started = time.monotonic()
        while time.monotonic() - started < 8:
            status, request_id = await _post(api.http)
            statuses.append(status)
            if request_id:
                acknowledged.append(request_id)
            await asyncio.sleep(0.05)
        await restarting
        redis = servers[0]
        assert set(statuses) <= {201, 503}, statuses  # refused clearly, never a 500
        assert 503 in statuses and len(acknowledged) > 20
        await asyncio.sleep(1.0)
        for request_id in acknowledged:  # every acknowledged request survived ...
            detail = await api.get_request(request_id)
            assert detail["timeline"][0]["type"] == "received"
        for request_id, step in confirmed:  # ... and every acknowledged step on it
            detail = await api.get_request(request_id)
            assert step in {e["type"] for e in detail["timeline"]}, (request_id, step)
        assert confirmed
        assert (await api.http.get("/api/v1/health")).status_code == 200
        for worker in workers:
            worker.cancel()
        for phone in phones:
            await phone.close()
        await api.close()
    finally:
        for started_hub in hubs.started:
            started_hub.stop()
        redis.stop()


async def _post(http: httpx.AsyncClient) -> tuple[int, str | None]:
    response = await http.post(
        "/api/v1/requests",
        headers=auth("calltaker"),
        json={
            "caller_phone": "13800000000",
            "category": "water_outage",
            "description": "no water",
            "lat": XIGONG[0],
            "lon": XIGONG[1],
        },
    )
    return response.status_code, response.json().get("id") if response.status_code == 201 else None


async def _work(phone: FieldClient, confirmed: list[tuple[str, str]]) -> None:
    """Accept and finish every offer; record each step the hub confirmed."""
    phone.reconnect = True
    while True:
        offer = await phone.next_frame(protocol.Offer, timeout_s=3600)
        for step, name in (
            (phone.accept, "accepted"),
            (phone.enroute, "en_route"),
            (phone.arrive, "arrived"),
            (phone.resolve, "resolved"),
        ):
            try:
                await step(offer.assignment)
            except Exception:  # noqa: BLE001 - not confirmed: not counted
                break
            confirmed.append((offer.request.id, name))


async def test_an_idle_reference_client_stays_online(hubs):
    hub = hubs.start(offline_after_s=1.0)
    api = Api(hub)
    created = await api.squad("water", "idle")
    phone = FieldClient(hub.ws, created["id"], created["token"], reconnect=False, keepalive_s=0.3)
    await phone.start()
    await asyncio.sleep(2.5)  # well past the offline time, sending nothing of its own
    assert phone.connected and phone.close_codes == []
    assert (await api.get_squad(created["id"]))["online"]
    await phone.close()
    await api.close()
