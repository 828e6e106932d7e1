"""Redis round trips of a request's whole lifecycle (intake, and the squad's accept, en route,
arrive, resolve with their acknowledgements), counted by the hub's own connections.

The SPEC's budget is 7. Measured 7 here (2026-11-30): the request number 2 (the first block
of the day on a fresh Redis: the counter is missing, so the ledger is asked; later intakes
take their numbers from the process's block, one round trip per 50), the create with the
first offer 1 (one pipeline), accept, en route, arrive, resolve 1 each (the offer's ack
rides on the accept). In the steady state a lifecycle is 5."""

from __future__ import annotations

import asyncio
import time

from dispatch_field import protocol
from dispatch_field.client import FieldClient
from server.store import keys
from server.store.text import text
from tests.conftest import is_cluster_url, redis_client
from tests.helpers import XIGONG, Api, auth, eventually, online_squad

CEILING = 7  # measured 7 on 2026-11-30 (31 before issue 9)
QUIET = {  # background loops slowed down, so that they do not blur the count
    "queue_sweep_s": 3600,
    "hub_beat_s": 600,
    "hub_dead_after_s": 3000,
    "timer_poll_ms": 600_000,
    "offline_after_s": 3000,
    "webpush_reload_s": 3600,
    "metrics_sample_s": 3600,
}


async def _count(api: Api) -> int:
    """The hub's round trips so far (the health read itself adds one: its PING)."""
    health = await api.http.get("/api/v1/health", headers=auth("admin"))
    return int(health.json()["redis_round_trips"])


async def test_a_lifecycle_stays_within_its_round_trip_ceiling(hubs) -> None:
    hub = hubs.start(**QUIET)
    api = Api(hub)
    phone = await online_squad(api, hub, *XIGONG)

    async def count() -> int:
        return await _count(api)

    await asyncio.sleep(1.0)
    before = await count()
    started = time.monotonic()
    await api.request(*XIGONG)
    offer = await phone.next_frame(protocol.Offer)
    for step in (phone.accept, phone.enroute, phone.arrive):
        await step(offer.assignment)
    await phone.resolve(offer.assignment, "fixed")
    took = time.monotonic() - started
    spent = await count() - before - 1  # less the PING of the health read itself
    assert spent > 5, spent  # the counter counts
    # On a cluster the request -> unit index is written before the request, alone (its slot
    # is another node's, and a pipeline's nodes are written in parallel): one more.
    ceiling = CEILING + (1 if is_cluster_url(hubs.redis_url) else 0)
    assert spent <= ceiling + took * 3, (spent, took)  # ~2 idle round trips a second
    await phone.close()
    await api.close()


async def test_a_phone_that_drops_and_says_hello_again_costs_one_round_trip_each_way(
    hubs,
) -> None:
    """The reconnect storm's unit of work: a drop is recorded (offline, out of dispatch, its
    offline timers started, off the hub's list) in one round trip, and a hello again (the
    token checked, online, the outbox's frames and the squad's jobs read) in one, once the
    hub knows the squad's unit. Before: 3 and 6."""
    hub = hubs.start(**QUIET)
    api = Api(hub)
    created = await api.squad("water", "storm")
    squad, token = created["id"], created["token"]
    redis = redis_client(hubs.redis_url)  # the test's own reads: not the hub's count
    # On a cluster the hub's list of its squads lives on another node than the squad: its
    # command is sent alongside, in parallel, and counted as one more.
    ceiling = 2 if is_cluster_url(hubs.redis_url) else 1
    phone = FieldClient(hub.ws, squad, token, reconnect=False)
    await phone.start()  # the first hello: the hub learns the squad's unit
    try:

        async def online() -> bool:
            return await redis.hget(keys.squad("water", squad), "online") == b"1"

        async def offline() -> bool:
            return await redis.hget(keys.squad("water", squad), "online") == b"0"

        await eventually(online)
        await asyncio.sleep(0.5)
        before, started = await _count(api), time.monotonic()
        await phone.close()
        await eventually(offline)
        timers = await redis.zrange(keys.timers("water"), 0, -1)
        assert {text(t) for t in timers} == {f"offline:{squad}", f"alert:{squad}"}
        dropped = await _count(api) - before - 1
        took = time.monotonic() - started
        assert 1 <= dropped <= ceiling + took * 3, (dropped, took)

        before, started = await _count(api), time.monotonic()
        again = FieldClient(hub.ws, squad, token, reconnect=False)
        await again.start()
        await eventually(online)
        resumed = await _count(api) - before - 1
        took = time.monotonic() - started
        assert 1 <= resumed <= ceiling + took * 3, (resumed, took)
        await again.close()
    finally:
        await phone.close()
        await redis.aclose()
        await api.close()
