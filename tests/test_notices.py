"""Deadlines that act, on real hub processes: supervision notices fire once at the right time,
escalate, close, reach the squad across a reconnect, survive a hub killed mid-way; promises;
the supervision queue and notices API.

DISPATCH_TIME_SCALE makes the city's limits seconds: at 0.002 a gas leak (accept 120 s,
arrive 900 s, resolve 3600 s) must be accepted within 0.24 s, reached within 1.8 s and
resolved within 7.2 s; DISPATCH_NOTICE_ESCALATE_S=500 escalates every second.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from typing import Any

import pytest
from redis.asyncio import Redis

from dispatch_field import protocol
from dispatch_field.client import CommandRejected, FieldClient
from server.store import keys
from tests.conftest import redis_client
from tests.helpers import XIGONG, Api, auth, eventually, online_squad

FAST = {"time_scale": 0.002, "notice_escalate_s": 500, "timer_poll_ms": 50}
LATE_BY_AT_MOST_S = 1.0


async def _notices(api: Api, request_id: str) -> dict[str, dict[str, Any]]:
    response = await api.http.get(f"/api/v1/notices?request={request_id}", headers=auth("center"))
    assert response.status_code == 200, response.text
    return {n["id"]: n for n in response.json()}


async def _notice(api: Api, notice_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    request_id = notice_id.rsplit("-", 2)[0]

    async def issued() -> dict[str, Any] | None:
        return (await _notices(api, request_id)).get(notice_id)

    return await eventually(issued, timeout_s=timeout_s)


async def _issued_counts(api: Api, request_id: str) -> Counter[tuple[str, int]]:
    timeline = (await api.get_request(request_id))["timeline"]
    return Counter((e["notice_kind"], e["level"]) for e in timeline if e["type"] == "notice_issued")


def _on_time(notice: dict[str, Any], due: float, escalated_s: float = 0.0) -> None:
    """Issued not before its time (the deadline, plus the escalation for higher levels) and
    at most a second after."""
    assert notice["due_at"] == pytest.approx(due, abs=1e-3)
    at = due + escalated_s
    assert at <= notice["issued_at"] <= at + LATE_BY_AT_MOST_S, notice


async def _gas_request(api: Api) -> dict[str, Any]:
    created = await api.request(*XIGONG, category="gas_leak_smell")
    return await api.get_request(created["id"])


async def test_waiting_and_arrive_notices_fire_once_escalate_and_stop_at_the_top(hubs):
    hub = hubs.start(**FAST, notice_max_level=2)
    api = Api(hub)
    request = await _gas_request(api)  # no gas squad exists: it waits in the queue
    rid, due = request["id"], request["deadlines"]
    waiting = await _notice(api, f"{rid}-waiting-1")
    _on_time(waiting, due["accept_by"])
    assert (waiting["kind"], waiting["level"], waiting["state"], waiting["unit"]) == (
        "waiting",
        1,
        "open",
        "gas",
    )
    second = await _notice(api, f"{rid}-waiting-2")
    _on_time(second, due["accept_by"], escalated_s=1.0)
    _on_time(await _notice(api, f"{rid}-arrive-1"), due["arrive_by"])
    _on_time(await _notice(api, f"{rid}-arrive-2"), due["arrive_by"], escalated_s=1.0)
    await asyncio.sleep(1.5)  # a level 3 would be due by now: the top is 2
    assert await _issued_counts(api, rid) == Counter(
        {("waiting", 1): 1, ("waiting", 2): 1, ("arrive", 1): 1, ("arrive", 2): 1}
    )
    assert set(await _notices(api, rid)) == {
        f"{rid}-waiting-1",
        f"{rid}-waiting-2",
        f"{rid}-arrive-1",
        f"{rid}-arrive-2",
    }
    queue = (await api.http.get("/api/v1/center/queue", headers=auth("center"))).json()
    (item,) = queue["items"]
    assert item["id"] == rid and item["overdue"] is True
    assert item["next_deadline"] == {"kind": "accept", "at": due["accept_by"]}
    assert {n["id"] for n in item["notices"]} == set(await _notices(api, rid))
    await api.close()


async def test_notices_reach_the_squad_across_a_reconnect_and_close_when_met(hubs):
    hub = hubs.start(**FAST, notice_max_level=2)
    api = Api(hub)
    phone = await online_squad(api, hub, *XIGONG, unit="gas", name="gas-1")
    request = await _gas_request(api)
    rid, due = request["id"], request["deadlines"]
    offer = await phone.next_frame(protocol.Offer)
    # The offer carries what the squad needs: the deadlines and the caller's phone.
    assert offer.request.caller_phone == "13800000000"
    assert (offer.request.accept_by, offer.request.arrive_by, offer.request.resolve_by) == (
        due["accept_by"],
        due["arrive_by"],
        due["resolve_by"],
    )
    notice = await phone.next_frame(protocol.Notice, timeout_s=5)  # not accepted in 0.24 s
    assert (notice.notice.id, notice.notice.kind, notice.notice.squad) == (
        f"{rid}-accept-1",
        "accept",
        phone.squad,
    )
    assert due["accept_by"] <= notice.notice.issued_at <= due["accept_by"] + LATE_BY_AT_MOST_S
    await phone.accept(offer.assignment)
    accepted = await _notice(api, f"{rid}-accept-1")
    assert (accepted["state"], accepted["closed_by"]) == ("closed", "accepted")
    assert accepted["closed_at"] >= accepted["issued_at"]

    last_seq = phone.last_seq
    await phone.close()  # the phone goes into a tunnel before the arrival limit passes
    await _notice(api, f"{rid}-arrive-1")
    again = FieldClient(hub.ws, phone.squad, phone.token, reconnect=False)
    again.last_seq = last_seq
    await again.start()
    replayed = await again.next_frame(protocol.Notice)
    assert (replayed.notice.id, replayed.notice.kind) == (f"{rid}-arrive-1", "arrive")
    assert replayed.seq > last_seq
    await again.arrive(offer.assignment)

    async def arrive_closed() -> bool:
        listed = await _notices(api, rid)
        arrive = [n for n in listed.values() if n["kind"] == "arrive"]
        return bool(arrive) and all(n["closed_by"] == "arrived" for n in arrive)

    await eventually(arrive_closed)
    counts = await _issued_counts(api, rid)
    assert counts[("accept", 1)] == 1 and counts[("arrive", 1)] == 1
    assert max(counts.values()) == 1
    await again.close()
    await api.close()


async def test_accepted_within_the_limit_gets_no_accept_notice(hubs, redis_url):
    hub = hubs.start(time_scale=0.005, timer_poll_ms=50)  # water: accept within 1.5 s
    api = Api(hub)
    phone = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG)
    offer = await phone.next_frame(protocol.Offer)
    await phone.accept(offer.assignment)
    due = (await api.get_request(created["id"]))["deadlines"]
    await asyncio.sleep(max(0.0, due["accept_by"] - time.time()) + 1.0)
    assert await _notices(api, created["id"]) == {}
    redis = redis_client(redis_url)
    pending = {m.decode() for m in await redis.zrange(keys.timers("water"), 0, -1)}
    await redis.aclose()
    assert f"deadline:{created['id']}:accept" not in pending
    assert f"deadline:{created['id']}:arrive" in pending
    await phone.close()
    await api.close()


async def test_promises_kept_broken_past_the_cap_and_the_resolve_limit(hubs, redis_url):
    hub = hubs.start(**FAST)
    api = Api(hub)
    phone = await online_squad(api, hub, *XIGONG, unit="gas", name="gas-3", capacity=3)
    held = {}
    for name in ("broken", "kept", "late"):
        created = await api.request(*XIGONG, category="gas_leak_smell")
        offer = await phone.next_frame(protocol.Offer)
        await phone.accept(offer.assignment)
        await phone.arrive(offer.assignment)
        held[name] = (created["id"], offer.assignment)
    broken, kept = held["broken"], held["kept"]
    until = round(time.time() + 1.5, 3)
    await phone.defer(broken[1], until, "a part is on order")
    await phone.defer(kept[1], until, "a part is on order")
    await phone.resolve(kept[1], "fixed earlier than promised")

    promise = await _notice(api, f"{broken[0]}-promise-1")
    _on_time(promise, until)
    assert promise["kind"] == "promise"
    redis = redis_client(redis_url)
    pending = {m.decode() for m in await redis.zrange(keys.timers("gas"), 0, -1)}
    await redis.aclose()
    assert f"deadline:{broken[0]}:resolve" not in pending  # the promise replaced it

    # A promise past the category's cap (14 days, scaled: 2,419 s) changes nothing.
    before = await api.get_request(broken[0])
    with pytest.raises(CommandRejected) as refused:
        await phone.defer(broken[1], time.time() + 3000, "much later")
    assert refused.value.code == "invalid_time" and "promise cap" in refused.value.message
    after = await api.get_request(broken[0])
    assert (after["promised_by"], after["state"], len(after["timeline"])) == (
        before["promised_by"],
        "deferred",
        len(before["timeline"]),
    )

    late = await api.get_request(held["late"][0])
    resolve = await _notice(api, f"{held['late'][0]}-resolve-1", timeout_s=15)
    _on_time(resolve, late["deadlines"]["resolve_by"])
    await asyncio.sleep(max(0.0, until + 1.0 - time.time()))
    kept_notices = await _notices(api, kept[0])
    assert not [n for n in kept_notices.values() if n["kind"] in ("promise", "resolve")]
    await phone.resolve(broken[1], "done at last")
    closed = await _notice(api, f"{broken[0]}-promise-1")
    assert (closed["state"], closed["closed_by"]) == ("closed", "resolved")
    await phone.close()
    await api.close()


async def _leased_member(redis: Redis, lease_s: float) -> str | None:
    """A deadline or escalation timer some process has claimed and not finished (its score
    pushed a lease into the future, beyond any natural due time of this test)."""
    horizon = (time.time() + lease_s * 0.6) * 1000
    for raw in await redis.zrangebyscore(keys.timers("gas"), horizon, "+inf"):
        member = raw.decode()
        if member.startswith("escalate:") or member.endswith((":accept", ":arrive")):
            return member
    return None


async def test_each_notice_is_issued_once_when_a_hub_dies_holding_timers(hubs, redis_url):
    lease_s = 3.0
    settings = FAST | {"notice_max_level": 3, "timer_lease_s": lease_s}
    doomed, survivor = hubs.start(**settings), hubs.start(**settings)
    os.kill(survivor.process.pid, signal.SIGSTOP)  # only the doomed hub claims timers for now
    api = Api(doomed)
    redis = redis_client(redis_url)
    try:
        created = await asyncio.gather(
            *(api.request(*XIGONG, category="gas_leak_smell") for _ in range(60))
        )
        leased = await eventually(
            lambda: _leased_member(redis, lease_s), timeout_s=10, interval_s=0.001
        )
        doomed.kill()
    finally:
        os.kill(survivor.process.pid, signal.SIGCONT)
    assert leased is not None
    api = Api(survivor)
    ids = [c["id"] for c in created]
    expected = Counter({(kind, level): 1 for kind in ("waiting", "arrive") for level in (1, 2, 3)})

    async def all_issued() -> bool:
        for rid in ids:
            counts = await _issued_counts(api, rid)
            if any(counts[key] != 1 for key in expected):
                return False
        return True

    try:
        await eventually(all_issued, timeout_s=30, interval_s=0.5)
    except AssertionError:
        counts = {rid: await _issued_counts(api, rid) for rid in ids}
        raise AssertionError(f"leased {leased}; counts {counts}") from None
    await asyncio.sleep(lease_s)  # anything claimed twice would have fired again by now
    for rid in ids:
        counts = await _issued_counts(api, rid)  # (resolve limits pass meanwhile too)
        assert all(n == 1 for n in counts.values()) and expected <= counts, (rid, counts)
    await redis.aclose()
    await api.close()


async def test_queue_and_notices_api_order_restrict_and_validate(hubs):
    hub = hubs.start()  # real limits: nothing is overdue
    api = Api(hub)
    water = await api.request(*XIGONG)  # accept within 300 s
    gas = await api.request(*XIGONG, category="gas_leak_smell")  # within 120 s: nearer
    center = auth("center")
    queue = (await api.http.get("/api/v1/center/queue", headers=center)).json()["items"]
    assert [i["id"] for i in queue] == [gas["id"], water["id"]]
    assert [i["overdue"] for i in queue] == [False, False]
    assert [i["next_deadline"]["kind"] for i in queue] == ["accept", "accept"]
    only_water = (await api.http.get("/api/v1/center/queue?unit=water", headers=center)).json()
    assert [i["id"] for i in only_water["items"]] == [water["id"]]
    limited = (await api.http.get("/api/v1/center/queue?limit=1", headers=center)).json()
    assert [i["id"] for i in limited["items"]] == [gas["id"]]

    account = await api.http.post(
        "/api/v1/accounts",
        headers=auth("admin"),
        json={
            "username": "water-desk",
            "name": "Water desk",
            "role": "unit",
            "unit": "water",
            "password": "a-long-password-123",
        },
    )
    assert account.status_code == 201, account.text
    token = await api.http.post(
        "/api/v1/accounts/water-desk/tokens", headers=auth("admin"), json={"label": "test"}
    )
    desk = {"Authorization": f"Bearer {token.json()['token']}"}
    mine = (await api.http.get("/api/v1/center/queue", headers=desk)).json()
    assert [i["id"] for i in mine["items"]] == [water["id"]]
    for path in (
        "/api/v1/center/queue?unit=gas",
        f"/api/v1/notices?request={gas['id']}",
        "/api/v1/notices?unit=gas",
    ):
        response = await api.http.get(path, headers=desk)
        assert response.status_code == 403, (path, response.text)
    assert (await api.http.get("/api/v1/notices", headers=desk)).json() == []

    for path in ("/api/v1/center/queue", "/api/v1/notices"):
        response = await api.http.get(path, headers=auth("calltaker"))
        assert response.status_code == 403
    bad = {
        "/api/v1/center/queue?limit=0": "limit",
        "/api/v1/center/queue?limit=100000": "limit",
        "/api/v1/center/queue?unit=Not-A-Code": "unit",
        "/api/v1/center/queue?unit=nosuchunit": "unit",
        "/api/v1/notices?state=pending": "state",
        "/api/v1/notices?request=abc": "request",
        "/api/v1/notices?color=red": "color",
    }
    for path, field in bad.items():
        response = await api.http.get(path, headers=center)
        assert response.status_code == 422, (path, response.text)
        assert field in response.json()["error"]["fields"], (path, response.text)
    await api.close()
