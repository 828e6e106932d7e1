"""What a Redis Cluster failover costs the hub: requests lost, the gap, and WAIT's price.

    python -m tools.failover_bench [--wait 0|1] [--concurrency 16] [--before 4] [--after 8]

Starts a cluster of three masters with a replica each (:class:`EmbeddedCluster`, node timeout
1 s) and one hub on it (``DISPATCH_REDIS_WAIT_REPLICAS=--wait``), posts intakes from
``--concurrency`` callers in a closed loop, SIGKILLs the master of the ``water`` unit's slot
after ``--before`` s, goes on for ``--after`` s, starts the old master again (it rejoins as a
replica), and then reads back every request the hub answered 201: a request missing is a
write the old master acknowledged but had not passed to its replica (asynchronous
replication). Prints JSON: answered, lost, intake latency before the kill (p50/p99 ms: the
cost of WAIT), the longest stretch without an answer (the failover as the desk sees it) and
the answers that were errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from server.launch import spawn_hub
from server.store import keys
from server.store.embedded_cluster import EmbeddedCluster

SCENE = (34.670, 112.445)  # Xigong district: the water unit


async def measure(wait: int, concurrency: int, before_s: float, after_s: float) -> dict:
    tokens = {"admin": secrets.token_urlsafe(12), "calltaker": secrets.token_urlsafe(12)}
    tokens["center"] = secrets.token_urlsafe(12)
    with tempfile.TemporaryDirectory(prefix="failover-") as name:
        tmp = Path(name)
        cluster = EmbeddedCluster(tmp / "cluster", node_timeout_ms=1000).start()
        hub = spawn_hub(
            cluster.url,
            tokens,
            tmp / "hub",
            {"redis_wait_replicas": wait, "redis_wait_timeout_ms": 1000, "ledger_in_hub": 0},
            log_path=tmp / "hub.log",
        )
        try:
            return await _load(cluster, hub.http, tokens, concurrency, before_s, after_s)
        finally:
            hub.stop()
            cluster.stop()


async def _load(
    cluster: EmbeddedCluster,
    base: str,
    tokens: dict[str, str],
    concurrency: int,
    before_s: float,
    after_s: float,
) -> dict:
    answered: list[tuple[float, float, str]] = []  # (sent, latency s, id)
    errors: list[str] = []
    stop = asyncio.Event()
    body = {
        "caller_phone": "13800000000",
        "category": "water_main_burst",
        "description": "failover test",
        "lat": SCENE[0],
        "lon": SCENE[1],
    }
    async with httpx.AsyncClient(base_url=base, timeout=15) as http:
        calltaker = {"Authorization": f"Bearer {tokens['calltaker']}"}

        async def caller() -> None:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    response = await http.post("/api/v1/requests", headers=calltaker, json=body)
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
                    continue
                if response.status_code == 201:
                    answered.append((sent, time.monotonic() - sent, response.json()["id"]))
                else:
                    errors.append(str(response.status_code))

        callers = [asyncio.create_task(caller()) for _ in range(concurrency)]
        await asyncio.sleep(before_s)
        victim = cluster.master_of(keys.events("water"))
        killed_at = time.monotonic()
        victim.stop(kill=True)
        await asyncio.sleep(after_s)
        stop.set()
        await asyncio.gather(*callers)
        await asyncio.to_thread(cluster.restart, victim)
        await asyncio.to_thread(cluster.wait_healthy)
        center = {"Authorization": f"Bearer {tokens['center']}"}
        lost = []
        for _, _, request_id in answered:
            response = await http.get(f"/api/v1/requests/{request_id}", headers=center)
            if response.status_code == 404:
                lost.append(request_id)
    steady = sorted(lat * 1000 for sent, lat, _ in answered if sent + lat < killed_at - 0.5)
    ends = sorted(sent + lat for sent, lat, _ in answered)
    gap = max((b - a for a, b in zip(ends, ends[1:], strict=False)), default=0.0)
    return {
        "answered": len(answered),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "errors": {e: errors.count(e) for e in set(errors)},
        "steady_intake_ms": {
            "n": len(steady),
            "p50": round(statistics.median(steady), 2) if steady else None,
            "p99": round(steady[int(0.99 * (len(steady) - 1))], 2) if steady else None,
        },
        "steady_per_s": round(len(steady) / max(0.1, before_s - 0.5), 1),
        "longest_gap_s": round(gap, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.failover_bench")
    parser.add_argument("--wait", type=int, default=0, help="DISPATCH_REDIS_WAIT_REPLICAS")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--before", type=float, default=4.0)
    parser.add_argument("--after", type=float, default=8.0)
    args = parser.parse_args()
    report = asyncio.run(measure(args.wait, args.concurrency, args.before, args.after))
    print(json.dumps({"wait_replicas": args.wait, **report}, indent=2))


if __name__ == "__main__":
    main()
