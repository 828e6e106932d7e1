"""Delivery figures (issue 3): resume rate, cross- vs same-process push latency, routing CPU.

    python -m tools.delivery_bench [--squads 300] [--resume 1000] [--out file.json]

* **push latency**: squads on hub A; requests through A (same process) and through B (the
  push crosses Redis to A); intake (HTTP sent) -> offer frame received, in the client.
* **resume**: N squads each holding one unacknowledged offer reconnect at once with
  ``last_seq=0``; squads per second back with their gap replayed.
* **routing CPU**: K = 1, 2, 3 hubs, squads spread over them, requests round-robin: CPU seconds
  per 1,000 pushes in each hub. Pushes are unicast to the owning process, so this should not
  grow with K.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from dispatch_field import protocol
from dispatch_field.client import FieldClient
from server.launch import HubProc, LocalCluster
from tools.loadtest.stats import summarize as summary

SCENE = (34.670, 112.445)
_rng = random.Random(11)


def _somewhere() -> dict[str, float]:
    """A scene inside the squads' grid, so work spreads over squads (and so over hubs)."""
    return {"lat": SCENE[0] + _rng.uniform(0, 0.02), "lon": SCENE[1] + _rng.uniform(0, 0.02)}


async def _post_request(
    http: httpx.AsyncClient, cluster: LocalCluster, hub: HubProc, where: dict[str, float]
) -> httpx.Response:
    """A citizen's request through ``hub``'s HTTP API, at ``where`` (lat, lon)."""
    return await http.post(
        f"{hub.http}/api/v1/requests",
        headers=cluster.headers("calltaker"),
        json={
            "caller_phone": "13800000000",
            "category": "water_outage",
            "description": "bench",
            **where,
        },
    )


async def _squads(
    cluster: LocalCluster,
    http: httpx.AsyncClient,
    count: int,
    hubs: Sequence[HubProc],
    *,
    auto_ack: bool = True,
) -> list[FieldClient]:
    phones = []
    for i in range(count):
        created = (
            await http.post(
                f"{hubs[0].http}/api/v1/squads",
                headers=cluster.headers("admin"),
                json={"unit": "water", "name": f"b{i}"},
            )
        ).json()
        hub = hubs[i % len(hubs)]
        phone = FieldClient(
            hub.ws, created["id"], created["token"], reconnect=False, auto_ack=auto_ack
        )
        phone.token = created["token"]
        await phone.start()
        await phone.duty(True)
        await phone.pos(SCENE[0] + (i % 20) * 0.001, SCENE[1] + (i // 20) * 0.001)
        phones.append(phone)
    await asyncio.sleep(0.5)  # positions flushed, squads available
    return phones


async def _dispatch_latency(
    cluster: LocalCluster,
    http: httpx.AsyncClient,
    phones: list[FieldClient],
    via: HubProc,
    count: int,
    rate: float,
) -> list[float]:
    """Post ``count`` requests through ``via``; intake -> offer frame received (ms)."""
    received: dict[str, float] = {}
    for phone in phones:
        phone.on_frame = _recorder(phone, received)
    sent: dict[str, float] = {}

    async def post() -> None:
        started = time.perf_counter()
        response = await _post_request(http, cluster, via, _somewhere())
        body = response.json()
        if body.get("assignment"):
            sent[body["assignment"]] = started

    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(post()))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.5)
    return [(received[a] - t) * 1000 for a, t in sent.items() if a in received]


def _recorder(phone: FieldClient, received: dict[str, float]):
    async def on_frame(frame: protocol.HubFrame) -> None:
        if isinstance(frame, protocol.Offer):
            received[frame.assignment] = time.perf_counter()
            asyncio.ensure_future(_finish(phone, frame.assignment))

    return on_frame


async def _finish(phone: FieldClient, assignment: str) -> None:
    for step in (phone.accept, phone.arrive, phone.resolve):
        await step(assignment)


async def push_latency(squads: int) -> dict[str, Any]:
    with LocalCluster(hubs_wanted=2) as cluster:
        a, b = cluster.hubs
        async with httpx.AsyncClient(timeout=30) as http:
            phones = await _squads(cluster, http, squads, [a])
            same = await _dispatch_latency(cluster, http, phones, a, 300, 50)
            cross = await _dispatch_latency(cluster, http, phones, b, 300, 50)
            for phone in phones:
                await phone.close()
    return {"same_process_ms": summary(same), "cross_process_ms": summary(cross)}


async def resume_rate(squads: int) -> dict[str, Any]:
    with LocalCluster(hubs_wanted=1, settings={"offer_window_s": 600}) as cluster:
        hub = cluster.hubs[0]
        async with httpx.AsyncClient(timeout=30) as http:
            phones = await _squads(cluster, http, squads, [hub], auto_ack=False)
            for _ in range(squads):  # one unacknowledged offer each
                await _post_request(http, cluster, hub, {"lat": SCENE[0], "lon": SCENE[1]})
            await asyncio.sleep(1.0)
            credentials = [(p.squad, p.token) for p in phones]
            for phone in phones:
                await phone.close()
            started = time.perf_counter()
            back = [
                FieldClient(hub.ws, squad, token, reconnect=False) for squad, token in credentials
            ]
            await asyncio.gather(*(p.start(timeout_s=60) for p in back))
            await asyncio.gather(*(p.next_frame(protocol.Offer, timeout_s=60) for p in back))
            elapsed = time.perf_counter() - started
            for phone in back:
                await phone.close()
    return {
        "squads": squads,
        "seconds": round(elapsed, 3),
        "squads_per_s": round(squads / elapsed, 1),
    }


async def routing_cpu(squads: int, pushes: int) -> list[dict[str, Any]]:
    rows = []
    for k in (1, 2, 3):
        with LocalCluster(hubs_wanted=k) as cluster:
            async with httpx.AsyncClient(timeout=30) as http:
                phones = await _squads(cluster, http, squads, cluster.hubs)
                received: dict[str, float] = {}
                for phone in phones:
                    phone.on_frame = _recorder(phone, received)
                before = [h.cpu_seconds() for h in cluster.hubs]
                for i in range(pushes):
                    hub = cluster.hubs[i % k]
                    await _post_request(http, cluster, hub, _somewhere())
                    await asyncio.sleep(0.01)
                await asyncio.sleep(1.0)
                used = [h.cpu_seconds() - b for h, b in zip(cluster.hubs, before, strict=True)]
                for phone in phones:
                    await phone.close()
        rows.append(
            {
                "hubs": k,
                "cpu_s_per_1000_requests_per_hub": [
                    round(u / (pushes / k) * 1000, 3) for u in used
                ],
            }
        )
    return rows


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--squads", type=int, default=200)
    parser.add_argument("--resume", type=int, default=500)
    parser.add_argument("--pushes", type=int, default=600)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    result = {
        "push_latency": await push_latency(args.squads),
        "resume": await resume_rate(args.resume),
        "routing_cpu": await routing_cpu(args.squads, args.pushes),
    }
    return result


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--out", default="")
    known, _ = parser.parse_known_args(argv)
    text = json.dumps(asyncio.run(main(argv)), indent=2)
    print(text)
    if known.out:
        Path(known.out).write_text(text + "\n")


if __name__ == "__main__":
    run()
