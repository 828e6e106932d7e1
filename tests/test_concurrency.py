"""Concurrent dispatch from several processes never assigns a squad beyond its capacity."""

from __future__ import annotations

import asyncio
import random

from dispatch_field import protocol
from server.store import keys
from tests.helpers import XIGONG, Api, eventually, online_squad


async def test_200_concurrent_requests_from_two_processes_never_over_assign(hubs, redis):
    a, b = hubs.start(), hubs.start()
    apis = [Api(a), Api(b)]
    rng = random.Random(3)
    squads = []
    for i in range(30):
        hub, api = ((a, apis[0]), (b, apis[1]))[i % 2]
        spot = (XIGONG[0] + rng.uniform(-0.02, 0.02), XIGONG[1] + rng.uniform(-0.02, 0.02))
        squads.append(
            await online_squad(api, hub, *spot, name=f"w{i}", capacity=2 if i < 10 else 1)
        )
    capacity = {s.squad: (2 if i < 10 else 1) for i, s in enumerate(squads)}

    async def post(i: int) -> dict:
        spot = (XIGONG[0] + rng.uniform(-0.02, 0.02), XIGONG[1] + rng.uniform(-0.02, 0.02))
        return await apis[i % 2].request(*spot)

    created = await asyncio.gather(*(post(i) for i in range(200)))
    # The hub's own record (a background queue sweep may have offered a request after its
    # intake answered "queued", so the answers alone are not the invariant).
    states = [(await redis.hget(keys.request("water", c["id"]), "state")).decode() for c in created]
    assert states.count("offered") == sum(capacity.values()) == 40
    assert states.count("queued") == 160

    for squad in squads:  # the hub's own records
        jobs = await redis.scard(keys.jobs("water", squad.squad))
        free = int(await redis.hget(keys.free("water"), squad.squad))
        assert jobs == capacity[squad.squad] and free == 0, (squad.squad, jobs, free)

    async def all_offers_arrived() -> bool:  # and what the phones received
        return sum(s.last_seq for s in squads) == 40

    await eventually(all_offers_arrived)
    offered_to = {}
    for c in created:
        request = await redis.hgetall(keys.request("water", c["id"]))
        if request[b"state"] == b"offered":
            offered_to[request[b"assignment"].decode()] = request[b"squad"].decode()
    for squad in squads:
        offers = []
        while not squad.frames.empty():
            frame = squad.frames.get_nowait()
            if isinstance(frame, protocol.Offer):
                offers.append(frame)
        assert len(offers) == capacity[squad.squad]
        assert all(offered_to[o.assignment] == squad.squad for o in offers)
        assert squad.duplicates == 0
    for squad in squads:
        await squad.close()
    for api in apis:
        await api.close()
