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
from tests.conftest import is_cluster_url
from tests.helpers import XIGONG, Api, auth, online_squad

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


async def test_a_lifecycle_stays_within_its_round_trip_ceiling(hubs) -> None:
    hub = hubs.start(**QUIET)
    api = Api(hub)
    phone = await online_squad(api, hub, *XIGONG)

    async def count() -> int:
        health = await api.http.get("/api/v1/health", headers=auth("admin"))
        return int(health.json()["redis_round_trips"])

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
